"""Run a study: sample recipes, fine-tune each as a trial, keep the best model and the report.

The study lives in storage (SQLite inside the run directory by default), so rerunning
the same command resumes it: finished trials are kept and the sampler learns from them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import logging
import math
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from .. import backbones, report
from ..data import ImageDataset, load_dataset
from ..errors import AutoTLError
from ..records import DatasetInfo, StudyRecord, TrialRecord
from ..space import SearchSpace, TrialConfig, load_space
from ..train import Budget, Setup, TrialResult, fit, resolve_device
from ..trials import best_trial, objective_names, score, study_metric
from ._best import add_onnx, keep_best, seen_probabilities
from ._ensemble import build_ensemble, ensemble_line
from ._options import BALANCED_WARM_START, IMBALANCE_RATIO, SearchOptions, directions, parse_objectives, study_goals
from ._plugins import make_pruner, make_sampler
from ._progress import Progress
from ._rank import MAX_IMAGES, kept, rank_backbones
from ._retrain import refit_best
from ._slices import Slices
from ._storage import open_storage
from ._trial_files import frozen, lineage, retry, save_model, state_file, stop_when_failing, tidy
from ._workers import first_ctrl_c_sets, run_workers

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
REPORT_RESERVE_S = 30.0  # time kept back from --timeout to write the model, its model.onnx (PyTorch's exporter
# traces the model: most of this time, RESULTS.md "Time after the search") and the report
LARGE_DATASET_REPORTS = 4  # a dataset of more training images than this many reports' worth is large
RANK_SCALE = 0.5  # backbones are ranked at this resolution scale at least, except on large datasets of small images
TRIAL_SHARE = 0.25  # on a large dataset, no trial may use more than this share of --timeout (its schedule fits it)
WAIT_S = 5.0
PAUSED_REPORT_S = 60.0  # the report is refreshed after a paused slice at most this often (always after a trial ends)
START_WAIT_S = 300.0  # how long a process waits for another that starts the same new study
WORKER_SEED_STEP = 7919  # worker i samples with seed + WORKER_SEED_STEP * (i + 1): no two draw the same recipes


@dataclass
class SearchResult:
    """What a search leaves: the study, where it ran, and the exported best model."""

    study: optuna.Study
    run_dir: Path
    model_dir: Path

    @property
    def best_trial(self):
        """The most accurate complete trial (in a multi-objective study: the most accurate on the front)."""
        return best_trial(self.study)

    @property
    def best_value(self) -> float:
        """The best trial's validation score, by the study's metric."""
        return score(self.best_trial, self.study)

    @property
    def metric(self) -> str:
        """What the study scores its trials by: accuracy, macro_f1 or balanced_accuracy."""
        return study_metric(self.study)

    @property
    def best_params(self) -> dict:
        return self.best_trial.params

    @property
    def best_config(self) -> TrialConfig:
        return TrialConfig.from_dict(TrialRecord.of(self.best_trial).config or {})

    @property
    def ensemble_dir(self) -> Path:
        return self.run_dir / "ensemble_model"

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report.html"


@dataclass
class SearchContext:
    """What a custom objective gets: ``suggest(trial)`` a config, ``fit(trial, config)`` a result."""

    space: SearchSpace
    dataset: ImageDataset
    setup: Setup
    run_dir: Path
    deadline: float | None = None
    seed: int = 0
    progress: Progress | None = None
    results: dict = field(default_factory=dict)
    interrupt: threading.Event = field(default_factory=threading.Event)
    objectives: tuple = ("accuracy",)
    metric: str = "accuracy"  # what a trial is scored by: its reports, its kept weights, its value
    soup: bool = False
    trial_budget: float | None = None  # seconds one trial may take, at most

    def suggest(self, trial) -> TrialConfig:
        """Sample the search space into a TrialConfig the caller may change before fitting."""
        return self.space.sample(trial)

    def fit(
        self, trial, config: TrialConfig, *, more: int | None = None, end_soon: bool = False, end_now: bool = False
    ) -> TrialResult:
        """Fine-tune with ``config``, reporting each report to ``trial``; raises TrialPruned when pruned.

        The training state is saved in the run directory after every report, so a retry of an interrupted
        trial continues where it stopped. The scheduler's slices: ``more`` reports and a pause
        (``result.paused``), ``end_soon``, a cool-down and the end, or ``end_now``, the end where it stands."""
        sliced = more is not None or end_soon or end_now
        stored = TrialRecord.of(frozen(trial), "config", "out_of_memory_retry")
        if stored.out_of_memory_retry and stored.config:  # an earlier slice ran out of CUDA memory: its batch size
            config = dataclasses.replace(config, batch_size=stored.config["batch_size"])
        if self.progress is not None and not sliced:
            self.progress.trial_started(self.progress.position, trial.number, config, TrialRecord.of(trial).warm_start)
        saved = state_file(self.run_dir, trial)
        budget = Budget(
            deadline=self.deadline,
            seconds=None if sliced else self.trial_budget,
            more=more,
            end_soon=end_soon,
            end_now=end_now,
            interrupt=self.interrupt,
        )
        try:
            result = self._fit(trial, config, saved, budget, sliced)
        except torch.cuda.OutOfMemoryError:
            if config.batch_size < 2:
                raise
            torch.cuda.empty_cache()
            saved.unlink(missing_ok=True)  # a state of the full batch size: not this run's
            config = dataclasses.replace(config, batch_size=config.batch_size // 2)
            message = f"CUDA out of memory; retried at batch size {config.batch_size}"
            TrialRecord(out_of_memory_retry=message).write(trial)
            if self.progress is not None:
                self.progress.say(f"    {message}")
            result = self._fit(trial, config, saved, budget, sliced)
        self.results[trial.number] = result
        return result

    def _fit(self, trial, config: TrialConfig, saved: Path, budget: Budget, sliced: bool) -> TrialResult:
        show = self.progress

        def on_report(entry, best, restored):
            if show is not None and not (sliced and restored):  # a slice shows only what it trains
                show.report(entry, config.max_epochs, restored)

        return fit(
            config,
            self.dataset,
            trial,
            setup=self.setup,
            budget=budget,
            seed=self.seed,
            number=lineage(trial),  # a retry trains as the trial it continues
            state_file=saved,
            soup=self.soup,
            on_report=on_report,
            metric=self.metric,
        )


def default_objective(trial, ctx: SearchContext):
    """Fine-tune the sampled recipe; the score is the kept weights' validation score by ``ctx.metric``.

    In a study of the score and latency, the pair (score, milliseconds per image).
    """
    result = ctx.fit(trial, ctx.suggest(trial))
    if len(ctx.objectives) == 2:
        return result.metrics[ctx.metric], result.record.latency_ms
    return result.metrics[ctx.metric]


def run_name(dataset: str) -> str:
    """A run directory name from a dataset spec: builtin:digits -> digits, ~/data/birds -> birds."""
    name = dataset.split(":", 1)[1] if dataset.startswith("builtin:") else Path(dataset.rstrip("/")).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name) or "run"


def search(dataset: str, *, objective=None, options: SearchOptions | None = None, **keywords) -> SearchResult:
    """Search fine-tuning recipes for ``dataset`` until the study holds ``n_trials`` finished trials.

    The options are the fields of SearchOptions, given as keywords (``n_trials=12``) or as
    ``options=SearchOptions(...)`` (keywords then replace its fields).
    ``objective`` may be ``objective(trial, ctx) -> float`` (``ctx.suggest`` / ``ctx.fit``)
    or a plain Optuna ``objective(trial) -> float``; the default fine-tunes each sampled
    recipe. Rerunning with the same ``out`` (or ``storage`` and ``study_name``) resumes the
    study. ``workers`` > 1 runs that many processes on the one study (one GPU each when
    there are GPUs, CPU threads split between them otherwise).

    Before the first trial the space's backbones are ranked by LogME on their frozen
    features (``rank``); ``drop_backbones`` (a LogME margin) leaves out those that score
    that far below the best. The space's warm-start recipes on the best-ranked backbones
    are the first trials (``warm_start``). ``metric`` is what trials are scored by:
    accuracy (the default), macro_f1 or balanced_accuracy (None: the space file's
    ``metric``, else accuracy). ``objectives="accuracy,latency"`` makes a
    multi-objective study of that score and latency (no pruning; the report shows the Pareto front). ``refit``
    retrains the best recipe on train + validation before the final export. ``soup``
    averages each trial's best reports greedily (a model soup) when validation does not
    get worse. ``compile`` runs training steps through ``torch.compile`` (for a GPU).
    Images are decoded once into a cache under ``cache_dir`` (default
    ``~/.cache/autotl/images``) that later runs and the workers share. Returns a SearchResult.
    """
    started = time.time()
    options = SearchOptions.from_keywords(options, **keywords)
    options.check()
    if objective is not None or parse_objectives(options.objectives) != ("accuracy",):
        options = dataclasses.replace(options, scheduler="off")  # slices need the default objective's trials
    setup = _load(dataset, options)
    study = _open_study(setup, options)
    show = Progress(options.n_trials, enabled=options.progress)
    _introduce(study, setup, options, show)
    _run_trials(study, setup, options, objective, started, show)
    return _finish(study, setup, options, show)


def _worker_search(dataset: str, options: SearchOptions, objective, index: int) -> None:
    """Worker ``index``'s share of a search: trials only, as the main process ranks, refits and exports."""
    started = time.time()
    setup = _load(dataset, options, worker=index)
    study = _open_study(setup, options, worker=index)
    show = Progress(options.n_trials, enabled=options.progress, prefix=f"[worker {index}] ")
    _run_trials(study, setup, options, objective, started, show)


