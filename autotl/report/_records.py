"""Tables of what a study did, read from the study alone.

Everything the report shows is computed here first, as pandas DataFrames and dicts, so it
can be checked (and reused, e.g. in a notebook) without any drawing. The only input is an
``optuna.Study`` loaded from storage, read through its records (``TrialRecord.of`` per
trial, ``StudyRecord.of`` for the study), which give every stored value its declared type
or None, whatever a trial stored or an older version wrote. The tables take their dtypes
from declarations too: the records', ``TrialConfig``'s for a recipe's settings, and the
dataclasses below for the columns the report computes. Nothing here reads the clock or
the file system, so the same storage always gives the same records.
"""

from __future__ import annotations

import pathlib
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from .. import records
from ..records import BackboneScore, ClassScore, Metrics, Report, Slice, StudyRecord, TrialRecord, report_score
from ..space import FIELD_NAMES, TrialConfig
from ..space._config import SETTING_TYPES
from ..trials import best_trial, multi_objective, objective_names, score_index, study_metric


@dataclass
class TrialRow:
    """The columns the report adds to a trial's record: how it ended and its score."""

    number: int
    state: str  # complete, pruned, fail, running or waiting
    value: float | None  # the validation score by the study's metric (a pruned trial: its last report's)
    val_loss: float | None  # the kept weights' validation loss: it breaks near-ties between the best


@dataclass
class CurvePoint:
    """Which trial a point of a learning curve (a ``Report``) belongs to, and its score there."""

    trial: int
    state: str
    score: float | None  # the report's validation score by the study's metric: what the search optimized


@dataclass
class TimePoint:
    """A finished trial in the order they ended."""

    number: int
    state: str
    value: float | None
    elapsed_seconds: float  # from the earliest trial start to this trial's end, gaps between runs included
    best_so_far: float | None  # the best complete score at that moment


@dataclass
class StrategyRow:
    """One strategy: its trials by state, its best complete trial and what its trials cost."""

    strategy: str
    trials: int
    complete: int
    pruned: int
    failed: int
    best: float | None  # the validation score of its best complete trial
    best_trial: int | None
    median_train_seconds: float | None  # over every trial that recorded it: pruned trials cost time too
    train_seconds: float | None  # the total
    share_trained: float | None  # the median share of parameters trained


@dataclass
class BackboneRow:
    """One backbone: its trials, the scores of the complete ones and the mean seconds per trial."""

    backbone: str
    trials: int
    complete: int
    best: float | None
    median: float | None
    seconds_per_trial: float | None


@dataclass
class Searched:
    """What a ranked backbone then did in the search (the ranking's columns are ``BackboneScore``'s)."""

    trials: int
    complete: int
    best: float | None  # the best validation score of its complete trials


@dataclass
class ParetoPoint:
    """A complete trial of a score-latency study (its other columns are its record's)."""

    number: int
    score: float  # by the study's metric
    latency_ms: float
    on_front: bool  # no other trial both scores higher and is faster


def _names(kind) -> list[str]:
    return [f.name for f in fields(kind)]


# A trial's record, as a row: its plain fields (lists and nested records are left out).
RECORD_COLUMNS = list(records.dtypes(TrialRecord))
TRIAL_COLUMNS = _names(TrialRow) + RECORD_COLUMNS
CURVE_COLUMNS = _names(CurvePoint) + _names(Report)
CONFIG_COLUMNS = list(FIELD_NAMES)  # a stored recipe's settings: TrialConfig's fields
TIME_COLUMNS = _names(TimePoint)
STRATEGY_COLUMNS = _names(StrategyRow)
BACKBONE_COLUMNS = _names(BackboneRow)
RANKING_COLUMNS = ["rank", "backbone", "logme", "seconds", "dropped", *_names(Searched)]
PARETO_COLUMNS = ["number", "backbone", "score", "latency_ms", "on_front", "train_seconds", "model_mb", "warm_start"]
PER_CLASS_COLUMNS = _names(ClassScore)
THUMBNAIL_PREFIX = "data:image/png;base64,"
MAX_THUMBNAILS = 24
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# How the page names each metric a search can score its trials by (``records.METRICS``).
_METRIC_TITLES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy"}


