"""Run a study: sample recipes, fine-tune each as a trial, keep the best model and the report.

The study lives in storage (SQLite inside the run directory by default), so rerunning
the same command resumes it: finished trials are kept and the sampler learns from them.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .. import backbones, report
from ..data import ImageDataset, load_dataset
from ..errors import AutoTLError
from ..space import SearchSpace, TrialConfig, load_space
from ..train import TrialResult, fit, resolve_device
from ._best import keep_best
from ._plugins import make_pruner, make_sampler
from ._progress import Progress

STUDY_NAME = "autotl"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
REPORT_RESERVE_S = 10.0  # time kept back from --timeout to write the report and the model


@dataclass
class SearchResult:
    """What a search leaves: the study, where it ran, and the exported best model."""

    study: optuna.Study
    run_dir: Path
    model_dir: Path

    @property
    def best_value(self) -> float:
        return self.study.best_value

    @property
    def best_params(self) -> dict:
        return self.study.best_params

    @property
    def best_config(self) -> TrialConfig:
        return TrialConfig.from_dict(self.study.best_trial.user_attrs.get("config", {}))

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report.html"


@dataclass
class SearchContext:
    """What a custom objective gets: ``suggest(trial)`` a config, ``fit(trial, config)`` a result."""

    space: SearchSpace
    dataset: ImageDataset
    device: object
    weights_dir: object = None
    deadline: float | None = None
    seed: int = 0
    progress: Progress | None = None
    results: dict = field(default_factory=dict)

    def suggest(self, trial) -> TrialConfig:
        """Sample the search space into a TrialConfig the caller may change before fitting."""
        return self.space.sample(trial)

    def fit(self, trial, config: TrialConfig) -> TrialResult:
        """Fine-tune with ``config``, reporting each epoch to ``trial``; raises TrialPruned when pruned."""
        if self.progress is not None:
            self.progress.trial_started(self.progress.position, trial.number, config)
        on_epoch = (lambda record, best: self.progress.epoch(record, best, config.max_epochs)) if self.progress else None
        result = fit(config, self.dataset, trial, device=self.device, weights_dir=self.weights_dir,
                     deadline=self.deadline, seed=self.seed, on_epoch=on_epoch)
        for key, value in result.attrs().items():
            trial.set_user_attr(key, value)
        self.results[trial.number] = result
        return result


def default_objective(trial, ctx: SearchContext) -> float:
    """Fine-tune the sampled recipe; the score is the best epoch's validation accuracy."""
    return ctx.fit(trial, ctx.suggest(trial)).metrics["accuracy"]


def run_name(dataset: str) -> str:
    """A run directory name from a dataset spec: builtin:digits -> digits, ~/data/birds -> birds."""
    name = dataset.split(":", 1)[1] if dataset.startswith("builtin:") else Path(dataset.rstrip("/")).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name) or "run"


