"""Run a study: sample recipes, fine-tune each as a trial, keep the best model and the report.

The study lives in storage (SQLite inside the run directory by default), so rerunning
the same command resumes it: finished trials are kept and the sampler learns from them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import inspect
import logging
import math
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import sqlalchemy
import torch
from optuna.trial import TrialState

from .. import backbones, report
from ..data import ImageDataset, load_dataset
from ..errors import AutoTLError
from ..space import SearchSpace, TrialConfig, load_space
from ..train import TrialResult, fit, resolve_device
from ._best import add_onnx, keep_best
from ._plugins import make_pruner, make_sampler
from ._progress import Progress
from ._rank import MAX_IMAGES, kept, rank_backbones
from ._retrain import refit_best

STUDY_NAME = "autotl"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
REPORT_RESERVE_S = 10.0  # time kept back from --timeout to write the report and the model
LARGE_DATASET_REPORTS = 4  # a dataset of more training images than this many reports' worth is large
RANK_SCALE = 0.5  # backbones are ranked at this resolution scale at least, except on large datasets of small images
TRIAL_SHARE = 0.25  # on a large dataset, no trial may use more than this share of --timeout (its schedule fits it)
# A running trial beats every HEARTBEAT_S seconds; after GRACE_S seconds of silence it is stale.
HEARTBEAT_S = int(os.environ.get("AUTOTL_HEARTBEAT_S", 10))
GRACE_S = int(os.environ.get("AUTOTL_GRACE_S", 40))
WAIT_S = 5.0
OBJECTIVES = {("accuracy",): ["maximize"], ("accuracy", "latency"): ["maximize", "minimize"]}


@dataclass
class SearchResult:
    """What a search leaves: the study, where it ran, and the exported best model."""

    study: optuna.Study
    run_dir: Path
    model_dir: Path

    @property
    def best_trial(self):
        """The most accurate complete trial (in a multi-objective study: the most accurate on the front)."""
        return _best_complete(self.study)

    @property
    def best_value(self) -> float:
        return _score(self.best_trial)

    @property
    def best_params(self) -> dict:
        return self.best_trial.params

    @property
    def best_config(self) -> TrialConfig:
        return TrialConfig.from_dict(self.best_trial.user_attrs.get("config", {}))

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
    interrupt: threading.Event = field(default_factory=threading.Event)
    objectives: tuple = ("accuracy",)
    soup: bool = False
    compile: bool = False
    trial_budget: float | None = None  # seconds one trial may take, at most

    def suggest(self, trial) -> TrialConfig:
        """Sample the search space into a TrialConfig the caller may change before fitting."""
        return self.space.sample(trial)

    def fit(self, trial, config: TrialConfig) -> TrialResult:
        """Fine-tune with ``config``, reporting each epoch to ``trial``; raises TrialPruned when pruned."""
        if self.progress is not None:
            self.progress.trial_started(
                self.progress.position, trial.number, config, getattr(trial, "user_attrs", {}).get("warm_start")
            )
        on_epoch = (
            (lambda record, best: self.progress.epoch(record, best, config.max_epochs)) if self.progress else None
        )
        run = lambda cfg: fit(
            cfg,
            self.dataset,
            trial,
            device=self.device,
            weights_dir=self.weights_dir,  # noqa: E731
            deadline=self.deadline,
            seed=self.seed,
            on_epoch=on_epoch,
            interrupt=self.interrupt,
            soup=self.soup,
            compile=self.compile,
            time_budget=self.trial_budget,
            progress=self.progress is not None and self.progress.enabled,
        )
        try:
            result = run(config)
        except torch.cuda.OutOfMemoryError:
            if config.batch_size < 2:
                raise
            torch.cuda.empty_cache()
            config = dataclasses.replace(config, batch_size=config.batch_size // 2)
            trial.set_user_attr("out_of_memory_retry", f"CUDA out of memory; retried at batch size {config.batch_size}")
            if self.progress is not None:
                self.progress.say(f"    CUDA out of memory: retrying at batch size {config.batch_size}")
            result = run(config)
        for key, value in result.attrs().items():
            trial.set_user_attr(key, value)
        self.results[trial.number] = result
        return result


def default_objective(trial, ctx: SearchContext):
    """Fine-tune the sampled recipe; the score is the best epoch's validation accuracy.

    In a study of accuracy and latency, the pair (accuracy, milliseconds per image).
    """
    result = ctx.fit(trial, ctx.suggest(trial))
    if len(ctx.objectives) == 2:
        return result.metrics["accuracy"], result.latency_ms
    return result.metrics["accuracy"]


def parse_objectives(objectives) -> tuple[str, ...]:
    """'accuracy' or 'accuracy,latency' (or a sequence of those names) as a checked tuple."""
    names = tuple(n.strip() for n in (objectives.split(",") if isinstance(objectives, str) else objectives))
    if names not in OBJECTIVES:
        raise AutoTLError(f"unknown objective {','.join(names)!r}: use accuracy (the default) or accuracy,latency")
    return names


def run_name(dataset: str) -> str:
    """A run directory name from a dataset spec: builtin:digits -> digits, ~/data/birds -> birds."""
    name = dataset.split(":", 1)[1] if dataset.startswith("builtin:") else Path(dataset.rstrip("/")).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name) or "run"


def search(
    dataset: str,
    *,
    space: str = "default",
    n_trials: int = 20,
    timeout: float | None = None,
    max_epochs: int | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    objective=None,
    device: str = "auto",
    sampler: str = "tpe",
    pruner: str = "hyperband",
    storage: str | None = None,
    study_name: str = STUDY_NAME,
    workers: int = 1,
    weights_dir=None,
    val_fraction: float = 0.2,
    max_per_class: int | None = None,
    allow_outside_paths: bool = False,
    progress: bool = True,
    objectives="accuracy",
    rank: bool = True,
    warm_start: bool = True,
    drop_backbones: float | None = None,
    refit: bool = False,
    soup: bool = False,
    compile: bool = False,
    cache_dir=None,
    _worker: int | None = None,
) -> SearchResult:
    """Search fine-tuning recipes for ``dataset`` until the study holds ``n_trials`` finished trials.

    ``objective`` may be ``objective(trial, ctx) -> float`` (``ctx.suggest`` / ``ctx.fit``)
    or a plain Optuna ``objective(trial) -> float``; the default fine-tunes each sampled
    recipe. Rerunning with the same ``out`` (or ``storage`` and ``study_name``) resumes the
    study. ``workers`` > 1 runs that many processes on the one study (one GPU each when
    there are GPUs, CPU threads split between them otherwise).

    Before the first trial the space's backbones are ranked by LogME on their frozen
    features (``rank``); ``drop_backbones`` (a LogME margin) leaves out those that score
    that far below the best. The space's warm-start recipes on the best-ranked backbones
    are the first trials (``warm_start``). ``objectives="accuracy,latency"`` makes a
    multi-objective study (no pruning; the report shows the Pareto front). ``refit``
    retrains the best recipe on train + validation before the final export. ``soup``
    averages each trial's best epochs greedily (a model soup) when validation does not
    get worse. ``compile`` runs training steps through ``torch.compile`` (for a GPU).
    Images are decoded once into a cache under ``cache_dir`` (default
    ``~/.cache/autotl/images``) that later runs and the workers share. Returns a SearchResult.
    """
    started = time.time()
    if n_trials < 1:
        raise AutoTLError(f"n_trials must be at least 1, got {n_trials}")
    if workers < 1:
        raise AutoTLError(f"workers must be at least 1, got {workers}")
    run_dir = Path(out) if out is not None else Path("reports") / run_name(dataset)
    search_space = load_space(space)
    if max_epochs is not None:
        if max_epochs < 1:
            raise AutoTLError(f"max_epochs must be at least 1, got {max_epochs}")
        search_space.max_epochs = max_epochs
    torch_device = _device(device)
    # built before any work, so an unknown name is rejected at once; each worker samples with its own seed
    goals = parse_objectives(objectives)
    if drop_backbones is not None and drop_backbones < 0:
        raise AutoTLError(f"drop_backbones is a LogME margin and cannot be negative, got {drop_backbones}")
    study_sampler = make_sampler(sampler, seed if _worker is None else seed + 7919 * (_worker + 1))
    make_pruner(pruner, 1)  # an unknown name is rejected before any work
    backbones.check_available(search_space.backbones(), weights_dir)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise AutoTLError(f"--out {out} is a file: pass a folder for the run (it is created if missing)")
    data = load_dataset(
        dataset,
        val_fraction=val_fraction,
        seed=seed,
        max_per_class=max_per_class,
        allow_outside_paths=allow_outside_paths,
        image_size=largest_input(search_space),
        cache_dir=cache_dir,
        progress=progress and _worker is None,
    )
    study_pruner = make_pruner(pruner if len(goals) == 1 else "none", reports_in_a_trial(search_space, data))

    run_dir.mkdir(parents=True, exist_ok=True)
    model_dir = run_dir / "best_model"
    optuna.logging.set_verbosity(logging.ERROR)  # trial failures are shown by Progress, with their reason
    study = optuna.create_study(
        storage=open_storage(storage or f"sqlite:///{run_dir / 'study.db'}"),
        study_name=study_name,
        directions=OBJECTIVES[goals],
        load_if_exists=True,
        sampler=study_sampler,
        pruner=study_pruner,
    )
    if [d.name.lower() for d in study.directions] != OBJECTIVES[goals]:
        raise AutoTLError(
            f"{run_dir} holds a study of objective(s) {study.user_attrs.get('objectives', ['accuracy'])}, "
            f"not {list(goals)}: pass the same --objective, or --out with a new run directory"
        )
    show = Progress(n_trials, enabled=progress, prefix="" if _worker is None else f"[worker {_worker}] ")
    if _worker is None:
        _check_same_dataset(study, data, run_dir, same_path=storage is None)
        _describe(study, data, search_space, torch_device, n_trials, timeout, model_dir, goals, cache_dir)
        if not study.trials:
            _start(study, search_space, data, rank, warm_start, drop_backbones, weights_dir, torch_device, seed, show)
        finished = _count_finished(study)
        if finished >= n_trials:
            show.say(f"the study already has {finished} finished trials (asked for {n_trials}): nothing to run")
        else:
            show.say(
                f"searching {data.spec}: {len(data.classes)} classes, {data.count('train')} train / "
                f"{data.count('val')} val images; {finished} of {n_trials} trials already finished; "
                f"device {torch_device}; {workers} worker(s); run directory {run_dir}"
            )
    if study.user_attrs.get("backbone_ranking"):
        search_space.keep_backbones(kept(study.user_attrs["backbone_ranking"]))
    deadline = started + timeout - REPORT_RESERVE_S if timeout else None

    if workers > 1:
        _run_workers(
            workers,
            torch_device,
            dict(
                dataset=dataset,
                space=space,
                n_trials=n_trials,
                timeout=(deadline - time.time() + REPORT_RESERVE_S) if deadline else None,
                max_epochs=max_epochs,
                out=out if out is not None else run_dir,
                seed=seed,
                objective=objective,
                device=device,
                sampler=sampler,
                pruner=pruner,
                storage=storage,
                study_name=study_name,
                weights_dir=weights_dir,
                val_fraction=val_fraction,
                max_per_class=max_per_class,
                allow_outside_paths=allow_outside_paths,
                progress=progress,
                objectives=objectives,
                soup=soup,
                compile=compile,
                cache_dir=cache_dir,
            ),
        )
    else:
        ctx = SearchContext(
            search_space,
            data,
            torch_device,
            weights_dir,
            deadline,
            seed,
            show,
            objectives=goals,
            soup=soup,
            compile=compile,
            trial_budget=_trial_budget(timeout, search_space, data),
        )
        try:
            with _first_ctrl_c_sets(ctx.interrupt):
                _optimize(study, ctx, objective or default_objective, n_trials, deadline, run_dir, model_dir, show)
        except KeyboardInterrupt:
            report.write(study, run_dir / "report.html")
            raise
    if _worker is not None:
        return SearchResult(study=study, run_dir=run_dir, model_dir=model_dir)
    best = _best_complete(study)
    if best is None:
        report.write(study, run_dir / "report.html")
        errors = [t.user_attrs.get("error") for t in study.trials if t.user_attrs.get("error")]
        raise AutoTLError(
            "no trial completed"
            + (f"; the first error was: {errors[0]}" if errors else ": give a larger --timeout or --n-trials")
        )
    if refit:
        refit_best(study, best, data, model_dir, torch_device, weights_dir, seed, show.say)
    add_onnx(model_dir, data, show.say)
    report.write(study, run_dir / "report.html")
    show.say(
        f"best validation accuracy {_score(best):.4f} (trial #{best.number}); "
        f"model in {model_dir}; report in {run_dir / 'report.html'}"
    )
    return SearchResult(study=study, run_dir=run_dir, model_dir=model_dir)


def _start(study, space, data, rank, warm_start, drop_margin, weights_dir, device, seed, show) -> None:
    """Before the first trial: rank the backbones (LogME), then enqueue the warm-start recipes."""
    ranked = space.backbones()
    small = resolution_for_small_images(space, data)
    if rank and len(ranked) > 1:
        scales = space.values("resolution_scale")
        scale = small if small is not None else min([s for s in scales if s >= RANK_SCALE] or scales)
        show.say(
            f"ranking {len(ranked)} backbones by LogME on their frozen features "
            f"(up to {MAX_IMAGES} training images at x{scale:g} resolution)"
        )
        ranking = rank_backbones(
            ranked,
            data,
            resolution_scale=scale,
            weights_dir=weights_dir,
            device=device,
            seed=seed,
            drop_margin=drop_margin,
        )
        study.set_user_attr("backbone_ranking", ranking)
        for s in ranking["scores"]:
            show.say(
                f"  {s['rank']}. {s['backbone']}: LogME {s['logme']:.4f} ({s['seconds']:.1f} s)"
                + ("  dropped: far below the best" if s["dropped"] else "")
            )
        ranked = kept(ranking)  # search() narrows the space to these from the stored ranking
    if not warm_start:
        return
    if small is not None:
        show.say(f"the images are {data.store.size} px: the warm start trains at x{small:g} resolution, not larger")
    overrides = {} if small is None else {"resolution_scale": small}
    for label, params in space.warm_start_params(ranked, **overrides):
        study.enqueue_trial(params, user_attrs={"warm_start": label}, skip_if_exists=True)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage (SQLite file or a database server) with heartbeats.

    A trial whose process died (SIGKILL, a lost machine) stops beating; after the grace
    period any worker marks it failed, and its configuration is enqueued once more.
    """
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    url = _postgres_driver(url)
    try:
        storage = _rdb_storage(url, kwargs)
    except ImportError as error:
        raise AutoTLError(
            f"the storage {url.split(':')[0]} needs a driver: {error}; for PostgreSQL run 'pip install psycopg2-binary'"
        ) from error
    except Exception as error:  # noqa: BLE001 - SQLAlchemy's many connection errors
        raise AutoTLError(f"cannot open storage {url.split('@')[-1]}: {str(error).splitlines()[0]}") from error
    if storage.engine.name == "sqlite":
        _lock_sqlite_on_begin(storage.engine)
    return storage


