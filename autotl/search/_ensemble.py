"""The search's best models together: a greedy ensemble of the kept trials, kept only when it beats the best one.

Each kept trial (``_trial_files``: the ``keep_models`` best complete trials) also keeps its
predicted probabilities on the validation split (``trials/<n>/val_probabilities.npy``).
At the end of the search the validation images are split in two stratified halves: greedy
ensemble selection with replacement (Caruana et al., ICML 2004) picks members and weights
on the first half, and the ensemble is written to ``RUN_DIR/ensemble_model/`` only when it
beats, on the second half, the trial that scores best on the first: on a small validation
split every trial can tie, and a selection judged on the images it was chosen on would
always look better. The ensemble takes the best kept trial's input; a member trained at
another size gets it resized in the graph (``export.Adapted``), and its probabilities are
computed again that way, so the selection judges the ensemble that is exported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import backbones, export
from ..records import EnsembleRecord, StudyRecord, TrialRecord
from ..space import TrialConfig
from ..train import TrialResult, prediction_score, read_facts, val_probabilities
from ..trials import study_metric
from ._retrain import kept_result
from ._trial_files import best_complete, model_file, probabilities_file

ROUNDS = 25  # greedy additions, with replacement
SPLIT_SEED = 0


def scored(probabilities: np.ndarray, labels: np.ndarray, metric: str = "accuracy") -> tuple[float, float]:
    """(the score by ``metric``, minus the mean log loss): higher is better; the loss breaks ties in the score."""
    value = prediction_score(labels, probabilities.argmax(1), metric)
    loss = float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, None)).mean())
    return value, -loss


def greedy_selection(candidates: list[np.ndarray], labels: np.ndarray, rounds: int = ROUNDS, metric: str = "accuracy"):
    """Caruana's greedy selection with replacement: each round adds the candidate whose addition scores best
    (``scored`` by ``metric``; ties go to the earlier candidate). Returns (counts per candidate at the best round,
    the score after each round)."""
    counts, total, curve, best = np.zeros(len(candidates), dtype=int), None, [], None
    for _ in range(rounds):
        trials = [
            (scored((c if total is None else total + c) / (counts.sum() + 1), labels, metric), i)
            for i, c in enumerate(candidates)
        ]
        score, chosen = max(trials, key=lambda t: (t[0], -t[1]))
        counts[chosen] += 1
        total = candidates[chosen].copy() if total is None else total + candidates[chosen]
        curve.append(score)
        if best is None or score > best[0]:
            best = (score, counts.copy())
    return best[1], curve


def halves(labels: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Two stratified halves of the validation rows: the selection's and the check's."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        first.append(rows[: (len(rows) + 1) // 2])
        second.append(rows[(len(rows) + 1) // 2 :])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def build_ensemble(study, run_dir: Path, data, keep: int, say=print) -> EnsembleRecord | None:
    """Select an ensemble of the kept trials and write it to ``run_dir/ensemble_model`` when it beats the best
    single model on the held-back half; the decision is stored in the study either way (None: too few kept)."""
    kept = [t for t in best_complete(study, study.get_trials(deepcopy=False), keep) if _has_files(run_dir, t)]
    if len(kept) < 2:
        say(f"no ensemble: {len(kept)} trial kept with its validation probabilities (--keep-models {keep})")
        return None
    facts = {t.number: read_facts(model_file(run_dir, t)) for t in kept}
    given = _preprocessing(facts[kept[0].number])
    labels = data.labels[data.indices("val")].astype(int)
    probabilities = [_probabilities(run_dir, t, facts[t.number], given, data) for t in kept]
    select, check, metric = *halves(labels), study_metric(study)
    counts, curve = greedy_selection([p[select] for p in probabilities], labels[select], metric=metric)
    members = [i for i in range(len(kept)) if counts[i]]
    weights = [float(counts[i] / counts.sum()) for i in members]
    single = max(range(len(kept)), key=lambda i: (scored(probabilities[i][select], labels[select], metric), -i))
    average = sum(w * probabilities[i] for w, i in zip(weights, members))
    latency = [TrialRecord.of(kept[i], "latency_ms").latency_ms for i in members]
    on = lambda p, rows: round(scored(p[rows], labels[rows], metric)[0], 4)  # noqa: E731
    every = np.arange(len(labels))
    record = EnsembleRecord(
        members=[kept[i].number for i in members],
        metric=metric,
        weights=[round(w, 4) for w in weights],
        selection_curve=[round(s[0], 4) for s in curve],
        selected_on=len(select),
        held_back=len(check),
        ensemble_held_back=on(average, check),
        single_held_back=on(probabilities[single], check),
        single_trial=kept[single].number,
        ensemble_val=on(average, every),
        latency_ms=round(sum(latency), 3) if None not in latency else None,
        single_latency_ms=TrialRecord.of(kept[single], "latency_ms").latency_ms,
    )
    record.written = len(members) > 1 and record.ensemble_held_back > record.single_held_back
    if record.written:
        results = [_kept(run_dir, kept[i], facts[kept[i].number]) for i in members]
        export.save_ensemble(
            results,
            weights,
            run_dir / "ensemble_model",
            dict(
                members=[dict(trial=kept[i].number) for i in members],
                dataset=data.spec,
                value=record.ensemble_val,
                metric=metric,
                latency_ms=record.latency_ms,
                selection=dataclasses.asdict(record),
            ),
            given=given,
        )
    StudyRecord(ensemble=record).write(study, "ensemble")
    return record


def ensemble_line(record: EnsembleRecord, folder: Path) -> str:
    """The CLI's last word on the ensemble: which is better, by how much on the held-back half, at what latency."""
    ensemble, single = record.ensemble_held_back, record.single_held_back
    members = ", ".join(f"#{t} x{w:.2f}" for t, w in zip(record.members, record.weights))
    latency = (
        f"; latency {record.latency_ms:.3g} ms an image against {record.single_latency_ms:.3g} ms"
        if record.latency_ms is not None and record.single_latency_ms is not None
        else ""
    )
    verdict = f"ensemble in {folder}" if record.written else "not written: it does not beat the best single model"
    return (
        f"ensemble of {len(record.members)} ({members}): {record.metric or 'accuracy'} {ensemble:.4f} against "
        f"{single:.4f} for trial "
        f"#{record.single_trial} alone on {record.held_back} held-back validation images{latency}; {verdict}"
    )


def _has_files(run_dir: Path, trial) -> bool:
    return model_file(run_dir, trial).is_file() and probabilities_file(run_dir, trial).is_file()


def _probabilities(run_dir: Path, trial, facts: dict, given, data) -> np.ndarray:
    """A kept trial's validation probabilities as the ensemble computes them: the saved ones when its input is the
    ensemble's, else again, on the ensemble's input resized in the graph."""
    own = _preprocessing(facts)
    if own == given:
        return np.load(probabilities_file(run_dir, trial))
    model = export.adapted(_kept(run_dir, trial, facts).model, own, given)
    return val_probabilities(model, given, data)


def _preprocessing(facts: dict):
    config = TrialConfig.from_dict(facts["config"])
    return backbones.preprocessing(config.backbone, config.resolution_scale)


def _kept(run_dir: Path, trial, facts: dict) -> TrialResult:
    """A kept trial's weights as a result to export, with its stored metrics."""
    return kept_result(model_file(run_dir, trial), TrialRecord.of(trial), facts=facts)
