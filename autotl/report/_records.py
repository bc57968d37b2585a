"""Tables of what a study did, read from the study alone.

Everything the report shows is computed here first, as plain pandas DataFrames and
dicts, so it can be checked (and reused, e.g. in a notebook) without any drawing.
The only input is an ``optuna.Study`` loaded from storage; every key the trainer
writes may be missing, because a trial can die at any point. Nothing here reads the
clock or the file system, so the same storage always gives the same records.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from ..space import FIELD_NAMES, STRATEGY_SETTINGS, TrialConfig
from ..trials import TrialRecord, accuracy_index, best_trial, multi_objective, objective_names, score

TRIAL_COLUMNS = [
    "number",
    "state",
    "value",
    "val_loss",
    "best_epoch",
    "epochs_run",
    "wall_seconds",
    "params_total",
    "params_trainable",
    "train_seconds",
    "latency_ms",
    "model_mb",
    "end_reason",
    "warm_start",
    "backbone",
    "strategy",
    "error",
]
CURVE_COLUMNS = [
    "trial",
    "state",
    "epoch",
    "val_accuracy",
    "val_macro_f1",
    "val_loss",
    "train_loss",
    "seconds",
]
CONFIG_COLUMNS = list(FIELD_NAMES)  # a stored recipe's settings: TrialConfig's fields
TIME_COLUMNS = ["number", "state", "value", "elapsed_seconds", "best_so_far"]
STRATEGY_COLUMNS = [
    "strategy",
    "trials",
    "complete",
    "pruned",
    "failed",
    "best",
    "best_trial",
    "median_train_seconds",
    "train_seconds",
    "share_trained",
]
BACKBONE_COLUMNS = ["backbone", "trials", "complete", "best", "median", "seconds_per_trial"]
RANKING_COLUMNS = ["rank", "backbone", "logme", "seconds", "dropped", "trials", "complete", "best"]
PARETO_COLUMNS = ["number", "backbone", "accuracy", "latency_ms", "on_front", "train_seconds", "model_mb", "warm_start"]
PER_CLASS_COLUMNS = ["cls", "precision", "recall", "f1", "support"]
THUMBNAIL_PREFIX = "data:image/png;base64,"
MAX_THUMBNAILS = 24
_HISTORY_KEYS = ["val_accuracy", "val_macro_f1", "val_loss", "train_loss", "seconds"]
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def state_word(trial: FrozenTrial) -> str:
    """The trial's state as a lowercase word: complete, pruned, fail, running or waiting."""
    return trial.state.name.lower()


def trial_value(trial: FrozenTrial, index: int = 0) -> float | None:
    """The trial's objective value number ``index`` (the first by default), or None without one.

    Pruned trials told without a value carry their last reported accuracy. Reads
    ``trial.values``, never ``trial.value``, which raises in multi-objective studies.
    """
    if not trial.values or index >= len(trial.values):
        return None
    return _number(trial.values[index])


