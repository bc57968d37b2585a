"""What a study stores: one typed record of a trial, one of the study, shared by every writer and reader.

The training loop and the search write them into the study (a trial's record as one
Optuna user attr per field, the study's likewise, so optuna-dashboard and
``study.trials_dataframe()`` show them too); the pruner, the search and the report read
them back with ``of``. Storage is JSON, and a trial can die at any point or come from an
older version: ``of`` gives every field its declared type or None (an empty list), in
one place, so no reader re-validates. ``frame`` turns records into a DataFrame whose
dtypes come from the same declarations. This module imports nothing from autotl.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass

import pandas as pd

# Keys written by earlier versions, read under their new names (reports were called epochs).
_RENAMED = {"best_epoch": "best_report", "epochs_run": "reports", "soup_epochs": "soup_reports"}
METRICS = ("accuracy", "macro_f1", "balanced_accuracy")  # what a search can score its trials by (--metric)


@dataclass
class Report:
    """One report of a trial: how far training got, and how the model scored on the validation check."""

    report: int | None = None  # 1, 2, ...: the trial's reports in order
    epoch: float | None = None  # epochs of training done (a fraction where reports split an epoch)
    images: int | None = None  # training images seen
    train_loss: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_macro_f1: float | None = None
    val_balanced_accuracy: float | None = None
    seconds: float | None = None  # this report's wall time: training and checking
    train_seconds: float | None = None  # this report's training time
    # of those, computing the frozen prefix's outputs of images seen for the first time (a cached prefix): work that
    # later reports do not repeat, on the training images and on the validation check
    feature_seconds: float | None = None
    check_feature_seconds: float | None = None


def _renamed_report(entry):
    """A history entry of an earlier version: its ``epoch`` counted reports, ``epochs_done`` epochs."""
    if not isinstance(entry, dict) or "report" in entry:
        return entry
    return {**entry, "report": entry.get("epoch"), "epoch": entry.get("epochs_done", entry.get("epoch"))}


@dataclass
class Metrics:
    """The kept weights scored on the validation split."""

    accuracy: float | None = None
    macro_f1: float | None = None
    balanced_accuracy: float | None = None
    loss: float | None = None  # mean cross-entropy: breaks near-ties between the most accurate trials


def report_score(entry: Report, metric: str = "accuracy") -> float | None:
    """A report's validation score by ``metric`` (accuracy, macro_f1 or balanced_accuracy)."""
    return getattr(entry, f"val_{metric}")


@dataclass
class Slice:
    """One slice of a trial's training that the search's scheduler gave it, and why."""

    at: float | None = None  # when it began (seconds since the epoch)
    action: str | None = None  # start, continue or finish (its cool-down)
    after_report: int | None = None  # the reports the trial had made before it
    why: str | None = None
    predicted: float | None = None  # the best validation accuracy it was predicted to reach ...
    predicted_std: float | None = None
    horizon: int | None = None  # ... by this report, with the time that was left
    gain_per_second: float | None = None  # expected improvement over the best so far, per second of the slice
    seconds: float | None = None  # how long the slice took
    ended: str | None = None  # how: paused, interrupted, complete, pruned or fail


