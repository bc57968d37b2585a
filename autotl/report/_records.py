"""Tables of what a study did, read from the study alone.

Everything the report shows is computed here first, as plain pandas DataFrames and
dicts, so it can be checked (and reused, e.g. in a notebook) without any drawing.
The only input is an ``optuna.Study`` loaded from storage; every key the trainer
writes may be missing, because a trial can die at any point.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

TRIAL_COLUMNS = [
    "number",
    "state",
    "value",
    "best_epoch",
    "epochs_run",
    "wall_seconds",
    "params_total",
    "params_trainable",
    "end_reason",
    "backbone",
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
_HISTORY_KEYS = ["val_accuracy", "val_macro_f1", "val_loss", "train_loss", "seconds"]


def state_word(trial: FrozenTrial) -> str:
    """The trial's state as a lowercase word: complete, pruned, fail, running or waiting."""
    return trial.state.name.lower()


def trial_value(trial: FrozenTrial) -> float | None:
    """The trial's (first) objective value, or None when it has none.

    Pruned trials told without a value carry their last reported accuracy.
    """
    if not trial.values:
        return None
    return _number(trial.values[0])


def trial_records(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, with its outcome, cost and sampled params (``param_<name>``)."""
    rows = []
    param_names: list[str] = []
    for trial in study.trials:
        attrs = trial.user_attrs
        row: dict[str, Any] = {
            "number": trial.number,
            "state": state_word(trial),
            "value": trial_value(trial),
            "best_epoch": _integer(attrs.get("best_epoch")),
            "epochs_run": _integer(attrs.get("epochs_run")),
            "wall_seconds": _number(attrs.get("wall_seconds")),
            "params_total": _integer(attrs.get("params_total")),
            "params_trainable": _integer(attrs.get("params_trainable")),
            "end_reason": _text(attrs.get("end_reason")),
            "backbone": _text(attrs.get("backbone", trial.params.get("backbone"))),
            "error": _text(attrs.get("error")),
        }
        for name, value in trial.params.items():
            if name not in param_names:
                param_names.append(name)
            row["param_" + name] = value
        rows.append(row)
    columns = TRIAL_COLUMNS + ["param_" + name for name in param_names]
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("value", "wall_seconds"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("number", "best_epoch", "epochs_run", "params_total", "params_trainable"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
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


def summary(study: optuna.Study) -> dict[str, Any]:
    """Counts per state, the best complete trial and the study's own attrs.

    ``best_value``/``best_trial``/``best_params`` are None/None/{} when no trial
    completed. ``user_attrs`` is a copy of ``study.user_attrs`` (dataset info etc.).
    """
    states = [trial.state for trial in study.trials]
    best = best_trial(study)
    return {
        "study_name": study.study_name,
        "direction": direction_word(study),
        "n_trials": len(states),
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
        "running": states.count(TrialState.RUNNING),
        "best_value": trial_value(best) if best is not None else None,
        "best_trial": best.number if best is not None else None,
        "best_params": dict(best.params) if best is not None else {},
        "user_attrs": dict(study.user_attrs),
    }


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial, or None when there is none (or several objectives)."""
    try:
        return study.best_trial
    except (ValueError, RuntimeError):
        return None


def direction_word(study: optuna.Study) -> str:
    """``"maximize"`` or ``"minimize"`` for the study's first objective."""
    directions = study.directions
    if directions and directions[0] == optuna.study.StudyDirection.MINIMIZE:
        return "minimize"
    return "maximize"


def param_importances(study: optuna.Study) -> tuple[pd.DataFrame, str]:
    """Optuna's param importances as rows (param, importance), most important first.

    Returns ``(frame, "")`` on success, or an empty frame and a one-line reason when
    they cannot be computed (fewer than 2 complete trials, no params that vary, ...).
    """
    empty = pd.DataFrame(columns=["param", "importance"])
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return empty, f"they need at least 2 complete trials and this study has {len(complete)}."
    if len({trial_value(trial) for trial in complete}) < 2:
        return empty, "every complete trial has the same score, so no parameter explains anything."
    # Like Optuna, use the params every complete trial has (conditional ones drop out), and
    # of those only the ones that vary: Optuna splits importance evenly when nothing does.
    shared = set.intersection(*(set(trial.params) for trial in complete))
    varying = sorted(
        name for name in shared if len({repr(trial.params[name]) for trial in complete}) > 1
    )
    if not varying:
        return empty, "no parameter of every complete trial took more than one value."
    try:
        importances = optuna.importance.get_param_importances(study, params=varying)
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
