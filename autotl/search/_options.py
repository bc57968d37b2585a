"""A search's options: one object that the CLI, the Python API and the worker processes share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..errors import AutoTLError
from ..records import METRICS
from ._plugins import make_pruner, make_sampler
from ._schedule import POLICIES

STUDY_NAME = "autotl"
OBJECTIVES = (("accuracy",), ("accuracy", "latency"))  # "accuracy" here names the score: the --metric
IMBALANCE_RATIO = 3.0  # the largest class over the smallest beyond which the search suggests --metric macro_f1
BALANCED_WARM_START = "balanced_sampling"  # the warm start's class_balance for a per-class metric on such data


@dataclass
class SearchOptions:
    """How to search: the keywords of ``autotl.search`` and the options of ``autotl search``."""

    space: str = "default"  # search space: default, quick, or a YAML file
    n_trials: int = 20  # total finished trials the study should have (a resumed study counts its own)
    timeout: float | None = None  # wall-clock budget in seconds for this run
    max_epochs: int | None = None  # most epochs per trial (None: the space's max_epochs)
    out: str | Path | None = None  # run directory (None: reports/<dataset name>/); the same one resumes
    seed: int = 0  # seeds the split, the sampler and the training
    device: str = "auto"  # auto, cpu or cuda
    sampler: str = "tpe"  # a name of SAMPLERS
    pruner: str = "hyperband"  # a name of PRUNERS, when scheduler is off (a multi-objective study prunes nothing)
    scheduler: str = "freeze-thaw"  # how trials share the time: freeze-thaw, top-k, or off (each trial to its end)
    storage: str | None = None  # study storage URL (None: sqlite:///RUN_DIR/study.db)
    study_name: str = STUDY_NAME  # the study's name inside the storage
    workers: int = 1  # processes on the one study (one GPU each when there are GPUs)
    weights_dir: str | Path | None = None  # folder of <timm name>.safetensors|.pth weight files, tried first
    val_fraction: float = 0.2  # share of train held out for validation when there is no val split
    max_per_class: int | None = None  # cap on images per class and split, for quick runs
    allow_outside_paths: bool = False  # let a CSV name images outside its own folder (only for CSVs you trust)
    progress: bool = True  # print trials and their reports to stderr
    objectives: str | tuple[str, ...] = "accuracy"  # accuracy, or accuracy,latency for a Pareto front
    metric: str | None = None  # the score: accuracy, macro_f1 or balanced_accuracy (None: the space's, or accuracy)
    rank: bool = True  # rank the backbones by LogME before the first trial
    warm_start: bool = True  # the space's warm-start recipes on the best-ranked backbones are the first trials
    drop_backbones: float | None = None  # a LogME margin: leave out backbones that score that far below the best
    refit: bool = False  # retrain the best recipe on train + validation before the final export
    soup: bool = False  # average each trial's best reports greedily when validation does not get worse
    keep_models: int = 3  # the best complete trials whose weights stay in RUN_DIR/trials/ (export --trial uses them)
    ensemble: bool = False  # a greedy ensemble of those trials, in RUN_DIR/ensemble_model when it beats the best one
    compile: bool = False  # run training steps through torch.compile (for a GPU)
    cache_dir: str | Path | None = None  # decoded-image cache (None: ~/.cache/autotl/images), shared by runs

    @classmethod
    def from_keywords(cls, options: SearchOptions | None = None, **keywords) -> SearchOptions:
        """``options`` (or the defaults) with ``keywords`` replacing fields; an unknown keyword is a TypeError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [key for key in keywords if key not in names]
        if unknown:
            raise TypeError(
                f"search() got an unexpected keyword argument {unknown[0]!r}: "
                f"its options are the fields of autotl.search.SearchOptions"
            )
        return dataclasses.replace(options or cls(), **keywords)

    def check(self) -> None:
        """Refuse impossible values and unknown names before any work, with the option's name in the message."""
        if self.n_trials < 1:
            raise AutoTLError(f"n_trials must be at least 1, got {self.n_trials}")
        if self.workers < 1:
            raise AutoTLError(f"workers must be at least 1, got {self.workers}")
        if self.keep_models < 0:
            raise AutoTLError(f"keep_models must be 0 or more, got {self.keep_models}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise AutoTLError(f"max_epochs must be at least 1, got {self.max_epochs}")
        parse_objectives(self.objectives)
        check_metric(self.metric)
        if self.drop_backbones is not None and self.drop_backbones < 0:
            raise AutoTLError(f"drop_backbones is a LogME margin and cannot be negative, got {self.drop_backbones}")
        make_sampler(self.sampler, self.seed)  # each raises on an unknown name
        make_pruner(self.pruner, 1)
        if self.scheduler not in POLICIES:
            raise AutoTLError(f"unknown scheduler {self.scheduler!r}: use {', '.join(POLICIES)}")
        if self.out is not None and Path(self.out).exists() and not Path(self.out).is_dir():
            raise AutoTLError(f"--out {self.out} is a file: pass a folder for the run (it is created if missing)")


def parse_objectives(objectives) -> tuple[str, ...]:
    """'accuracy' or 'accuracy,latency' (or a sequence of those names) as a checked tuple."""
    names = tuple(n.strip() for n in (objectives.split(",") if isinstance(objectives, str) else objectives))
    if names not in OBJECTIVES:
        raise AutoTLError(
            f"unknown objective {','.join(names)!r}: use accuracy (the default) or accuracy,latency "
            f"(the score is chosen with --metric)"
        )
    return names


def check_metric(metric: str | None) -> None:
    """Refuse a metric autotl cannot score trials by (None: not chosen)."""
    if metric is not None and metric not in METRICS:
        raise AutoTLError(f"unknown metric {metric!r}: use {', '.join(METRICS)}")


def study_goals(objectives, metric: str) -> tuple[str, ...]:
    """The study's objective names: the metric in place of "accuracy", then latency if asked."""
    return (metric,) + parse_objectives(objectives)[1:]


def directions(goals) -> list[str]:
    """Optuna's direction of each objective: latency is minimized, the score maximized."""
    return ["minimize" if goal == "latency" else "maximize" for goal in goals]