@dataclass
class _Setup:
    """What one process of a search works on: the space, the images, the device and the run directory."""

    dataset: str  # as the caller named it: the workers load it again
    space: SearchSpace
    data: ImageDataset
    device: torch.device
    goals: tuple[str, ...]  # the objectives, checked: the metric, then latency if asked
    run_dir: Path

    @property
    def metric(self) -> str:
        return self.goals[0]

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "best_model"

    @property
    def ensemble_dir(self) -> Path:
        return self.run_dir / "ensemble_model"

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report.html"


def _load(dataset: str, options: SearchOptions, worker: int | None = None) -> _Setup:
    """Load the space, the device and the images; a missing backbone stops the search before any image is read."""
    space = load_space(options.space)
    if options.max_epochs is not None:
        space.max_epochs = options.max_epochs
    device = _device(options.device)
    backbones.check_available(space.backbones(), options.weights_dir)
    data = load_dataset(
        dataset,
        val_fraction=options.val_fraction,
        seed=options.seed,
        max_per_class=options.max_per_class,
        allow_outside_paths=options.allow_outside_paths,
        image_size=largest_input(space),
        cache_dir=options.cache_dir,
        progress=options.progress and worker is None,
    )
    run_dir = Path(options.out) if options.out is not None else Path("reports") / run_name(dataset)
    goals = study_goals(options.objectives, options.metric or space.metric or "accuracy")
    return _Setup(dataset, space, data, device, goals, run_dir)