def search(dataset: str, *, space: str = "default", n_trials: int = 20, timeout: float | None = None,
           max_epochs: int | None = None, out: str | Path | None = None, seed: int = 0, objective=None,
           device: str = "auto", sampler: str = "tpe", pruner: str = "hyperband", storage: str | None = None,
           weights_dir=None, val_fraction: float = 0.2, max_per_class: int | None = None,
           progress: bool = True) -> SearchResult:
    """Search fine-tuning recipes for ``dataset`` until the study holds ``n_trials`` finished trials.

    ``objective`` may be ``objective(trial, ctx) -> float`` (``ctx.suggest`` / ``ctx.fit``)
    or a plain Optuna ``objective(trial) -> float``; the default fine-tunes each sampled
    recipe. Rerunning with the same ``out`` resumes the study. Returns a SearchResult.
    """
    started = time.time()
    if n_trials < 1:
        raise AutoTLError(f"n_trials must be at least 1, got {n_trials}")
    run_dir = Path(out) if out is not None else Path("reports") / run_name(dataset)
    search_space = load_space(space)
    if max_epochs is not None:
        if max_epochs < 1:
            raise AutoTLError(f"max_epochs must be at least 1, got {max_epochs}")
        search_space.max_epochs = max_epochs
    torch_device = _device(device)
    backbones.check_available(search_space.backbones(), weights_dir)
    data = load_dataset(dataset, val_fraction=val_fraction, seed=seed, max_per_class=max_per_class)

    run_dir.mkdir(parents=True, exist_ok=True)
    model_dir = run_dir / "best_model"
    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(storage=storage or f"sqlite:///{run_dir / 'study.db'}", study_name=STUDY_NAME,
                                direction="maximize", load_if_exists=True,
                                sampler=make_sampler(sampler, seed),
                                pruner=make_pruner(pruner, search_space.max_epochs))
    _check_same_dataset(study, data, run_dir)
    _describe(study, data, search_space, torch_device, n_trials, timeout, model_dir)
    if not study.trials:
        study.enqueue_trial(search_space.start_params(), skip_if_exists=True)

    finished = _count_finished(study)
    show = Progress(n_trials, enabled=progress)
    deadline = started + timeout - REPORT_RESERVE_S if timeout else None
    ctx = SearchContext(search_space, data, torch_device, weights_dir, deadline, seed, show)
    user_objective = objective or default_objective
    takes_ctx = len(inspect.signature(user_objective).parameters) >= 2
    if finished >= n_trials:
        show.say(f"the study in {run_dir} already has {finished} finished trials (asked for {n_trials}): nothing to run")
    else:
        show.say(f"searching {data.spec}: {len(data.classes)} classes, {data.count('train')} train / "
                 f"{data.count('val')} val images; {finished} of {n_trials} trials already finished; "
                 f"device {torch_device}; run directory {run_dir}")

    def wrapped(trial):
        show.position = _count_finished(study) + 1
        try:
            value = user_objective(trial, ctx) if takes_ctx else user_objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            trial.set_user_attr("error", f"{error.__class__.__name__}: {error}")
            raise
        result = ctx.results.pop(trial.number, None)
        if result is not None and value is not None and _beats_best(study, value):
            keep_best(study, result, data, model_dir, trial.number, value)
        return value

    def after_trial(study_, frozen):
        ctx.results.pop(frozen.number, None)
        reason = frozen.user_attrs.get("end_reason") or frozen.user_attrs.get("error", "")
        best = _best_complete(study_)
        show.trial_ended(frozen.number, frozen.state.name.lower(), frozen.value, reason,
                         best.value if best else None, best.number if best else None)
        report.write(study_, run_dir / "report.html")
        if _count_finished(study_) >= n_trials:
            study_.stop()
        if deadline is not None and time.time() + _typical_epoch(study_) > deadline:
            study_.stop()

    if finished < n_trials:
        study.optimize(wrapped, n_trials=n_trials - finished,
                       timeout=(deadline - time.time()) if deadline else None,
                       callbacks=[after_trial], catch=(Exception,), gc_after_trial=True)
    report.write(study, run_dir / "report.html")
    if _best_complete(study) is None:
        errors = [t.user_attrs.get("error") for t in study.trials if t.user_attrs.get("error")]
        raise AutoTLError("no trial completed" + (f"; the first error was: {errors[0]}" if errors else
                                                  ": give a larger --timeout or --n-trials"))
    show.say(f"best validation accuracy {study.best_value:.4f} (trial #{study.best_trial.number}); "
             f"model in {model_dir}; report in {run_dir / 'report.html'}")
    return SearchResult(study=study, run_dir=run_dir, model_dir=model_dir)


def _device(device: str):
    try:
        return resolve_device(device)
    except (ValueError, RuntimeError) as error:
        raise AutoTLError(str(error)) from error


def _count_finished(study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _best_complete(study):
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


def _beats_best(study, value: float) -> bool:
    best = _best_complete(study)
    return best is None or value > best.value


def _typical_epoch(study) -> float:
    """The median epoch's seconds so far: a new trial with less time left than this is not started."""
    seconds = sorted(r["seconds"] for t in study.get_trials(deepcopy=False) for r in t.user_attrs.get("history", []))
    return seconds[len(seconds) // 2] if seconds else 0.0


def _check_same_dataset(study, data, run_dir) -> None:
    known = study.user_attrs.get("dataset")
    if known and (known.get("path") != data.spec or known.get("classes") != list(data.classes)):
        raise AutoTLError(f"{run_dir} holds a study of dataset {known.get('path')!r}, not {data.spec!r}: "
                          f"pass --out with a new run directory")


def _describe(study, data, space, device, n_trials, timeout, model_dir) -> None:
    facts = dict(dataset=data.describe(), space=space.name, max_epochs=space.max_epochs, device=str(device),
                 n_trials=n_trials, timeout=timeout, model_dir=str(model_dir))
    if "started_at" not in study.user_attrs:
        facts["started_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for key, value in facts.items():
        study.set_user_attr(key, value)