def _rdb_storage(url: str, engine_kwargs: dict, attempts: int = 3) -> optuna.storages.RDBStorage:
    """Open the storage, creating its tables the first time.

    Two processes opening a fresh database at once (workers, machines, a watcher) race to
    create the schema and stamp its version; the loser gets an IntegrityError although the
    database is now fine, so it opens it again.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(attempts):
            try:
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=retry,
                )
            except (
                sqlalchemy.exc.IntegrityError,
                sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.ProgrammingError,
            ) as error:
                lost_the_race = isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in str(error)
                if not lost_the_race or attempt == attempts - 1:
                    raise
                time.sleep(0.5)


def _lock_sqlite_on_begin(engine) -> None:
    """Make each SQLite transaction take the write lock when it begins.

    Python's sqlite3 runs a transaction's SELECTs before its BEGIN, so two workers can both
    read an enqueued trial as WAITING and both claim it (Optuna's SELECT ... FOR UPDATE is a
    no-op on SQLite): the same trial then runs twice and the second tell fails. BEGIN
    IMMEDIATE serialises the read-then-write (SQLAlchemy's documented pysqlite recipe).
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy, not the driver, emits BEGIN

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed are dropped


def _postgres_driver(url: str) -> str:
    """A plain postgresql:// URL uses psycopg2 when that is the driver installed (SQLAlchemy 2.1 wants psycopg 3)."""
    if not url.startswith("postgresql://"):
        return url
    try:
        import psycopg  # noqa: F401

        return url
    except ImportError:
        return "postgresql+psycopg2://" + url[len("postgresql://") :]


def _optimize(study, ctx, user_objective, n_trials, deadline, run_dir, model_dir, show) -> None:
    """Run trials one at a time until the study holds ``n_trials`` finished ones.

    Trials running in other workers count towards the total, so that several workers
    end with exactly ``n_trials``; if one of them dies, its trial goes stale, is marked
    failed and retried, and the wait ends.
    """
    takes_ctx = len(inspect.signature(user_objective).parameters) >= 2

    def wrapped(trial):
        show.position = _count_finished(study) + 1
        try:
            value = user_objective(trial, ctx) if takes_ctx else user_objective(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted (Ctrl-C); its configuration runs again on the next run")
            study.enqueue_trial(trial.params, skip_if_exists=False)
            raise
        except Exception as error:
            trial.set_user_attr("error", f"{error.__class__.__name__}: {error}")
            raise
        result = ctx.results.pop(trial.number, None)
        if result is not None and value is not None:
            pair = isinstance(value, (tuple, list))
            try:
                with _first_ctrl_c_sets(ctx.interrupt, second_interrupts=False):  # never a half-replaced model
                    keep_best(
                        study,
                        result,
                        ctx.dataset,
                        model_dir,
                        trial.number,
                        value[0] if pair else value,
                        latency=value[1] if pair and len(value) > 1 else None,
                    )
            except Exception as error:
                trial.set_user_attr("error", f"exporting the model failed: {error.__class__.__name__}: {error}")
                raise
        return value

    def after_trial(study_, frozen):
        ctx.results.pop(frozen.number, None)
        reason = frozen.user_attrs.get("error") or frozen.user_attrs.get("end_reason", "")
        best = _best_complete(study_)
        show.trial_ended(
            frozen.number,
            frozen.state.name.lower(),
            _score(frozen),
            reason,
            _score(best),
            best.number if best else None,
        )
        try:
            report.write(study_, run_dir / "report.html")
        except Exception as error:  # noqa: BLE001 - a report bug must never stop a long search
            show.say(f"warning: the report could not be refreshed ({error.__class__.__name__}: {error})")

    while True:
        if ctx.interrupt.is_set():
            raise KeyboardInterrupt
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        finished = _count_finished(study)
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if finished >= n_trials:
            return
        if deadline is not None and time.time() + _room_for_a_trial(study) > deadline:
            return
        if finished + running >= n_trials:
            time.sleep(WAIT_S)  # the remaining trials run in other workers: wait for them
            continue
        study.optimize(wrapped, n_trials=1, callbacks=[after_trial], catch=(Exception,), gc_after_trial=True)


def _run_workers(workers: int, device, kwargs: dict) -> None:
    """Start ``workers`` processes on the study and wait for them all."""
    context = multiprocessing.get_context("spawn")
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes, interrupt = [], threading.Event()
    for i in range(workers):
        process = context.Process(target=_worker_main, args=(i, gpus, threads, kwargs), name=f"autotl-worker-{i}")
        process.start()
        processes.append(process)
    with _first_ctrl_c_sets(interrupt):  # each worker gets the Ctrl-C too and ends its own trial
        for process in processes:
            process.join()
    if interrupt.is_set():
        raise KeyboardInterrupt
    failed = [p.name for p in processes if p.exitcode not in (0, -signal.SIGKILL)]
    if failed:
        raise AutoTLError(
            f"worker(s) {', '.join(failed)} stopped with an error (see above); finished trials are "
            f"kept: rerun the same command to resume"
        )


@contextlib.contextmanager
def _first_ctrl_c_sets(event: threading.Event, second_interrupts: bool = True):
    """Turn the first Ctrl-C into ``event`` (the trial stops at its next step); a second one interrupts at once.

    With ``second_interrupts=False`` every Ctrl-C only sets ``event``: a finished trial's model is exported
    whole (a KeyboardInterrupt between moving the old model aside and the new one in would leave none).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if event.is_set() and second_interrupts:
            raise KeyboardInterrupt
        event.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_main(index: int, gpus: int, threads: int, kwargs: dict) -> None:
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    torch.set_num_threads(threads)
    try:
        search(**kwargs, workers=1, _worker=index)
    except KeyboardInterrupt:
        sys.exit(130)


def _device(device: str):
    try:
        return resolve_device(device)
    except (ValueError, RuntimeError) as error:
        raise AutoTLError(str(error)) from error


def _count_finished(study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _best_complete(study):
    """The complete trial with the best accuracy (the first objective), or None.

    With accuracy and latency, ties go to the faster trial, then the earlier one (as the report's best).
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    key = lambda t: (_score(t), -t.values[1] if len(t.values) > 1 else 0.0, -t.number)  # noqa: E731
    return max(complete, key=key) if complete else None


def _score(trial) -> float | None:
    """A trial's accuracy: its value, or its first value in a multi-objective study."""
    return trial.values[0] if trial is not None and trial.values else None


def _room_for_a_trial(study) -> float:
    """The longest wait so far from a trial's start to its first report: a new trial with less time left is not started.

    A trial that cannot report before the deadline only burns the budget. The wait includes
    building the model and any pass of the frozen prefix over the images; a trial that
    found the prefix's outputs cached counts only while no other trial has reported.
    """
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("history")]
    uncached = [t for t in trials if t.user_attrs.get("feature_cache", "off") != "hit"]
    return max((_first_report(t) for t in uncached or trials), default=0.0)


def _first_report(trial) -> float:
    """Seconds from the trial's start to its first report (older studies: its first epoch)."""
    seconds = trial.user_attrs.get("first_report_seconds")
    return float(seconds) if seconds is not None else float(trial.user_attrs["history"][0]["seconds"])


def largest_input(space: SearchSpace) -> int:
    """The largest image side any trial of ``space`` can ask for: the size images are cached at."""
    return max(
        backbones.preprocessing(name, scale).size
        for name in space.backbones()
        for scale in space.values("resolution_scale")
    )


def _trial_budget(timeout, space: SearchSpace, data: ImageDataset) -> float | None:
    """On a large dataset, no trial may take more than TRIAL_SHARE of the --timeout (small ones run to their end)."""
    return timeout * TRIAL_SHARE if timeout and _large(space, data) else None


def _large(space: SearchSpace, data: ImageDataset) -> bool:
    return data.count("train") >= LARGE_DATASET_REPORTS * min(space.values("report_every_images"))


def resolution_for_small_images(space: SearchSpace, data: ImageDataset) -> float | None:
    """On a large dataset of small images (all of Fashion-MNIST's 28-px scans), the smallest resolution scale that
    still doubles their side, when it is below the warm start's: its recipes then do not spend the budget on
    upscaled pixels. A small dataset (digits) keeps the warm start's resolution: it is cheap there, and better."""
    if not _large(space, data):
        return None
    start = space.start_from.get("resolution_scale", TrialConfig.resolution_scale)
    fits = [
        s
        for s in sorted(space.values("resolution_scale"))
        if all(backbones.preprocessing(b, s).size >= 2 * data.store.size for b in space.backbones())
    ]
    return fits[0] if fits and fits[0] < start else None


def reports_in_a_trial(space: SearchSpace, data: ImageDataset) -> int:
    """How many reports a trial that runs to the end makes: the pruner's largest resource."""
    every = max(1, min(space.values("report_every_images")))
    return space.max_epochs * max(1, math.ceil(data.count("train") / every))


def _check_same_dataset(study, data, run_dir, same_path: bool = True) -> None:
    """Refuse to mix datasets in one study (across machines the path may differ, the classes may not)."""
    known = study.user_attrs.get("dataset")
    if known and ((same_path and known.get("path") != data.spec) or known.get("classes") != list(data.classes)):
        raise AutoTLError(
            f"{run_dir} holds a study of dataset {known.get('path')!r}, not {data.spec!r}: "
            f"pass --out with a new run directory"
        )


def _describe(study, data, space, device, n_trials, timeout, model_dir, objectives, cache_dir) -> None:
    facts = dict(
        dataset=data.describe(),
        space=space.name,
        max_epochs=space.max_epochs,
        device=str(device),
        n_trials=n_trials,
        timeout=timeout,
        model_dir=str(model_dir),
        objectives=list(objectives),
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    if "started_at" not in study.user_attrs:
        facts["started_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for key, value in facts.items():
        study.set_user_attr(key, value)