def _open_study(setup: _Setup, options: SearchOptions, worker: int | None = None) -> optuna.Study:
    """Create the study in its storage, or resume it; a study of other objectives is refused."""
    seed = options.seed if worker is None else options.seed + WORKER_SEED_STEP * (worker + 1)
    # a multi-objective study prunes nothing; with a scheduler, "not worth another slice" is its own
    pruner = options.pruner if len(setup.goals) == 1 and options.scheduler == "off" else "none"
    setup.run_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(logging.ERROR)  # trial failures are shown by Progress, with their reason
    study = optuna.create_study(
        storage=open_storage(options.storage or f"sqlite:///{setup.run_dir / 'study.db'}"),
        study_name=options.study_name,
        directions=directions(setup.goals),
        load_if_exists=True,
        sampler=make_sampler(options.sampler, seed),
        pruner=make_pruner(pruner, reports_in_a_trial(setup.space, setup.data)),
    )
    same = [d.name.lower() for d in study.directions] == directions(setup.goals)
    if not same or (study.metric_names is not None and list(study.metric_names) != list(setup.goals)):
        raise AutoTLError(
            f"{setup.run_dir} holds a study of objective(s) {objective_names(study)}, "
            f"not {list(setup.goals)}: pass the same --objective and --metric, or --out with a new run directory"
        )
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(setup.goals))  # optuna-dashboard and the report name the objectives so
    return study


def _introduce(study, setup: _Setup, options: SearchOptions, show: Progress) -> None:
    """Before the trials: refuse another dataset's study, record the run, rank and warm-start a new study."""
    _check_same_dataset(study, setup.data, setup.run_dir, same_path=options.storage is None)
    _describe(study, setup, options)
    if options.metric is None and setup.space.metric is None:
        _imbalance_hint(setup.data, show)
    if not study.trials and _first_to_start(study, show):
        try:
            _start(study, setup, options, show)
        finally:
            _started(study)
    finished = _count_finished(study)
    if finished >= options.n_trials:
        show.say(f"the study already has {finished} finished trials (asked for {options.n_trials}): nothing to run")
    else:
        data = setup.data
        show.say(
            f"searching {data.spec}: {len(data.classes)} classes, {data.count('train')} train / "
            f"{data.count('val')} val images; {finished} of {options.n_trials} trials already finished; "
            f"device {setup.device}; {options.workers} worker(s); run directory {setup.run_dir}"
        )