def trial_records(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, with its outcome, cost and sampled params (``param_<name>``).

    ``value`` is the validation accuracy (in a multi-objective study, the accuracy
    objective) and ``val_loss`` the kept weights' validation loss, which breaks near-ties
    between the most accurate trials; ``strategy`` is what trained (``trial_strategy``).
    The cost columns (``train_seconds``, ``latency_ms``, ``model_mb``) and ``warm_start``
    are blank for trials that did not store them, e.g. from older searches.
    """
    rows = []
    param_names: list[str] = []
    index = accuracy_index(study)
    for trial in study.trials:
        record = TrialRecord.of(trial)
        row: dict[str, Any] = {
            "number": trial.number,
            "state": state_word(trial),
            "value": trial_value(trial, index),
            "val_loss": _number(record.metrics.get("loss")) if isinstance(record.metrics, dict) else None,
            "best_epoch": _integer(record.best_epoch),
            "epochs_run": _integer(record.epochs_run),
            "wall_seconds": _number(record.wall_seconds if record.wall_seconds is not None else _duration(trial)),
            "params_total": _integer(record.params_total),
            "params_trainable": _integer(record.params_trainable),
            "train_seconds": _number(record.train_seconds),
            "latency_ms": _number(record.latency_ms),
            "model_mb": _number(record.model_mb),
            "end_reason": _text(record.end_reason),
            "warm_start": _text(record.warm_start),
            "backbone": _text(record.backbone or trial.params.get("backbone")),
            "strategy": trial_strategy(trial),
            "error": _text(record.error),
        }
        for name, value in trial.params.items():
            if name not in param_names:
                param_names.append(name)
            row["param_" + name] = value
        rows.append(row)
    columns = TRIAL_COLUMNS + ["param_" + name for name in param_names]
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("value", "val_loss", "wall_seconds", "train_seconds", "latency_ms", "model_mb"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("number", "best_epoch", "epochs_run", "params_total", "params_trainable"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


def config_records(study: optuna.Study) -> pd.DataFrame:
    """One row per trial that stored its recipe (``user_attrs["config"]``), in plain names.

    Columns: number, state, value, wall_seconds, then ``CONFIG_COLUMNS``. Unlike the
    Optuna params (``adamw.lr``), the recipe names every setting the same way in every
    trial, so it is what the "score against ..." plots use. ``strategy`` is the normalised
    name (``trial_strategy``), so a recipe stored before strategies existed has one too.
    """
    trials = trial_records(study).set_index("number")
    rows = []
    for trial in study.trials:
        config = trial.user_attrs.get("config")
        if not isinstance(config, dict):
            continue
        row = {
            "number": trial.number,
            "state": trials.at[trial.number, "state"],
            "value": trials.at[trial.number, "value"],
            "wall_seconds": trials.at[trial.number, "wall_seconds"],
        }
        row.update({name: config.get(name) for name in CONFIG_COLUMNS})
        row["strategy"] = trial_strategy(trial)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["number", "state", "value", "wall_seconds"] + CONFIG_COLUMNS)
    for column in (
        "value",
        "wall_seconds",
        "resolution_scale",
        "frozen_depth",
        "probe_lr_scale",
        "lora_alpha",
        "lr",
        "layer_decay",
        "regularizer_strength",
        "augment_strength",
    ):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in (
        "number",
        "probe_epochs",
        "lora_rank",
        "warmup_epochs",
        "batch_size",
        "max_epochs",
        "report_every_images",
    ):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    for column in ("backbone", "strategy", "surgical_group", "lora_layers", "optimizer", "lr_schedule", "regularizer"):
        frame[column] = frame[column].map(lambda v: None if v is None else str(v)).astype("object")
    return frame


def parallel_records(trials: pd.DataFrame, configs: pd.DataFrame) -> pd.DataFrame:
    """Complete trials with the settings worth an axis in parallel coordinates.

    Columns: number, value, then one column per setting. When every complete trial
    stored its recipe, the settings are the recipe's that took more than one value, where
    they apply (``applicable_settings``); otherwise they are the sampled Optuna params.
    Empty when no trial completed.
    """
    complete = trials[(trials["state"] == "complete") & trials["value"].notna()]
    recipes = configs[configs["number"].isin(complete["number"])]
    if not complete.empty and len(recipes) == len(complete):
        frame = applicable_settings(recipes)
        columns = [c for c in CONFIG_COLUMNS if frame[c].dropna().map(repr).nunique() > 1]
    else:
        params = [c for c in complete.columns if c.startswith("param_") and complete[c].notna().any()]
        columns = [c[len("param_") :] for c in params]
        # only the params, renamed: a param may share its name with a trial column (e.g. backbone)
        frame = complete[["number", "value"] + params].set_axis(["number", "value"] + columns, axis=1)
    return frame[["number", "value"] + columns].reset_index(drop=True)


def applicable_settings(configs: pd.DataFrame) -> pd.DataFrame:
    """``config_records`` with the settings a trial did not use blanked, so plots show only real choices.

    A recipe stores every setting, e.g. a LoRA rank for a full fine-tune and a regularizer
    strength without a regularizer; plotted, those defaults would look like choices.
    """
    frame = configs.copy()
    if "regularizer" in frame:
        frame["regularizer_strength"] = frame["regularizer_strength"].where(frame["regularizer"] != "none")
    for column, strategies in STRATEGY_SETTINGS.items():
        if column in frame and "strategy" in frame:
            frame[column] = frame[column].where(frame["strategy"].isna() | frame["strategy"].isin(strategies))
    return frame


def curve_records(study: optuna.Study) -> pd.DataFrame:
    """One row per (trial, epoch) from the trial's ``history`` user attr.

    A trial without history (e.g. written by an older trainer, or one that died
    before saving it) falls back to its reported intermediate values, which are
    validation accuracy per epoch; the other columns are then empty.
    """
    rows = []
    for trial in study.trials:
        state = state_word(trial)
        history = trial.user_attrs.get("history")
        if isinstance(history, list) and history:
            for index, entry in enumerate(history):
                if not isinstance(entry, dict):
                    continue
                row = {"trial": trial.number, "state": state}
                row["epoch"] = _integer(entry.get("epoch", index + 1))
                for key in _HISTORY_KEYS:
                    row[key] = _number(entry.get(key))
                rows.append(row)
        else:
            for epoch, accuracy in sorted(trial.intermediate_values.items()):
                row = {"trial": trial.number, "state": state, "epoch": int(epoch)}
                row.update({key: None for key in _HISTORY_KEYS})
                row["val_accuracy"] = _number(accuracy)
                rows.append(row)
    frame = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    for column in ("trial", "epoch"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    for column in _HISTORY_KEYS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame.sort_values(["trial", "epoch"], kind="stable").reset_index(drop=True)


def time_records(study: optuna.Study) -> pd.DataFrame:
    """Finished trials in the order they ended, with the wall time since the first trial began.

    ``elapsed_seconds`` is measured from the earliest trial start to this trial's end
    (gaps between resumed runs included); ``best_so_far`` is the best complete score
    at that moment (NaN before the first complete trial).
    """
    starts = [t.datetime_start for t in study.trials if t.datetime_start is not None]
    ended = [t for t in study.get_trials(deepcopy=False, states=_FINISHED) if t.datetime_complete is not None]
    if not starts or not ended:
        return pd.DataFrame(columns=TIME_COLUMNS)
    origin = min(starts)
    ended.sort(key=lambda t: (t.datetime_complete, t.number))
    minimize = direction_word(study) == "minimize"
    index = accuracy_index(study)
    best, rows = None, []
    for trial in ended:
        value = trial_value(trial, index)
        if trial.state == TrialState.COMPLETE and value is not None:
            if best is None or (value < best if minimize else value > best):
                best = value
        rows.append(
            {
                "number": trial.number,
                "state": state_word(trial),
                "value": value,
                "elapsed_seconds": (trial.datetime_complete - origin).total_seconds(),
                "best_so_far": best,
            }
        )
    frame = pd.DataFrame(rows, columns=TIME_COLUMNS)
    for column in ("value", "elapsed_seconds", "best_so_far"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def backbone_records(configs: pd.DataFrame) -> pd.DataFrame:
    """Per backbone: trials tried, how many completed, best and median score, mean seconds per trial.

    Scores are of complete trials only; seconds are over every trial that reports them.
    Sorted by best score, best first.
    """
    if configs.empty or configs["backbone"].isna().all():
        return pd.DataFrame(columns=BACKBONE_COLUMNS)
    rows = []
    for backbone, group in configs[configs["backbone"].notna()].groupby("backbone", sort=True):
        scores = group.loc[group["state"] == "complete", "value"].dropna()
        rows.append(
            {
                "backbone": str(backbone),
                "trials": len(group),
                "complete": int((group["state"] == "complete").sum()),
                "best": scores.max() if len(scores) else None,
                "median": scores.median() if len(scores) else None,
                "seconds_per_trial": group["wall_seconds"].dropna().mean()
                if group["wall_seconds"].notna().any()
                else None,
            }
        )
    frame = pd.DataFrame(rows, columns=BACKBONE_COLUMNS)
    for column in ("best", "median", "seconds_per_trial"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame = frame.sort_values(["best", "backbone"], ascending=[False, True], na_position="last")
    return frame.reset_index(drop=True)


def strategy_records(study: optuna.Study) -> pd.DataFrame:
    """Per strategy that some trial used: trials by state, best score, training cost and share of parameters trained.

    One row per strategy (``STRATEGY_COLUMNS``): ``best`` is the validation accuracy of its
    best complete trial (``autotl.trials.best_trial``), ``best_trial`` that trial's number (both blank
    when none completed); ``median_train_seconds`` and ``train_seconds`` (the total) are over
    every trial that recorded its training time, since pruned trials cost time too;
    ``share_trained`` is the median of ``params_trainable / params_total``. Best first.
    """
    groups: dict[str, list[FrozenTrial]] = {}
    for trial in study.trials:
        name = trial_strategy(trial)
        if name is not None:
            groups.setdefault(name, []).append(trial)
    rows = []
    for name, trials in groups.items():
        winner = best_trial(study, trials)
        seconds = pd.Series([_number(t.user_attrs.get("train_seconds")) for t in trials], dtype="float64")
        shares = pd.Series([share_trained(t) for t in trials], dtype="float64")
        states = [t.state for t in trials]
        rows.append(
            {
                "strategy": name,
                "trials": len(trials),
                "complete": states.count(TrialState.COMPLETE),
                "pruned": states.count(TrialState.PRUNED),
                "failed": states.count(TrialState.FAIL),
                "best": _number(score(winner, study)),
                "best_trial": winner.number if winner is not None else None,
                "median_train_seconds": seconds.median(),
                "train_seconds": seconds.sum() if seconds.notna().any() else None,
                "share_trained": shares.median(),
            }
        )
    frame = pd.DataFrame(rows, columns=STRATEGY_COLUMNS)
    for column in ("best", "median_train_seconds", "train_seconds", "share_trained"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("trials", "complete", "pruned", "failed", "best_trial"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame = frame.sort_values(["best", "strategy"], ascending=[False, True], na_position="last")
    return frame.reset_index(drop=True)


def trial_strategy(trial: FrozenTrial) -> str | None:
    """What a trial trained, as one of ``STRATEGIES``: from its stored recipe, else its params, else its attrs.

    Normalised by ``TrialConfig``, so a recipe from before strategies existed (only a
    ``frozen_depth``) counts as the strategy it was. None when nothing says.
    """
    for source in (trial.user_attrs.get("config"), trial.params, trial.user_attrs):
        name = _strategy_of(source) if isinstance(source, dict) else None
        if name is not None:
            return name
    return None


def _strategy_of(settings: dict[str, Any]) -> str | None:
    """The normalised strategy of a recipe's ``strategy`` and ``frozen_depth``; None without either."""
    given = {key: settings[key] for key in ("strategy", "frozen_depth") if settings.get(key) is not None}
    if not given:
        return None
    try:
        return TrialConfig.from_dict(given).strategy
    except (TypeError, ValueError):  # a name this version does not know: show it as stored
        return _text(given.get("strategy"))