@dataclass
class TrialRecord:
    """What a trial stores in the study: the training loop writes most of it, the search the rest."""

    history: list[Report] = field(default_factory=list)  # the curve: one entry per report
    # the report whose weights were kept
    best_report: int | None = field(default=None, metadata=dict(title="best report"))
    reports: int | None = field(default=None, metadata=dict(title="reports"))  # reports made
    # the report its saved training state continued from (None: trained from the start)
    resumed_at: int | None = field(default=None, metadata=dict(title="continued from report"))
    wall_seconds: float | None = field(default=None, metadata=dict(title="time (s)"))
    # the training steps (and the frozen prefix's passes), evaluation excluded
    train_seconds: float | None = field(default=None, metadata=dict(title="train time (s)"))
    first_report_seconds: float | None = None  # from the trial's start to its first report
    # one image's prediction, PyTorch, on the search's device
    latency_ms: float | None = field(default=None, metadata=dict(title="PyTorch latency (ms, batch 1)"))
    model_mb: float | None = field(default=None, metadata=dict(title="size (MB)"))
    params_total: int | None = None
    params_trainable: int | None = field(default=None, metadata=dict(title="trainable params"))
    end_reason: str | None = field(default=None, metadata=dict(title="end reason"))
    backbone: str | None = field(default=None, metadata=dict(title="backbone"))
    # what trained: the pruner compares a trial with its strategy's trials
    strategy: str | None = field(default=None, metadata=dict(title="strategy"))
    config: dict | None = None  # the TrialConfig, as a dict
    metrics: Metrics | None = None
    val_images: int | None = None  # the validation images ``metrics`` count (the best-trial rule's tolerance)
    feature_cache: str | None = None  # 'hit', 'miss' or 'off': the frozen prefix's outputs came from the cache
    soup_reports: list[int] = field(default_factory=list)  # the reports averaged into the model, if a soup
    slices: list[Slice] = field(default_factory=list)  # written by the search's scheduler: what it gave the trial
    # written by the search when it enqueues a warm-start recipe
    warm_start: str | None = field(default=None, metadata=dict(title="warm start"))
    out_of_memory_retry: str | None = None  # written by the search when CUDA ran out of memory
    error: str | None = None  # written by the search when the trial failed

    @classmethod
    def of(cls, trial, *names: str) -> TrialRecord:
        """The record a trial (an Optuna FrozenTrial) stored (its fields ``names`` alone, when given: faster);
        what it did not store is None."""
        stored = {_RENAMED.get(k, k): v for k, v in trial.user_attrs.items()}
        if names:
            stored = {k: v for k, v in stored.items() if k in names}
        if isinstance(stored.get("history"), list):
            stored["history"] = [_renamed_report(entry) for entry in stored["history"]]
        return load(cls, stored)

    def attrs(self, *names: str) -> dict:
        """The fields as user attrs (all of them, or ``names``), left out where None or empty."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if not names or f.name in names}
        return {k: _plain(v) for k, v in values.items() if v is not None and v != []}

    def write(self, trial, *names: str) -> None:
        """Store the fields (all of them, or ``names``) as the trial's user attrs."""
        for key, value in self.attrs(*names).items():
            trial.set_user_attr(key, value)


@dataclass
class DatasetInfo:
    """The searched dataset, as the study stores it: enough to load it again with the same split."""

    path: str | None = None
    classes: list[str] = field(default_factory=list)
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    val_fraction: float | None = None
    seed: int | None = None
    skipped: int | None = None
    max_per_class: int | None = None
    allow_outside_paths: bool | None = None
    image_size: int | None = None


@dataclass
class BackboneScore:
    """One backbone's LogME score before any training."""

    backbone: str | None = None
    logme: float | None = None
    seconds: float | None = None
    rank: int | None = None
    dropped: bool | None = None


@dataclass
class Ranking:
    """The backbones ranked by LogME on their frozen features, best first."""

    method: str | None = None
    images: int | None = None
    resolution_scale: float | None = None
    margin: float | None = None
    seconds: float | None = None
    scores: list[BackboneScore] = field(default_factory=list)


@dataclass
class ClassScore:
    cls: str | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    support: int | None = None


@dataclass
class Misclassified:
    true: str | None = None
    predicted: str | None = None
    probability: float | None = None
    thumbnail: str | None = None  # a base64 PNG data URI


@dataclass
class Analysis:
    """The exported model on each validation image: confusion matrix, per-class scores, its worst mistakes."""

    classes: list[str] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)  # rows: true class, columns: predicted
    per_class: list[ClassScore] = field(default_factory=list)
    misclassified: list[Misclassified] = field(default_factory=list)
    n_val: int | None = None


@dataclass
class Refit:
    """The best recipe trained again on train + validation."""

    trial: int | None = None
    train_images: int | None = None
    reports: int | None = None
    seconds: float | None = None