def _imbalance_hint(data: ImageDataset, show: Progress) -> None:
    """One line when the largest class has over IMBALANCE_RATIO times the images of the smallest: accuracy then
    rewards a model that predicts the large classes, and the user may want every class to count."""
    counts = data.class_counts("train")
    if imbalanced(data):
        largest, smallest = data.classes[counts.argmax()], data.classes[counts.argmin()]
        show.say(
            f"note: the classes are imbalanced ({largest!r} has {counts.max()} training images, {smallest!r} "
            f"{counts.min()}) and trials are scored by accuracy; pass --metric macro_f1 to weigh every class alike"
        )


def imbalanced(data: ImageDataset) -> bool:
    """Whether the largest class has over IMBALANCE_RATIO times the training images of the smallest."""
    counts = data.class_counts("train")
    return bool(counts.max() > IMBALANCE_RATIO * max(counts.min(), 1))


def _run_trials(study, setup: _Setup, options: SearchOptions, objective, started: float, show: Progress) -> None:
    """Run the trials in this process, or in ``options.workers`` processes that share the study."""
    ranking = StudyRecord.of(study).backbone_ranking
    if ranking is not None and ranking.scores:
        setup.space.keep_backbones(kept(ranking))
    deadline = started + options.timeout - REPORT_RESERVE_S if options.timeout else None
    if options.workers == 1:
        _run_trials_here(study, setup, options, objective, deadline, show)
        return
    timeout = (deadline - time.time() + REPORT_RESERVE_S) if deadline else None  # the workers' deadline is ours
    each = dataclasses.replace(options, workers=1, timeout=timeout, out=setup.run_dir)
    run_workers(options.workers, setup.device, _worker_search, (setup.dataset, each, objective))


def _run_trials_here(study, setup: _Setup, options: SearchOptions, objective, deadline, show: Progress) -> None:
    """Run trials in this process; the first Ctrl-C ends the running trial, and the report is written before leaving."""
    compute = Setup(
        setup.device, options.weights_dir, compile=options.compile, progress=options.progress and show.enabled
    )
    ctx = SearchContext(
        setup.space,
        setup.data,
        compute,
        setup.run_dir,
        deadline,
        options.seed,
        show,
        objectives=setup.goals,
        metric=setup.metric,
        soup=options.soup,
        trial_budget=_trial_budget(options.timeout, setup.space, setup.data),
    )
    try:
        with first_ctrl_c_sets(ctx.interrupt):
            runner = _TrialRunner(study, ctx, objective or default_objective, setup, show, options)
            if options.scheduler == "off":
                _optimize(study, ctx, runner, options.n_trials, deadline)
            else:
                slices = Slices(
                    study,
                    ctx,
                    runner,
                    n_trials=options.n_trials,
                    deadline=deadline,
                    policy=options.scheduler,
                    room=_room_for_a_trial,
                )
                slices.run()
    except KeyboardInterrupt:
        report.write(study, setup.report_path)
        raise


def _finish(study, setup: _Setup, options: SearchOptions, show: Progress) -> SearchResult:
    """After the trials: fail when none completed, else refit if asked, add model.onnx and write the report."""
    best = best_trial(study)
    if best is None:
        report.write(study, setup.report_path)
        errors = [r.error for r in (TrialRecord.of(t) for t in study.trials) if r.error]
        raise AutoTLError(
            "no trial completed"
            + (f"; the first error was: {errors[0]}" if errors else ": give a larger --timeout or --n-trials")
        )
    if options.refit:
        compute = Setup(setup.device, options.weights_dir, progress=options.progress)
        refit_best(study, best, setup.data, setup.model_dir, compute, options.seed, show.say)
    add_onnx(setup.model_dir, setup.data, show.say)
    chosen = (
        build_ensemble(study, setup.run_dir, setup.data, options.keep_models, show.say) if options.ensemble else None
    )
    if chosen is not None and chosen.written:
        add_onnx(setup.ensemble_dir, setup.data, show.say)
    report.write(study, setup.report_path)
    show.say(
        f"best validation {setup.metric} {score(best, study):.4f} (trial #{best.number}); "
        f"model in {setup.model_dir}; report in {setup.report_path}"
    )
    if chosen is not None:
        show.say(ensemble_line(chosen, setup.ensemble_dir))
    return SearchResult(study=study, run_dir=setup.run_dir, model_dir=setup.model_dir)