def share_trained(trial: FrozenTrial) -> float | None:
    """The share of the model's parameters the trial trained; None unless it recorded both counts."""
    record = TrialRecord.of(trial)
    total, trainable = _number(record.params_total), _number(record.params_trainable)
    if total is None or trainable is None or total <= 0:
        return None
    return trainable / total


def ranking_settings(study: optuna.Study) -> dict[str, Any] | None:
    """How the backbones were ranked before training, or None when they were not.

    From the study attr ``backbone_ranking``: ``method`` (e.g. "LogME"), ``images`` and
    ``resolution_scale`` used to score, total ``seconds`` and the drop ``margin`` (each
    None when missing), and ``dropped``, how many backbones the ranking removed.
    """
    ranking = study.user_attrs.get("backbone_ranking")
    if not isinstance(ranking, dict):
        return None
    scores = ranking.get("scores")
    entries = [entry for entry in scores if isinstance(entry, dict)] if isinstance(scores, list) else []
    return {
        "method": _text(ranking.get("method")) or "LogME",
        "images": _integer(ranking.get("images")),
        "resolution_scale": _number(ranking.get("resolution_scale")),
        "seconds": _number(ranking.get("seconds")),
        "margin": _number(ranking.get("margin")),
        "dropped": sum(entry.get("dropped") is True for entry in entries),
    }