@dataclass
class EnsembleRecord:
    """The greedy ensemble of the kept trials: its members and weights, chosen on one half of the validation
    images and checked on the other against the trial that scored best on the first."""

    members: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    metric: str | None = None  # the score below (None: accuracy, as before --metric)
    selection_curve: list[float] = field(default_factory=list)  # the score on the selection half after each addition
    selected_on: int | None = None  # validation images the selection saw
    held_back: int | None = None  # validation images it was checked on
    ensemble_held_back: float | None = None
    single_held_back: float | None = None
    single_trial: int | None = None
    ensemble_val: float | None = None  # on all of validation (half of it was selected on)
    latency_ms: float | None = None  # the sum of the members'
    single_latency_ms: float | None = None
    written: bool = False  # RUN_DIR/ensemble_model was written: it beat the single model on the held-back half


@dataclass
class StudyRecord:
    """What the search stores about the study as a whole (its user attrs)."""

    dataset: DatasetInfo | None = None
    space: str | None = None
    max_epochs: int | None = None
    device: str | None = None
    n_trials: int | None = None
    timeout: float | None = None
    model_dir: str | None = None
    cache_dir: str | None = None
    started_at: str | None = None  # when the study's first run began (ISO 8601, UTC)
    backbone_ranking: Ranking | None = None
    best_model_trial: int | None = None
    best_model_analysis: Analysis | None = None
    refit: Refit | None = None
    ensemble: EnsembleRecord | None = None
    objectives: list[str] = field(default_factory=list)  # older studies; newer ones name them with set_metric_names

    @classmethod
    def of(cls, study) -> StudyRecord:
        """The record of an Optuna study; what it did not store is None."""
        return load(cls, study.user_attrs)

    def write(self, study, *names: str) -> None:
        """Store the fields (all of them, or ``names``) as the study's user attrs; None and empty are left out."""
        for f in fields(self):
            value = getattr(self, f.name)
            if (not names or f.name in names) and value is not None and value != []:
                study.set_user_attr(f.name, _plain(value))


def load(kind, value):
    """``value`` (parsed JSON) as ``kind``: a dataclass, list[...], a plain type or an optional one; None if it
    cannot be (a missing field, a wrong type, a non-finite number)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return load(next(a for a in args if a is not type(None)), value)
    if origin is list:
        items = (load(args[0], v) for v in (value if isinstance(value, list) else []))
        return [item for item in items if item is not None]
    if is_dataclass(kind):
        if not isinstance(value, dict):
            return None
        hints = _hints(kind)
        given = [f.name for f in fields(kind) if value.get(f.name) is not None]
        return kind(**{name: load(hints[name], value[name]) for name in given})
    if kind is dict:
        return value if isinstance(value, dict) else None
    if kind is bool:
        return value if isinstance(value, bool) else None
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return kind(value) if kind is float or float(value).is_integer() else None
    return None if value is None else str(value)


def dtypes(kind) -> dict[str, str]:
    """pandas dtypes of a dataclass's plain fields: Int64, float64, boolean or str (lists and records are left out)."""
    found = {}
    for name, hint in _hints(kind).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        plain = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
        dtype = {int: "Int64", float: "float64", bool: "boolean", str: "string"}.get(plain)
        if dtype is not None:
            found[name] = dtype
    return found


def frame(rows: list[dict], kind, columns: list[str] | None = None) -> pd.DataFrame:
    """A DataFrame of ``rows`` (dicts of ``kind``'s fields and others) with ``kind``'s dtypes.

    Columns that are not ``kind``'s fields keep the dtype pandas infers.
    """
    table = pd.DataFrame(rows, columns=columns)
    typed = {k: v for k, v in dtypes(kind).items() if k in table.columns}
    return table.astype(typed)


_hints = functools.cache(typing.get_type_hints)


def _plain(value):
    """A record's value as JSON-ready data (nested records become dicts)."""
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, list):
        return [asdict(v) if is_dataclass(v) else v for v in value]
    return value