def _start(study, setup: _Setup, options: SearchOptions, show: Progress) -> None:
    """Before the first trial: rank the backbones (LogME), then enqueue the warm-start recipes."""
    space, data = setup.space, setup.data
    ranked = space.backbones()
    small = resolution_for_small_images(space, data)
    if options.rank and len(ranked) > 1:
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
            weights_dir=options.weights_dir,
            device=setup.device,
            seed=options.seed,
            drop_margin=options.drop_backbones,
        )
        StudyRecord(backbone_ranking=ranking).write(study)
        for s in ranking.scores:
            show.say(
                f"  {s.rank}. {s.backbone}: LogME {s.logme:.4f} ({s.seconds:.1f} s)"
                + ("  dropped: far below the best" if s.dropped else "")
            )
        ranked = kept(ranking)  # _run_trials narrows the space to these from the stored ranking
    if not options.warm_start:
        return
    if small is not None:
        show.say(f"the images are {data.store.size} px: the warm start trains at x{small:g} resolution, not larger")
    overrides = {} if small is None else {"resolution_scale": small}
    if setup.metric != "accuracy" and imbalanced(data) and BALANCED_WARM_START in space.values("class_balance"):
        overrides["class_balance"] = BALANCED_WARM_START  # measured best for macro-F1 (benchmarks/imbalance.py)
        show.say(f"the warm start trains with class_balance {BALANCED_WARM_START}: the classes are imbalanced")
    for label, params in space.warm_start_params(ranked, **overrides):
        study.enqueue_trial(params, user_attrs=TrialRecord(warm_start=label).attrs(), skip_if_exists=True)


def _lock_name(study) -> str:
    return f"{study.study_name}:starting"


def _first_to_start(study, show: Progress) -> bool:
    """Whether this process ranks the backbones and enqueues the warm start of a new study: of several machines
    started at once on one database, the one that creates the study's lock (a study name is unique in the
    storage). The others wait for its trials; if none come in START_WAIT_S (it died), they start it themselves."""
    try:
        study._storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], _lock_name(study))
        return True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    show.say("another process is starting this study (ranking the backbones): waiting for its warm start")
    waited = time.time() + START_WAIT_S
    while time.time() < waited:
        time.sleep(WAIT_S)
        if study.get_trials(deepcopy=False) or not _locked(study):
            return False
    return True


def _locked(study) -> bool:
    try:
        study._storage.get_study_id_from_name(_lock_name(study))
        return True
    except KeyError:
        return False


def _started(study) -> None:
    """The warm start is enqueued: the lock goes (a later process sees the trials)."""
    try:
        optuna.delete_study(study_name=_lock_name(study), storage=study._storage)
    except KeyError:
        pass


def _optimize(study, ctx, runner, n_trials, deadline) -> None:
    """Run trials one at a time until the study holds ``n_trials`` finished ones.

    Trials running in other workers count towards the total, so that several workers
    end with exactly ``n_trials``; if one of them dies, its trial goes stale, is marked
    failed and retried (continuing its saved state), and the wait ends.
    """
    while True:
        if ctx.interrupt.is_set():
            raise KeyboardInterrupt
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        stop_when_failing(study)
        finished = _count_finished(study)
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if finished >= n_trials:
            return
        if deadline is not None and time.time() + _room_for_a_trial(study) > deadline:
            return
        if finished + running >= n_trials:
            time.sleep(WAIT_S)  # the remaining trials run in other workers: wait for them
            continue
        study.optimize(runner, n_trials=1, callbacks=[runner.ended], catch=(Exception,), gc_after_trial=True)