def ranking_records(study: optuna.Study) -> pd.DataFrame:
    """The backbone ranking made before training, next to what each backbone then did.

    One row per ranked backbone (``RANKING_COLUMNS``), best ranked first: its rank,
    LogME score, seconds to score it and whether ``--drop-backbones`` removed it, then
    from the search itself the trials that used it (``user_attrs["backbone"]``, else
    the stored recipe's, else the sampled param), how many completed, and the best
    validation accuracy among those (NaN when none). Empty when there is no ranking.
    """
    ranking = study.user_attrs.get("backbone_ranking")
    scores = ranking.get("scores") if isinstance(ranking, dict) else None
    if not isinstance(scores, list):
        return pd.DataFrame(columns=RANKING_COLUMNS)
    index = accuracy_index(study)
    used: dict[str, list[FrozenTrial]] = {}
    for trial in study.trials:
        name = trial_backbone(trial)
        if name is not None:
            used.setdefault(name, []).append(trial)
    rows = []
    for position, entry in enumerate(scores):
        if not isinstance(entry, dict) or entry.get("backbone") is None:
            continue
        backbone = str(entry["backbone"])
        trials = used.get(backbone, [])
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        accuracies = [v for v in (trial_value(t, index) for t in complete) if v is not None]
        rank = _integer(entry.get("rank"))
        rows.append(
            {
                "rank": rank if rank is not None else position + 1,
                "backbone": backbone,
                "logme": _number(entry.get("logme")),
                "seconds": _number(entry.get("seconds")),
                "dropped": entry.get("dropped") is True,
                "trials": len(trials),
                "complete": len(complete),
                "best": max(accuracies) if accuracies else None,
            }
        )
    frame = pd.DataFrame(rows, columns=RANKING_COLUMNS)
    for column in ("logme", "seconds", "best"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("rank", "trials", "complete"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame["dropped"] = frame["dropped"].astype("bool")
    return frame.sort_values("rank", kind="stable").reset_index(drop=True)


def pareto_records(study: optuna.Study) -> pd.DataFrame:
    """Complete trials of an accuracy-latency study, and which of them are on the Pareto front.

    One row per complete trial with both objective values (``PARETO_COLUMNS``):
    ``accuracy`` and ``latency_ms`` are its objective values (as named by the study attr
    ``objectives``), ``on_front`` whether Optuna counts it among ``study.best_trials``
    (no other trial is both more accurate and faster). Empty for single-objective studies.
    """
    if not multi_objective(study):
        return pd.DataFrame(columns=PARETO_COLUMNS)
    names = objective_names(study)
    accuracy = accuracy_index(study)
    others = [i for i in range(len(names)) if i != accuracy]
    latency = names.index("latency") if "latency" in names else others[0]
    try:
        front = {trial.number for trial in study.best_trials}
    except (ValueError, RuntimeError):
        front = set()
    rows = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        values = (trial_value(trial, accuracy), trial_value(trial, latency))
        if None in values:
            continue
        attrs = trial.user_attrs
        rows.append(
            {
                "number": trial.number,
                "backbone": trial_backbone(trial),
                "accuracy": values[0],
                "latency_ms": values[1],
                "on_front": trial.number in front,
                "train_seconds": _number(attrs.get("train_seconds")),
                "model_mb": _number(attrs.get("model_mb")),
                "warm_start": _text(attrs.get("warm_start")),
            }
        )
    frame = pd.DataFrame(rows, columns=PARETO_COLUMNS)
    for column in ("accuracy", "latency_ms", "train_seconds", "model_mb"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["number"] = pd.to_numeric(frame["number"], errors="coerce").astype("Int64")
    frame["on_front"] = frame["on_front"].astype("bool")
    return frame


def trial_backbone(trial: FrozenTrial) -> str | None:
    """The backbone a trial used: its ``backbone`` attr, else its stored recipe's, else its param."""
    name = trial.user_attrs.get("backbone")
    config = trial.user_attrs.get("config")
    if name is None and isinstance(config, dict):
        name = config.get("backbone")
    if name is None:
        name = trial.params.get("backbone")
    return _text(name)


def best_model_records(study: optuna.Study) -> dict[str, Any] | None:
    """The exported best model's validation analysis, checked and tidied; None when absent.

    Returns ``trial`` (number or None), ``classes`` (list of str), ``confusion`` (a
    DataFrame, rows = true class, columns = predicted class), ``per_class`` (a
    DataFrame with ``PER_CLASS_COLUMNS``), ``misclassified`` (at most 24 dicts of
    true, predicted, probability, thumbnail; a thumbnail that is not a base64 PNG
    data URI becomes None) and ``n_val``.
    """
    analysis = study.user_attrs.get("best_model_analysis")
    if not isinstance(analysis, dict) or not isinstance(analysis.get("classes"), list):
        return None
    classes = [str(name) for name in analysis["classes"]]
    confusion = None
    matrix = analysis.get("confusion")
    if (
        isinstance(matrix, list)
        and len(matrix) == len(classes)
        and all(isinstance(row, list) and len(row) == len(classes) for row in matrix)
    ):
        confusion = pd.DataFrame([[_integer(v) or 0 for v in row] for row in matrix], index=classes, columns=classes)
    per_class = pd.DataFrame(
        [
            {
                "cls": str(entry.get("cls")),
                "precision": _number(entry.get("precision")),
                "recall": _number(entry.get("recall")),
                "f1": _number(entry.get("f1")),
                "support": _integer(entry.get("support")),
            }
            for entry in analysis.get("per_class") or []
            if isinstance(entry, dict)
        ],
        columns=PER_CLASS_COLUMNS,
    )
    for column in ("precision", "recall", "f1"):
        per_class[column] = pd.to_numeric(per_class[column], errors="coerce").astype("float64")
    per_class["support"] = pd.to_numeric(per_class["support"], errors="coerce").astype("Int64")
    misclassified = []
    for entry in (analysis.get("misclassified") or [])[:MAX_THUMBNAILS]:
        if not isinstance(entry, dict):
            continue
        thumbnail = entry.get("thumbnail")
        misclassified.append(
            {
                "true": str(entry.get("true")),
                "predicted": str(entry.get("predicted")),
                "probability": _number(entry.get("probability")),
                "thumbnail": thumbnail if safe_thumbnail(thumbnail) else None,
            }
        )
    trial = study.user_attrs.get("best_model_trial")
    return {
        "trial": _integer(trial),
        "classes": classes,
        "confusion": confusion,
        "per_class": per_class,
        "misclassified": misclassified,
        "n_val": _integer(analysis.get("n_val")),
    }


def safe_thumbnail(value: Any) -> bool:
    """True for a base64 PNG data URI (the only thing the page embeds as an image)."""
    if not isinstance(value, str) or not value.startswith(THUMBNAIL_PREFIX):
        return False
    payload = value[len(THUMBNAIL_PREFIX) :]
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    return bool(payload) and set(payload) <= alphabet


def summary(study: optuna.Study) -> dict[str, Any]:
    """Counts per state, the best complete trial, wall time and the study's own attrs.

    ``best_value``/``best_trial``/``best_params``/``best_config`` are None/None/{}/None
    when no trial completed; ``best_words`` is the best recipe in words (or None).
    ``wall_seconds`` runs from the first trial's start to the last trial's end, and
    ``trial_seconds`` adds up the trials' own durations. ``model_dir`` is where the
    search exported the best model, as ``model_location`` describes it. In a
    multi-objective study the best trial is the most accurate one and ``objectives``
    lists (name, direction, the best trial's value, whether it is the score) per
    objective; it is None otherwise.
    """
    states = [trial.state for trial in study.trials]
    best = best_trial(study)
    index = accuracy_index(study)
    config = best.user_attrs.get("config") if best is not None else None
    metrics = best.user_attrs.get("metrics") if best is not None else None
    starts = [t.datetime_start for t in study.trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in study.trials if t.datetime_complete is not None]
    durations = [d for d in (_duration(t) for t in study.trials) if d is not None]
    attrs = dict(study.user_attrs)
    return {
        "study_name": study.study_name,
        "direction": direction_word(study),
        "n_trials": len(states),
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
        "running": states.count(TrialState.RUNNING),
        "best_value": trial_value(best, index) if best is not None else None,
        "best_trial": best.number if best is not None else None,
        "best_params": dict(best.params) if best is not None else {},
        "best_config": dict(config) if isinstance(config, dict) else None,
        "best_words": describe_config(config),
        "best_metrics": dict(metrics) if isinstance(metrics, dict) else {},
        "wall_seconds": (max(ends) - min(starts)).total_seconds() if starts and ends else None,
        "trial_seconds": sum(durations) if durations else None,
        "first_start": min(starts).isoformat(timespec="seconds") if starts else None,
        "model_dir": model_location(attrs.get("model_dir")),
        "model_trial": _integer(attrs.get("best_model_trial")),
        "objectives": _objectives(study),
        "user_attrs": attrs,
    }


def describe_config(config: Any) -> str | None:
    """A stored recipe in words (``TrialConfig.describe``), or None when it cannot be read."""
    if not isinstance(config, dict):
        return None
    try:
        return TrialConfig.from_dict(config).describe()
    except Exception:  # an old or hand-written config: show the params instead
        return None


def model_location(model_dir: Any) -> str | None:
    """Where the exported model is, relative to the run directory (the search puts it there).

    The search stores ``RUN_DIR/best_model``; showing only its last part keeps the page
    the same when the run directory is copied or the storage is read from elsewhere.
    """
    if not model_dir:
        return None
    name = pathlib.PurePath(str(model_dir)).name
    return name or str(model_dir)


def direction_word(study: optuna.Study) -> str:
    """``"maximize"`` or ``"minimize"`` for the score (the accuracy objective, else the first)."""
    directions = study.directions
    if directions and directions[accuracy_index(study)] == optuna.study.StudyDirection.MINIMIZE:
        return "minimize"
    return "maximize"


def _objectives(study: optuna.Study) -> list[dict[str, Any]] | None:
    """Name, direction, the best trial's value and whether it is the score, per objective.

    None with one objective.
    """
    if not multi_objective(study):
        return None
    best = best_trial(study)
    index = accuracy_index(study)
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
    multi-objective study they explain the accuracy objective. Returns
    ``(frame, "")`` on success, or an empty frame and a one-line reason when they
    cannot be computed (fewer than 2 complete trials, no params that vary, ...).
    """
    empty = pd.DataFrame(columns=["param", "importance"])
    index = accuracy_index(study)
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
            # several objectives: explain the accuracy (Optuna refuses without a target)
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


def _duration(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def _number(value: Any) -> float | None:
    """A finite float, or None for missing, non-numeric or non-finite values."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