def metric_title(metric: str | None) -> str:
    """A metric as the page names it: accuracy, macro-F1 or balanced accuracy (None: accuracy, as before
    ``--metric``)."""
    return _METRIC_TITLES.get(metric or "accuracy", str(metric))


def _frame(rows: list[dict], columns: list[str], *kinds) -> pd.DataFrame:
    """``records.frame`` typed by several declarations: the report's own columns and a record's fields."""
    table = records.frame(rows, kinds[0], columns)
    return table.astype({k: v for kind in kinds[1:] for k, v in records.dtypes(kind).items() if k in table})


def state_word(trial: FrozenTrial) -> str:
    """The trial's state as a lowercase word: complete, pruned, fail, running or waiting."""
    return trial.state.name.lower()


def trial_value(trial: FrozenTrial, index: int = 0) -> float | None:
    """The trial's objective value number ``index`` (the first by default), or None without a finite one.

    Pruned trials told without a value carry their last reported score. Reads
    ``trial.values``, never ``trial.value``, which raises in multi-objective studies.
    """
    if not trial.values or index >= len(trial.values):
        return None
    return records.load(float, trial.values[index])


def trial_records(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: ``TrialRow``'s columns, its record's plain fields, then its params (``param_<name>``).

    ``wall_seconds`` falls back to the trial's own datetimes, ``backbone`` to its recipe's
    or param (``trial_backbone``), and ``strategy`` is what trained, normalised
    (``trial_strategy``). Fields a trial did not store (e.g. the cost of an older
    search's trials) are blank.
    """
    rows, params = [], {}
    index = score_index(study)
    for trial in study.trials:
        record = TrialRecord.of(trial)
        row = {name: getattr(record, name) for name in RECORD_COLUMNS}
        row.update(
            number=trial.number,
            state=state_word(trial),
            value=trial_value(trial, index),
            val_loss=record.metrics.loss if record.metrics is not None else None,
            wall_seconds=record.wall_seconds if record.wall_seconds is not None else _times(trial)[2],
            backbone=trial_backbone(trial, record),
            strategy=trial_strategy(trial, record),
        )
        row.update({"param_" + name: value for name, value in trial.params.items()})
        params.update(dict.fromkeys(trial.params))
        rows.append(row)
    return _frame(rows, TRIAL_COLUMNS + ["param_" + name for name in params], TrialRecord, TrialRow)


def config_records(study: optuna.Study) -> pd.DataFrame:
    """One row per trial that stored its recipe: number, state, value, wall_seconds, then ``CONFIG_COLUMNS``.

    Unlike the Optuna params (``adamw.lr``), the recipe names every setting the same way in
    every trial, so it is what the "score against ..." plots and parallel coordinates use.
    The settings are typed as ``TrialConfig`` declares them and blank where they mean
    nothing for the trial's recipe (``recipe_settings``), so plots show only real choices;
    ``strategy`` is the normalised name (``trial_strategy``), so a recipe stored before
    strategies existed has one too.
    """
    trials = trial_records(study).set_index("number")
    rows = []
    for trial in study.trials:
        record = TrialRecord.of(trial)
        if record.config is None:
            continue
        outcome = {name: trials.at[trial.number, name] for name in ("state", "value", "wall_seconds")}
        settings = recipe_settings(record.config)
        rows.append({"number": trial.number, **outcome, **settings, "strategy": trial_strategy(trial, record)})
    columns = ["number", "state", "value", "wall_seconds", *CONFIG_COLUMNS]
    return _frame(rows, columns, TrialConfig, TrialRow, TrialRecord)


def recipe_settings(config: dict) -> dict[str, Any]:
    """A stored recipe's settings, None where they mean nothing for it (``TrialConfig.applicable``: a LoRA rank
    of a full fine-tune); a recipe this version does not accept, as stored. Typed as TrialConfig declares."""
    try:
        config = TrialConfig.from_dict(config).applicable()
    except (TypeError, ValueError):  # e.g. a name this version does not know
        pass
    return {name: records.load(kind, config.get(name)) for name, kind in SETTING_TYPES.items()}


def parallel_records(trials: pd.DataFrame, configs: pd.DataFrame) -> pd.DataFrame:
    """Complete trials with the settings worth an axis in parallel coordinates.

    Columns: number, value, then one column per setting. When every complete trial
    stored its recipe, the settings are the recipe's (``config_records``) that took more
    than one value; otherwise they are the sampled Optuna params. Empty when no trial
    completed.
    """
    complete = trials[(trials["state"] == "complete") & trials["value"].notna()]
    recipes = configs[configs["number"].isin(complete["number"])]
    if not complete.empty and len(recipes) == len(complete):
        frame = recipes
        columns = [c for c in CONFIG_COLUMNS if frame[c].nunique() > 1]
    else:
        params = [c for c in complete.columns if c.startswith("param_") and complete[c].notna().any()]
        columns = [c[len("param_") :] for c in params]
        # only the params, renamed: a param may share its name with a trial column (e.g. backbone)
        frame = complete[["number", "value"] + params].set_axis(["number", "value"] + columns, axis=1)
    return frame[["number", "value"] + columns].reset_index(drop=True)


def curve_records(study: optuna.Study) -> pd.DataFrame:
    """One row per (trial, report) from the trial's ``history``: ``CurvePoint``'s columns, then ``Report``'s.

    ``score`` is the report's score by the study's metric (``report_score``), so the curves
    show what the search optimized. A trial without history (e.g. written by an older
    trainer, or one that died before saving it) falls back to its reported intermediate
    values, which are that score per report; the other columns are then empty.
    """
    rows, metric = [], study_metric(study)
    for trial in study.trials:
        point = {"trial": trial.number, "state": state_word(trial)}
        history = TrialRecord.of(trial).history
        for number, report in enumerate(history, start=1):
            number = number if report.report is None else report.report
            rows.append({**asdict(report), **point, "report": number, "score": report_score(report, metric)})
        if not history:
            for step, value in sorted(trial.intermediate_values.items()):
                value = records.load(float, value)
                rows.append({**point, "report": step, f"val_{metric}": value, "score": value})
    frame = _frame(rows, CURVE_COLUMNS, Report, CurvePoint)
    return frame.sort_values(["trial", "report"], kind="stable").reset_index(drop=True)


@dataclass
class SliceRow:
    """One slice of a trial's training, as the scheduler gave it: who, what it trained, and its outcome."""

    trial: int
    state: str
    label: str | None  # the warm-start recipe, else the strategy
    start: float  # seconds since the search's first slice
    reached: float | None  # the trial's best validation score by the end (the prediction's actual)


SLICE_COLUMNS = _names(SliceRow) + _names(Slice)


def slice_records(study: optuna.Study) -> pd.DataFrame:
    """One row per slice the scheduler gave a trial, in the order they began; empty for a search without one."""
    rows, metric = [], study_metric(study)
    for trial in study.trials:
        record = TrialRecord.of(trial, "slices", "history", "warm_start", "strategy")
        scores = (report_score(r, metric) for r in record.history)
        reached = max((score for score in scores if score is not None), default=None)
        label = record.warm_start or trial_strategy(trial, record)
        for entry in record.slices:
            rows.append(dict(asdict(entry), trial=trial.number, state=state_word(trial), label=label, reached=reached))
    frame = _frame(rows, SLICE_COLUMNS, Slice, SliceRow)
    if frame.empty:
        return frame
    frame["start"] = frame["at"] - frame["at"].min()
    return frame.sort_values("at", kind="stable").reset_index(drop=True)


def time_records(study: optuna.Study) -> pd.DataFrame:
    """Finished trials in the order they ended (``TimePoint``), with the wall time since the first trial began.

    ``best_so_far`` is NaN before the first complete trial.
    """
    spans = {t.number: _times(t)[:2] for t in study.trials}
    origin = min((start for start, _ in spans.values() if start is not None), default=None)
    finished = study.get_trials(deepcopy=False, states=_FINISHED) if origin is not None else []
    ended = sorted(
        (t for t in finished if spans[t.number][1] is not None), key=lambda t: (spans[t.number][1], t.number)
    )
    minimize = direction_word(study) == "minimize"
    index = score_index(study)
    best, rows = None, []
    for trial in ended:
        value = trial_value(trial, index)
        if trial.state == TrialState.COMPLETE and value is not None:
            if best is None or (value < best if minimize else value > best):
                best = value
        elapsed = (spans[trial.number][1] - origin).total_seconds()
        rows.append(TimePoint(trial.number, state_word(trial), value, elapsed, best))
    return records.frame([asdict(row) for row in rows], TimePoint, TIME_COLUMNS)


def backbone_records(configs: pd.DataFrame) -> pd.DataFrame:
    """Per backbone (``BackboneRow``): trials tried, how many completed, best and median score, mean seconds.

    Scores are of complete trials only; seconds are over every trial that reports them.
    Sorted by best score, best first.
    """
    rows = []
    for backbone, group in configs[configs["backbone"].notna()].groupby("backbone", sort=True):
        done = group[group["state"] == "complete"]
        scores = done["value"].dropna()
        row = BackboneRow(
            str(backbone), len(group), len(done), scores.max(), scores.median(), group["wall_seconds"].mean()
        )
        rows.append(asdict(row))
    frame = records.frame(rows, BackboneRow, BACKBONE_COLUMNS)
    frame = frame.sort_values(["best", "backbone"], ascending=[False, True], na_position="last")
    return frame.reset_index(drop=True)


def strategy_records(study: optuna.Study) -> pd.DataFrame:
    """Per strategy that some trial used (``StrategyRow``): trials by state, best score, training cost and share
    of parameters trained.

    ``best`` and ``best_trial`` are of its best complete trial by ``autotl.trials.best_trial``
    (blank when none completed); ``share_trained`` is the median of
    ``params_trainable / params_total``. Best first.
    """
    groups: dict[str, list[tuple[FrozenTrial, TrialRecord]]] = {}
    for trial in study.trials:
        record = TrialRecord.of(trial)
        name = trial_strategy(trial, record)
        if name is not None:
            groups.setdefault(name, []).append((trial, record))
    index = score_index(study)
    rows = []
    for name, group in groups.items():
        winner = best_trial(study, [trial for trial, _ in group])
        seconds = pd.Series([record.train_seconds for _, record in group], dtype="float64")
        shares = pd.Series([_share_trained(record) for _, record in group], dtype="float64")
        states = [trial.state for trial, _ in group]
        row = StrategyRow(
            strategy=name,
            trials=len(group),
            complete=states.count(TrialState.COMPLETE),
            pruned=states.count(TrialState.PRUNED),
            failed=states.count(TrialState.FAIL),
            best=trial_value(winner, index) if winner is not None else None,
            best_trial=winner.number if winner is not None else None,
            median_train_seconds=seconds.median(),
            train_seconds=seconds.sum(min_count=1),
            share_trained=shares.median(),
        )
        rows.append(asdict(row))
    frame = records.frame(rows, StrategyRow, STRATEGY_COLUMNS)
    frame = frame.sort_values(["best", "strategy"], ascending=[False, True], na_position="last")
    return frame.reset_index(drop=True)


def trial_strategy(trial: FrozenTrial, record: TrialRecord | None = None) -> str | None:
    """What a trial trained, as one of ``STRATEGIES``: from its stored recipe, else its params, else its record.

    Normalised by ``TrialConfig``, so a recipe from before strategies existed (only a
    ``frozen_depth``) counts as the strategy it was. None when nothing says.
    """
    record = record or TrialRecord.of(trial)
    for source in (record.config or {}, trial.params, {"strategy": record.strategy}):
        name = TrialConfig.strategy_named(source)
        if name is not None:
            return name
    return None


def trial_backbone(trial: FrozenTrial, record: TrialRecord | None = None) -> str | None:
    """The backbone a trial used: its record's, else its stored recipe's, else its param."""
    record = record or TrialRecord.of(trial)
    named = (record.backbone, (record.config or {}).get("backbone"), trial.params.get("backbone"))
    return next((str(name) for name in named if name is not None), None)


def _share_trained(record: TrialRecord) -> float | None:
    """The share of the model's parameters the trial trained; None unless it recorded both counts."""
    if record.params_total is None or record.params_trainable is None or record.params_total <= 0:
        return None
    return record.params_trainable / record.params_total


def ranking_settings(study: optuna.Study) -> dict[str, Any] | None:
    """How the backbones were ranked before training, or None when they were not.

    From the study's ``backbone_ranking``: ``method`` (LogME unless it says), ``images`` and
    ``resolution_scale`` used to score, total ``seconds`` and the drop ``margin`` (each
    None when missing), and ``dropped``, how many backbones the ranking removed.
    """
    ranking = StudyRecord.of(study).backbone_ranking
    if ranking is None:
        return None
    return {
        "method": ranking.method or "LogME",
        "images": ranking.images,
        "resolution_scale": ranking.resolution_scale,
        "seconds": ranking.seconds,
        "margin": ranking.margin,
        "dropped": sum(score.dropped is True for score in ranking.scores),
    }


def ranking_records(study: optuna.Study) -> pd.DataFrame:
    """The backbone ranking made before training, next to what each backbone then did.

    One row per ranked backbone (``RANKING_COLUMNS``), best ranked first: its rank (its
    place in the ranking when it has none), LogME score, seconds to score it and whether
    ``--drop-backbones`` removed it, then from the search itself (``Searched``) the trials
    that used it (``trial_backbone``), how many completed, and the best validation score
    among those (NaN when none). Empty when there is no ranking.
    """
    ranking = StudyRecord.of(study).backbone_ranking
    index = score_index(study)
    used: dict[str, list[FrozenTrial]] = {}
    for trial in study.trials:
        name = trial_backbone(trial)
        if name is not None:
            used.setdefault(name, []).append(trial)
    rows = []
    for position, score in enumerate(ranking.scores if ranking is not None else [], start=1):
        if score.backbone is None:
            continue
        trials = used.get(score.backbone, [])
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        scores = [v for v in (trial_value(t, index) for t in complete) if v is not None]
        searched = Searched(len(trials), len(complete), max(scores) if scores else None)
        rank = score.rank if score.rank is not None else position
        rows.append({**asdict(score), **asdict(searched), "rank": rank, "dropped": score.dropped is True})
    frame = _frame(rows, RANKING_COLUMNS, BackboneScore, Searched)
    return frame.sort_values("rank", kind="stable").reset_index(drop=True)


def pareto_records(study: optuna.Study) -> pd.DataFrame:
    """Complete trials of a score-latency study, and which of them are on the Pareto front.

    One row per complete trial with both objective values (``PARETO_COLUMNS``): ``score``
    (by the study's metric) and ``latency_ms`` are its objective values (as the study
    names them, ``autotl.trials.objective_names``), ``on_front`` whether Optuna counts it
    among ``study.best_trials`` (no other trial both scores higher and is faster). Empty
    for single-objective studies.
    """
    rows = []
    if multi_objective(study):
        names = objective_names(study)
        scored = score_index(study)
        others = [i for i in range(len(names)) if i != scored]
        latency = names.index("latency") if "latency" in names else others[0]
        try:
            front = {trial.number for trial in study.best_trials}
        except (ValueError, RuntimeError):
            front = set()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            point = ParetoPoint(
                trial.number, trial_value(trial, scored), trial_value(trial, latency), trial.number in front
            )
            if point.score is not None and point.latency_ms is not None:
                record = TrialRecord.of(trial)
                rows.append({**asdict(record), **asdict(point), "backbone": trial_backbone(trial, record)})
    return _frame(rows, PARETO_COLUMNS, ParetoPoint, TrialRecord)


def best_model_records(study: optuna.Study) -> dict[str, Any] | None:
    """The exported best model's validation analysis, tidied; None when absent.

    Returns ``trial`` (number or None), ``classes`` (list of str), ``confusion`` (a
    DataFrame, rows = true class, columns = predicted class; None unless it is square
    over the classes), ``per_class`` (a DataFrame of ``ClassScore``s), ``misclassified``
    (at most 24 dicts of true, predicted, probability, thumbnail; a thumbnail that is not
    a base64 PNG data URI becomes None) and ``n_val``.
    """
    stored = StudyRecord.of(study)
    analysis = stored.best_model_analysis
    if analysis is None or not analysis.classes:
        return None
    classes, matrix = analysis.classes, analysis.confusion
    square = len(matrix) == len(classes) and all(len(row) == len(classes) for row in matrix)
    return {
        "trial": stored.best_model_trial,
        "classes": classes,
        "confusion": pd.DataFrame(matrix, index=classes, columns=classes) if square else None,
        "per_class": records.frame([asdict(s) for s in analysis.per_class], ClassScore, PER_CLASS_COLUMNS),
        "misclassified": [
            {**asdict(m), "thumbnail": m.thumbnail if safe_thumbnail(m.thumbnail) else None}
            for m in analysis.misclassified[:MAX_THUMBNAILS]
        ],
        "n_val": analysis.n_val,
    }


def safe_thumbnail(value: str | None) -> bool:
    """True for a base64 PNG data URI (the only thing the page embeds as an image)."""
    if not value or not value.startswith(THUMBNAIL_PREFIX):
        return False
    payload = value[len(THUMBNAIL_PREFIX) :]
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    return bool(payload) and set(payload) <= alphabet


def summary(study: optuna.Study) -> dict[str, Any]:
    """Counts per state, the best complete trial, wall time and the study's record.

    ``best_value``/``best_trial``/``best_params``/``best_config`` are None/None/{}/None
    when no trial completed; ``best_words`` is the best recipe in words (or None), and
    ``best_metrics`` and ``best_report`` are how its kept weights scored and which report
    they are of. ``wall_seconds`` runs from the first trial's start to the last trial's
    end, and ``trial_seconds`` adds up the trials' own durations. ``model_dir`` is where
    the search exported the best model, as ``model_location`` describes it. In a
    multi-objective study the best trial is the best-scoring one and ``objectives``
    lists (name, direction, the best trial's value, whether it is the score) per
    objective; it is None otherwise. ``metric`` is what the study scores its trials by
    (``autotl.trials.study_metric``) and ``record`` the study's ``StudyRecord``.
    """
    states = [trial.state for trial in study.trials]
    best = best_trial(study)
    record = TrialRecord.of(best) if best is not None else TrialRecord()
    stored = StudyRecord.of(study)
    times = [_times(t) for t in study.trials]
    starts = [start for start, _, _ in times if start is not None]
    ends = [end for _, end, _ in times if end is not None]
    durations = [seconds for _, _, seconds in times if seconds is not None]
    return {
        "study_name": study.study_name,
        "metric": study_metric(study),
        "direction": direction_word(study),
        "n_trials": len(states),
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
        "running": states.count(TrialState.RUNNING),
        "waiting": states.count(TrialState.WAITING),  # queued (a warm-start recipe) and never started
        "best_value": trial_value(best, score_index(study)) if best is not None else None,
        "best_trial": best.number if best is not None else None,
        "best_params": dict(best.params) if best is not None else {},
        "best_config": record.config,
        "best_words": describe_config(record.config),
        "best_metrics": record.metrics or Metrics(),
        "best_report": record.best_report,
        "wall_seconds": (max(ends) - min(starts)).total_seconds() if starts and ends else None,
        "trial_seconds": sum(durations) if durations else None,
        "first_start": min(starts).isoformat(timespec="seconds") if starts else None,
        "model_dir": model_location(stored.model_dir),
        "model_trial": stored.best_model_trial,
        "objectives": _objectives(study),
        "record": stored,
    }


def describe_config(config: dict | None) -> str | None:
    """A stored recipe in words (``TrialConfig.describe``), or None when it cannot be read."""
    if config is None:
        return None
    try:
        return TrialConfig.from_dict(config).describe()
    except Exception:  # an old or hand-written config: show the params instead
        return None


def model_location(model_dir: str | None) -> str | None:
    """Where the exported model is, relative to the run directory (the search puts it there).

    The search stores ``RUN_DIR/best_model``; showing only its last part keeps the page
    the same when the run directory is copied or the storage is read from elsewhere.
    """
    if not model_dir:
        return None
    return pathlib.PurePath(model_dir).name or model_dir


def direction_word(study: optuna.Study) -> str:
    """``"maximize"`` or ``"minimize"`` for the score (the metric's objective, else the first)."""
    directions = study.directions
    if directions and directions[score_index(study)] == optuna.study.StudyDirection.MINIMIZE:
        return "minimize"
    return "maximize"


def _objectives(study: optuna.Study) -> list[dict[str, Any]] | None:
    """Name, direction, the best trial's value and whether it is the score, per objective.

    None with one objective.
    """
    if not multi_objective(study):
        return None
    best = best_trial(study)
    index = score_index(study)
    return [
        {
            "name": name,
            "score": i == index,
            "direction": "minimize" if direction == optuna.study.StudyDirection.MINIMIZE else "maximize",
            "best_value": trial_value(best, i) if best is not None else None,
        }
        for i, (name, direction) in enumerate(zip(objective_names(study), study.directions))
    ]


def param_importances(study: optuna.Study) -> tuple[pd.DataFrame, str]:
    """Optuna's param importances as rows (param, importance), most important first.

    Uses fANOVA with a fixed seed, so the same storage gives the same numbers; in a
    multi-objective study they explain the score objective. Returns
    ``(frame, "")`` on success, or an empty frame and a one-line reason when they
    cannot be computed (fewer than 2 complete trials, no params that vary, ...).
    """
    empty = pd.DataFrame(columns=["param", "importance"])
    index = score_index(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return empty, f"they need at least 2 complete trials and this study has {len(complete)}."
    if len({trial_value(trial, index) for trial in complete}) < 2:
        return empty, "every complete trial has the same score, so no parameter explains anything."
    # Like Optuna, use the params every complete trial has (conditional ones drop out), and
    # of those only the ones that vary: Optuna splits importance evenly when nothing does.
    shared = set.intersection(*(set(trial.params) for trial in complete))
    varying = sorted(name for name in shared if len({repr(trial.params[name]) for trial in complete}) > 1)
    if not varying:
        return empty, "no parameter of every complete trial took more than one value."
    try:
        importances = optuna.importance.get_param_importances(
            study,
            evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
            params=varying,
            # several objectives: explain the score (Optuna refuses without a target)
            target=(lambda trial: trial.values[index]) if multi_objective(study) else None,
        )
    except Exception as error:  # optuna raises several types for degenerate studies
        message = " ".join(str(error).split()) or type(error).__name__
        return empty, f"Optuna could not compute them ({message})."
    if not importances:
        return empty, "no parameter was sampled in every complete trial with more than one value."
    frame = pd.DataFrame(
        sorted(importances.items(), key=lambda item: item[1], reverse=True),
        columns=["param", "importance"],
    )
    return frame, ""


def _times(trial: FrozenTrial) -> tuple[datetime | None, datetime | None, float | None]:
    """When a trial began and ended, and the seconds it ran. A sliced trial runs from its first slice to the end of
    its last, for its slices' seconds: Optuna's own times are those of its last continuation and, for a trial left
    paused, of the search's end."""
    slices = [entry for entry in TrialRecord.of(trial, "slices").slices if entry.at is not None]
    if slices:
        first, last = slices[0], slices[-1]
        seconds = sum(entry.seconds or 0 for entry in slices)
        return datetime.fromtimestamp(first.at), datetime.fromtimestamp(last.at + (last.seconds or 0)), seconds
    start, end = trial.datetime_start, trial.datetime_complete
    return start, end, (end - start).total_seconds() if start is not None and end is not None else None
