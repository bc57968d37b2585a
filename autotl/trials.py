"""Which trial is best: the one rule that the search, the export and the report share.

A study optimizes a validation score (accuracy, macro-F1 or balanced accuracy: the user's
``--metric``), or the score and latency. The best trial is the highest-scoring complete
one, where trials within one validation image of each other tie
and the lower validation loss wins; then the better other objectives, then the earlier
trial. This module imports only ``autotl.records``, so every part of autotl can use the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from .records import METRICS, StudyRecord, TrialRecord


def objective_names(study: optuna.Study) -> list[str]:
    """One name per objective: the study's metric names (``study.set_metric_names``; older studies: their
    ``objectives`` attr) when they fit, else generic names.

    A two-objective study without names is taken to be the search's (accuracy, latency).
    """
    count = len(study.directions)
    for names in (study.metric_names, StudyRecord.of(study).objectives):
        if names and len(names) == count:
            return [str(name) for name in names]
    if count == 2:
        return ["accuracy", "latency"]
    return ["score"] if count == 1 else [f"objective {i + 1}" for i in range(count)]


def multi_objective(study: optuna.Study) -> bool:
    """True when the study optimizes several objectives (e.g. accuracy and latency)."""
    return len(study.directions) > 1


def score_index(study: optuna.Study) -> int:
    """Which objective value is the validation score (accuracy or the study's metric); 0 unless the names say."""
    names = objective_names(study)
    return next((i for i, name in enumerate(names) if name in METRICS), 0) if multi_objective(study) else 0


def study_metric(study: optuna.Study) -> str:
    """The metric the study scores its trials by (``--metric``): accuracy unless its objectives name another."""
    name = objective_names(study)[score_index(study)]
    return name if name in METRICS else "accuracy"


@dataclass(frozen=True)
class Standing:
    """What the best-trial rule compares: objective values, validation loss and size, and the trial's number."""

    values: tuple
    number: int
    loss: float | None = None  # mean validation cross-entropy
    val_images: int | None = None  # how many validation images the score counts

    @classmethod
    def of(cls, trial: FrozenTrial) -> Standing:
        record = TrialRecord.of(trial, "metrics", "val_images")
        loss = record.metrics.loss if record.metrics is not None else None
        return cls(tuple(trial.values or ()), trial.number, loss, record.val_images)


def best(standings, directions, scored: int = 0) -> Standing | None:
    """The best of ``standings``: among those within one validation image of the top score (objective
    ``scored``, the study's metric), the lowest validation loss; then the better other objectives; then
    the earlier trial.

    On a small validation set accuracy saturates (many trials at 1.000); the loss still
    tells which of them is more sure of its answers. ``directions`` are the study's
    ``StudyDirection`` per objective; missing or NaN values rank last.
    """
    standings = list(standings)
    if not standings:
        return None
    signs = [1.0 if d == optuna.study.StudyDirection.MAXIMIZE else -1.0 for d in directions]

    def placed(s: Standing, i: int) -> float:
        return _placed(signs[i], s.values[i] if i < len(s.values) else None)

    top = max(standings, key=lambda s: (placed(s, scored), -s.number))
    tolerance = 1.0 / top.val_images + 1e-9 if top.val_images else 0.0
    near = [s for s in standings if placed(s, scored) >= placed(top, scored) - tolerance]
    others = [i for i in range(len(signs)) if i != scored]
    return max(near, key=lambda s: (_placed(-1.0, s.loss), *(placed(s, i) for i in others), -s.number))


def _placed(sign: float, value) -> float:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return -math.inf
    return sign * float(value)


def best_trial(study: optuna.Study, trials=None) -> FrozenTrial | None:
    """The best complete trial of ``study`` (or of its ``trials``) by ``best``; None when none completed."""
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    complete = {t.number: t for t in trials if t.state == TrialState.COMPLETE and t.values}
    winner = best([Standing.of(t) for t in complete.values()], study.directions, score_index(study))
    return complete[winner.number] if winner is not None else None


def score(trial: FrozenTrial | None, study: optuna.Study | None = None) -> float | None:
    """A trial's validation score: its value, or its score objective in a multi-objective study."""
    if trial is None or not trial.values:
        return None
    index = score_index(study) if study is not None else 0
    return trial.values[index] if index < len(trial.values) else None