class _TrialRunner:
    """One trial of the search: the objective, then the best model and the trial's weights kept; after it ends,
    files no trial can use deleted, the progress line and the report."""

    def __init__(self, study, ctx, objective, setup: _Setup, show: Progress, options: SearchOptions):
        self.study, self.ctx, self.objective, self.setup, self.show = study, ctx, objective, setup, show
        self.keep_models, self.ensemble = options.keep_models, options.ensemble
        self.reported = 0.0  # when the report was last written
        self.takes_ctx = len(inspect.signature(objective).parameters) >= 2

    def __call__(self, trial):
        self.show.position = _count_finished(self.study) + 1
        try:
            value = self.objective(trial, self.ctx) if self.takes_ctx else self.objective(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            self._interrupted(trial)
            raise
        except Exception as error:
            TrialRecord(error=f"{error.__class__.__name__}: {error}").write(trial)
            raise
        result = self.ctx.results.pop(trial.number, None)
        if result is not None and value is not None:
            try:
                self.keep(trial, result, value)
            except Exception as error:
                TrialRecord(error=f"exporting the model failed: {error.__class__.__name__}: {error}").write(trial)
                raise
        return value

    def _interrupted(self, trial) -> None:
        """Ctrl-C: the trial fails, and a retry is queued that continues its last saved report (or starts over)."""
        stored = frozen(trial)
        saved = state_file(self.setup.run_dir, stored).is_file()
        next_run = "continues it from its last saved report" if saved else "runs its recipe again"
        TrialRecord(error=f"interrupted (Ctrl-C); the next run {next_run}").write(trial)
        retry(self.study, stored)

    def keep(self, trial, result, value) -> None:
        """Export the model if it is the best so far; keep the trial's weights for ``export --trial``."""
        pair = isinstance(value, (tuple, list))
        with first_ctrl_c_sets(self.ctx.interrupt, second_interrupts=False):  # never a half-replaced model
            keep_best(
                self.study,
                result,
                self.ctx.dataset,
                self.setup.model_dir,
                trial.number,
                value[0] if pair else value,
                latency=value[1] if pair and len(value) > 1 else None,
            )
            if self.keep_models:
                seen = seen_probabilities(result, self.ctx.dataset) if self.ensemble else None
                save_model(self.setup.run_dir, trial, result, seen)

    def ended(self, study, trial) -> None:
        self.ctx.results.pop(trial.number, None)
        tidy(study, self.setup.run_dir, self.keep_models)
        record, best = TrialRecord.of(trial), best_trial(study)
        self.show.trial_ended(
            trial.number,
            trial.state.name.lower(),
            score(trial, study),
            record.error or record.end_reason or "",
            score(best, study),
            best.number if best else None,
        )
        self._refresh_report()

    def paused(self) -> None:
        """A slice ended with the trial paused: the report shows it, refreshed at most every PAUSED_REPORT_S
        (rendering it takes about a second; slices come every few seconds)."""
        if time.time() - self.reported >= PAUSED_REPORT_S:
            self._refresh_report()

    def _refresh_report(self) -> None:
        self.reported = time.time()
        try:
            report.write(self.study, self.setup.report_path)
        except Exception as error:  # noqa: BLE001 - a report bug must never stop a long search
            self.show.say(f"warning: the report could not be refreshed ({error.__class__.__name__}: {error})")


def _device(device: str):
    try:
        return resolve_device(device)
    except (ValueError, RuntimeError) as error:
        raise AutoTLError(str(error)) from error


def _count_finished(study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _room_for_a_trial(study) -> float:
    """The longest wait so far from a trial's start to its first report: a new trial with less time left is not started.

    A trial that cannot report before the deadline only burns the budget. The wait includes
    building the model and any pass of the frozen prefix over the images; a trial that
    found the prefix's outputs cached counts only while no other trial has reported.
    """
    records = [r for r in (TrialRecord.of(t) for t in study.get_trials(deepcopy=False)) if r.history]
    uncached = [r for r in records if r.feature_cache != "hit"]
    return max((_first_report(r) for r in uncached or records), default=0.0)


def _first_report(record: TrialRecord) -> float:
    """Seconds from the trial's start to its first report (a trial still running: its first report's own time)."""
    seconds = record.first_report_seconds if record.first_report_seconds is not None else record.history[0].seconds
    return seconds or 0.0


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
    known = StudyRecord.of(study).dataset
    if known and ((same_path and known.path != data.spec) or known.classes != list(data.classes)):
        raise AutoTLError(
            f"{run_dir} holds a study of dataset {known.path!r}, not {data.spec!r}: pass --out with a new run directory"
        )


def _describe(study, setup: _Setup, options: SearchOptions) -> None:
    """Record the run's settings in the study, for the report (the first start time is kept)."""
    StudyRecord(
        dataset=DatasetInfo(**setup.data.describe()),
        space=setup.space.name,
        max_epochs=setup.space.max_epochs,
        device=str(setup.device),
        n_trials=options.n_trials,
        timeout=options.timeout,
        model_dir=str(setup.model_dir),
        cache_dir=str(options.cache_dir) if options.cache_dir is not None else None,
    ).write(study)
    if StudyRecord.of(study).started_at is None:  # the first run's start is kept
        StudyRecord(started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")).write(study)
