"""The fine-tuning loop: a run goes report by report from its state until a stop, read top to bottom.

``fit`` builds the run (``_build``), continues its saved state when there is one
(``_state``), then repeats: train one report's steps, check the model on the validation
check, decide (keep the best report, report to the trial, prune, shorten the schedule to
the time left) and save the state; until the schedule ends, the time does, the pruner
stops it, or it is paused (a scheduler's slice of several reports checks its last and each epoch's end:
the scheduler reads only its last, and each check is time taken from training). ``finish``
scores the kept weights on all of validation.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import backbones
from ..data import ImageDataset, augment, mixup
from ..records import METRICS, Metrics, Report, TrialRecord, report_score
from ..space import TrialConfig
from ..trials import Standing, best
from ._build import Run, Setup, build
from ._cost import latency_ms, model_megabytes
from ._device import BAR_DELAY_S, autocast, bars, channels_last
from ._evaluate import evaluate
from ._memory import keep_freed_memory
from ._soup import SOUP_REPORTS, greedy_soup
from ._state import StateError, TrainState, load_state, save_state
from .class_balance import balanced_order
from .class_balance import loss as class_loss

SAVE_SHARE = 0.05  # saving the state may cost at most this share of the training time


@dataclass
class Budget:
    """When a run stops before its schedule ends."""

    deadline: float | None = None  # a time.time(): no report may end after it (the search's --timeout)
    seconds: float | None = None  # the run's own time, over all its processes: its schedule is shortened to fit
    reports: int | None = None  # end after this many reports of the schedule (to repeat a trial that ended early)
    pause_after: int | None = None  # save the state and return, unfinished, after this report
    more: int | None = None  # a slice: save the state and return, unfinished, after this many more reports
    end_soon: bool = False  # end the run after a cool-down (a search's scheduler finishing a trial it paused)
    end_now: bool = False  # end a saved run where it stands: its kept weights scored, no more training (an ensemble's
    # member, or a search's best trial with no time for a cool-down)
    interrupt: threading.Event | None = None  # set by a Ctrl-C handler: the run stops at its next step


@dataclass
class TrialResult:
    """What one run produced: its record (as the study stores it) and, unless paused, the kept weights."""

    config: TrialConfig
    record: TrialRecord
    classes: list[str]
    preprocessing: backbones.Preprocessing
    model: torch.nn.Module | None = field(default=None, repr=False)
    unsouped_state: dict | None = field(default=None, repr=False)  # the best report's weights, when souped
    feature_seconds: float = 0.0  # the frozen prefix's passes over the training images that this run computed
    paused: bool = False
    # the kept weights' softmax on every validation image (the split's order), when finishing computed it
    val_probabilities: np.ndarray | None = field(default=None, repr=False)

    @property
    def metrics(self) -> dict:
        """The kept weights on the validation split: accuracy, macro_f1, balanced_accuracy and loss."""
        return dataclasses.asdict(self.record.metrics) if self.record.metrics is not None else {}

    @property
    def history(self) -> list[Report]:
        """The curve: one ``autotl.records.Report`` per report."""
        return self.record.history


def fit(
    config: TrialConfig,
    dataset: ImageDataset,
    trial: optuna.Trial | None = None,
    *,
    setup: Setup | None = None,
    budget: Budget | None = None,
    seed: int = 0,
    number: int | None = None,
    state_file: Path | None = None,
    keep_last: bool = False,
    soup: bool = False,
    on_report=None,
    metric: str = "accuracy",
) -> TrialResult:
    """Fine-tune ``config.backbone`` on ``dataset`` for up to ``config.max_epochs`` epochs, report by report.

    A report comes after every ``config.report_every_images`` training images (at least once
    an epoch). Each is reported to ``trial`` (not in a multi-objective study: Optuna cannot
    prune those), which stores the run's record; ``optuna.TrialPruned`` is raised when its
    pruner says so or the loss stops being finite. ``number`` seeds the run with ``seed``
    (default: the trial's number). ``state_file``: the run's state is saved there after
    every report and, when the file holds a state of this run, continued from it (one that
    is damaged or of another run is warned about and trained over). ``keep_last`` keeps the
    last report's weights instead of the best (a refit, whose validation images it trains
    on); ``soup`` averages the best reports' weights greedily when validation does not get
    worse. ``on_report(report, best, restored)`` sees each report, the saved ones too. ``metric``
    (accuracy, macro_f1 or balanced_accuracy) is what the reports are scored by: it picks the kept
    report and is what the trial and its pruner see.
    """
    started = time.time()
    setup, budget = setup or Setup(), budget or Budget()
    if setup.device.type == "cpu":
        keep_freed_memory()  # activations are not paged in afresh each step (benchmarks/allocator.py)
    if number is None:
        number = trial.number if trial is not None else 0
    identity = dict(
        config=config.to_dict(),
        dataset=dict(spec=dataset.spec, classes=list(dataset.classes), train=dataset.count("train")),
        seed=seed * 1000 + number,
        reports=budget.reports,
        keep_last=keep_last,
        soup=soup,
        **({"metric": metric} if metric != "accuracy" else {}),  # a state saved before --metric is the same run
    )
    make = lambda: build(config, dataset, setup, seed=identity["seed"], reports=budget.reports)  # noqa: E731
    run, state = _start(make, state_file, identity)
    pause_at = budget.pause_after if budget.more is None else state.report + budget.more
    if budget.end_soon:
        run.plan.end_soon(state.report, state.step, config.lr_schedule, config.probe_lr_scale)
    clock = _Clock(started, state.wall_seconds, budget)
    duty = _Duty(trial, keep_last, soup, on_report, clock, metric)
    saves = _Saves(state_file, identity, since=started)
    duty.begin(run, state)
    if budget.end_now:
        if not state.report:
            raise StateError("no saved report to end the run at")
        return finish(run, state, duty, f"ended where it stood after report {state.report}, its best weights kept")
    try:
        while state.report < run.plan.last_report:
            try:
                trained = train_report(run, state, budget)
            except _Stop as stop:
                stop_pruned(run, state, duty, str(stop))
            if trained is None:
                return finish(run, state, duty, _out_of_time(run, state, duty))
            decide(run, state, check(run, state, trained, _checked(run, state, budget, pause_at)), duty)
            pause = state.report == pause_at and state.report < run.plan.last_report
            saves.after_report(run, dataclasses.replace(state, wall_seconds=clock.wall()), always=pause)
            if pause:
                return _result(run, state, duty, f"paused after report {state.report}", paused=True)
    except KeyboardInterrupt:
        duty.record(run, state, f"interrupted during report {state.report + 1}")
        raise
    return finish(run, state, duty)


def _checked(run: Run, state: TrainState, budget: Budget, pause_at: int) -> bool:
    """Whether the report just trained is scored on the validation check: always outside a scheduler's slice; inside
    one, its last report (what the scheduler reads) and each epoch's end, so that the kept weights are picked from
    at least the reports a run with a report an epoch checks."""
    if budget.more is None:
        return True
    return state.report + 1 >= min(pause_at, run.plan.last_report) or state.step % run.plan.steps_per_epoch == 0


@dataclass
class _Saves:
    """The state saved after a report, unless saving would cost more than SAVE_SHARE of the run's time since the
    last save (a cached linear probe's reports take a few hundredths of a second): then after a later one."""

    path: Path | None
    identity: dict
    since: float  # when the last save ended (or the run began)
    seconds: float = 0.0  # how long the last save took

    def after_report(self, run: Run, state: TrainState, always: bool = False) -> None:
        if self.path is None or (not always and time.time() - self.since < self.seconds / SAVE_SHARE):
            return
        started = time.time()
        save_state(Path(self.path), state, run, self.identity)
        self.since = time.time()
        self.seconds = self.since - started


@dataclass
class _Clock:
    """A run's time: this process's start, what earlier processes spent, and when its schedule must end."""

    started: float
    before: float  # seconds spent by earlier processes on this run
    budget: Budget

    def wall(self) -> float:
        return self.before + time.time() - self.started

    def soft_deadline(self) -> float | None:
        """When the run's schedule must end: the search's deadline, or sooner by the run's own time."""
        own = self.started + max(0.0, self.budget.seconds - self.before) if self.budget.seconds else None
        ends = [t for t in (self.budget.deadline, own) if t is not None]
        return min(ends) if ends else None


@dataclass
class _Duty:
    """What a run answers to: the trial it reports to, what it keeps, who watches its reports."""

    trial: object
    keep_last: bool
    soup: bool
    on_report: object
    clock: _Clock
    metric: str = "accuracy"

    @property
    def reporting(self) -> bool:
        return self.trial is not None and len(self.trial.study.directions) == 1

    def begin(self, run: Run, state: TrainState) -> None:
        """Tell the trial what it trains (the pruner compares it with its strategy's trials), and the saved reports."""
        if self.trial is not None:
            TrialRecord(strategy=run.config.strategy, backbone=run.config.backbone, config=run.config.to_dict()).write(
                self.trial
            )
        for entry in state.history:
            if self.reporting and entry.val_loss is not None:
                with warnings.catch_warnings():  # a trial continued after a pause has these reports already
                    warnings.filterwarnings("ignore", "The reported value is ignored")
                    self.trial.report(report_score(entry, self.metric), entry.report)
            if self.on_report is not None:
                self.on_report(entry, state.best, True)
        if state.history and self.trial is not None:
            TrialRecord(history=state.history, resumed_at=state.resumed_at).write(self.trial)

    def record(self, run: Run, state: TrainState, reason: str) -> None:
        """Store what the run did in the trial, when it stops before finishing (pruned, interrupted)."""
        if self.trial is not None:
            _result(run, state, self, reason).record.write(self.trial)


def _start(make, state_file: Path | None, identity: dict) -> tuple[Run, TrainState]:
    """A fresh run, or the run continued from ``state_file`` when that holds a state of it."""
    run = make()
    if state_file is None or not Path(state_file).is_file():
        return run, TrainState()
    try:
        state = load_state(Path(state_file), run, identity)
    except StateError as error:
        warnings.warn(f"{error}: the trial starts over", stacklevel=3)
        return make(), TrainState()  # a fresh build: loading may have changed the half-built run
    state.resumed_at = state.report
    return run, state


def train_report(run: Run, state: TrainState, budget: Budget):
    """Train up to one report's steps; (train loss, seconds, start, of those on the prefix's features), or None when
    the search's deadline came first."""
    plan, started, features = run.plan, time.time(), state.feature_seconds
    backbones.train_mode(run.model, run.frozen)
    loss_sum, seen = 0.0, 0
    left = len(run.split.train) - (state.step % plan.steps_per_epoch) * plan.batch_size
    bar = tqdm(
        total=min(plan.steps_per_report * plan.batch_size, left),
        unit="img",
        desc=f"    training report {state.report + 1}",
        disable=not bars(run.setup.progress),
        delay=BAR_DELAY_S,
        leave=False,
    )
    with bar:
        for i in range(plan.steps_per_report):
            loss, count = train_step(run, state)
            loss_sum, seen = loss_sum + loss * count, seen + count
            bar.update(count)
            if budget.interrupt is not None and budget.interrupt.is_set():
                raise KeyboardInterrupt
            if state.step % plan.steps_per_epoch == 0:
                break  # an epoch ends a report
            if budget.deadline is not None and time.time() > budget.deadline and i + 1 < plan.steps_per_report:
                return None
    return loss_sum / max(seen, 1), time.time() - started, started, state.feature_seconds - features


def train_step(run: Run, state: TrainState) -> tuple[float, int]:
    """One optimizer step on the next batch of the epoch's order; (its loss, its batch size)."""
    plan, config = run.plan, run.config
    within = state.step % plan.steps_per_epoch
    if within == 0:
        state.order = (
            balanced_order(run.split.train_labels, run.generator)
            if config.class_balance == "balanced_sampling"
            else torch.randperm(len(run.split.train), generator=run.generator)
        )
    if run.probing and state.step >= plan.probe_steps:
        run.fine_tune_all()
        backbones.train_mode(run.model, run.frozen)
    positions = state.order[within * plan.batch_size : (within + 1) * plan.batch_size]
    x, targets = _batch(run, state, positions)
    factor = plan.lr_factor(state.step, config.lr_schedule, config.probe_lr_scale)
    for group in run.optimizer.param_groups:
        group["lr"] = config.lr * factor * group.get("lr_scale", 1.0)
    with autocast(run.device):
        gamma = config.focal_gamma if config.class_balance == "focal" else None
        loss = class_loss(run.train_network(channels_last(x)), targets, run.class_weights, gamma)
    if run.penalty is not None:
        loss = loss + run.penalty.penalty()
    if not torch.isfinite(loss):
        raise _Stop(f"non-finite loss at report {state.report + 1}, step {state.step + 1}")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    state.step += 1
    return loss.item(), len(positions)


def _batch(run: Run, state: TrainState, positions: torch.Tensor):
    """(inputs, soft targets) of a batch: augmented images (mixed up, when asked) or cached prefix outputs."""
    config, classes = run.config, len(run.dataset.classes)
    smoothing = config.regularizer_strength if config.regularizer == "label_smoothing" else 0.0
    labels = run.split.train_labels[positions].to(run.device, non_blocking=True)
    targets = F.one_hot(labels, classes).float() * (1 - smoothing) + smoothing / classes
    if run.inputs.cached:
        before = run.inputs.feature_seconds
        x = run.inputs.cached_rows("train", positions)
        state.feature_seconds += run.inputs.feature_seconds - before
        return x, targets
    images = run.inputs.images(run.split.train[positions.numpy()]).float().div_(255.0)
    x = augment(images, config.augment_strength, run.generator)
    if config.regularizer == "mixup":
        x, targets = mixup(x, targets, config.regularizer_strength, run.generator)
    return run.pre.standardize(x), targets


def score(run: Run, index, rows, progress: bool = False, probabilities: bool = False) -> dict:
    """The network on validation images ``index`` (``rows``: their positions in the validation split)."""
    batches = run.inputs.batches("val", index, rows)
    total = len(index) if progress else None
    classes = len(run.dataset.classes)
    run.model.eval()  # the whole model: the head's dropout reads the model's own mode, not the scoring part's
    network = run.inputs.scoring(run.network)
    return evaluate(
        network, batches, device=run.device, num_classes=classes, progress_total=total, probabilities=probabilities
    )


def check(run: Run, state: TrainState, trained, scored: bool = True) -> Report:
    """Score the report's weights on the validation check: the curve's next point. Not ``scored``: a report inside
    a slice, which the scheduler does not read (it decides on the slice's last); its training fields alone."""
    train_loss, train_seconds, started, features = trained
    check_features, checks_cached = run.inputs.seconds_on("val"), "val" in run.inputs.features
    val = (
        score(run, run.split.check, run.split.check_rows, run.setup.progress)
        if scored
        else dict.fromkeys(("loss", *METRICS))
    )
    state.report += 1
    entry = Report(
        report=state.report,
        epoch=run.plan.epochs_done(state.step),
        images=state.step * run.plan.batch_size,
        train_loss=train_loss,
        val_loss=val["loss"],
        val_accuracy=val["accuracy"],
        val_macro_f1=val["macro_f1"],
        val_balanced_accuracy=val["balanced_accuracy"],
        seconds=round(time.time() - started, 3),
        train_seconds=round(train_seconds, 3),
        feature_seconds=round(features, 3) if run.inputs.cached else None,
        check_feature_seconds=round(run.inputs.seconds_on("val") - check_features, 3)
        if checks_cached and scored
        else None,
    )
    state.history.append(entry)
    return entry


def decide(run: Run, state: TrainState, entry: Report, duty: _Duty) -> None:
    """After a report: keep its weights if best, report it, prune, and shorten the schedule to the time left (a
    report without a score is only seen)."""
    if state.first_report_seconds is None:
        state.first_report_seconds = round(duty.clock.wall(), 3)
    if entry.val_loss is None:
        if duty.on_report is not None:
            duty.on_report(entry, state.best, False)
        return
    val = dict(
        accuracy=entry.val_accuracy,
        macro_f1=entry.val_macro_f1,
        balanced_accuracy=entry.val_balanced_accuracy,
        loss=entry.val_loss,
    )
    keep(run, state, val, duty)
    if duty.on_report is not None:
        duty.on_report(entry, state.best, False)
    if duty.reporting:
        duty.trial.report(report_score(entry, duty.metric), entry.report)
        if state.step > run.plan.protected_steps and duty.trial.should_prune():
            stop_pruned(run, state, duty, f"pruned by the pruner after report {entry.report}")
    if not math.isfinite(entry.val_loss):
        stop_pruned(run, state, duty, f"non-finite validation loss at report {entry.report}")
    deadline = duty.clock.soft_deadline()
    if deadline is not None and duty.clock.budget.more is None:  # a slice's schedule is not fit to the clock
        run.plan.shorten(entry.report, deadline - time.time(), entry.seconds)


def keep(run: Run, state: TrainState, val: dict, duty: _Duty) -> None:
    """Keep the report's weights when they are the best so far (or the last, for a refit), and for a soup."""
    report = state.report
    if state.best is None or duty.keep_last or _ahead(val, report, state.best, len(run.split.check), duty.metric):
        state.best = dict(val, report=report)
        state.best_weights = _cpu_copy(run.model)
    if duty.soup:
        weights = state.best_weights if state.best["report"] == report else _cpu_copy(run.model)
        candidates = state.soup + [((val[duty.metric], -val["loss"]), report, weights)]
        state.soup = sorted(candidates, key=lambda c: c[0], reverse=True)[:SOUP_REPORTS]


def _ahead(val: dict, report: int, than: dict, images: int, metric: str) -> bool:
    """Whether a report beats another by the best-trial rule (``autotl.trials.best``) on the validation check."""
    mine = Standing((val[metric],), report, val["loss"], images)
    theirs = Standing((than.get(metric),), than["report"], than["loss"], images)
    return best([mine, theirs], [optuna.study.StudyDirection.MAXIMIZE]) is mine


def finish(run: Run, state: TrainState, duty: _Duty, end_reason: str = "completed") -> TrialResult:
    """The kept weights (a soup of them, when that helps), scored on all of val, with their latency."""
    plan = run.plan
    if end_reason == "completed" and plan.cool_from is not None:
        end_reason = (
            f"completed: ended early by a cool-down after report {plan.cool_report} ({plan.last_report} reports)"
        )
    elif end_reason == "completed" and plan.shortened:
        end_reason = f"completed a schedule shortened to {plan.last_report} reports to end within the time budget"
    soup_reports, unsouped = _souped(run, state, duty.metric) if duty.soup else ([], None)
    run.model.load_state_dict(state.best_weights)
    metrics, val, probabilities = state.best, run.split.val, None
    if len(run.split.check) < len(val) or soup_reports:  # the trial's score: its kept weights on all of val
        metrics = score(run, val, np.arange(len(val)), run.setup.progress, probabilities=True)
        probabilities = metrics.pop("probabilities")
    backbones.merge_lora(run.model)  # a plain timm model, whatever the strategy
    run.model.to(run.device, memory_format=torch.contiguous_format).eval()  # as load_model builds it
    latency = latency_ms(run.model, run.pre.size, run.device)
    run.model.to("cpu")
    result = _result(run, state, duty, end_reason, metrics=metrics, val_images=len(val))
    result.record.latency_ms, result.record.soup_reports = latency, soup_reports
    result.model, result.unsouped_state, result.val_probabilities = run.model, unsouped, probabilities
    if duty.trial is not None:
        result.record.write(duty.trial)
    return result


def _souped(run: Run, state: TrainState, metric: str) -> tuple[list[int], dict | None]:
    """(reports averaged, the unsouped best weights) when a greedy soup of the best reports is kept."""
    if len(state.soup) <= 1:
        return [], None

    def soup_score(weights):
        run.model.load_state_dict(weights)
        m = score(run, run.split.check, run.split.check_rows)
        return (m[metric], -m["loss"])

    souped, soup_reports, _ = greedy_soup(state.soup, soup_score)
    if len(soup_reports) <= 1:
        return [], None
    unsouped, state.best_weights = state.best_weights, souped
    return soup_reports, unsouped


def _result(run: Run, state: TrainState, duty: _Duty, end_reason: str, *, metrics=None, val_images=None, paused=False):
    kept = metrics or state.best or {}
    record = TrialRecord(
        history=state.history,
        best_report=(state.best or {}).get("report"),
        reports=len(state.history),
        resumed_at=state.resumed_at,
        wall_seconds=round(duty.clock.wall(), 3),
        train_seconds=round(sum(r.train_seconds for r in state.history), 3),
        first_report_seconds=state.first_report_seconds,
        model_mb=model_megabytes(run.model),
        params_total=sum(p.numel() for p in run.model.parameters()),
        params_trainable=sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        end_reason=end_reason,
        backbone=run.config.backbone,
        strategy=run.config.strategy,
        config=run.config.to_dict(),
        metrics=_metrics(kept),
        val_images=val_images if val_images is not None else len(run.split.check),
        feature_cache=run.feature_cache,
    )
    return TrialResult(
        run.config,
        record,
        list(run.dataset.classes),
        run.pre,
        feature_seconds=round(state.feature_seconds, 3),
        paused=paused,
    )


def _metrics(kept: dict) -> Metrics | None:
    """The kept weights' scores as the record stores them (None before any report)."""
    names = [f.name for f in dataclasses.fields(Metrics)]
    return Metrics(**{name: kept.get(name) for name in names}) if kept else None


class _Stop(Exception):
    """A reason to end the run as pruned, raised inside a step."""


def _out_of_time(run: Run, state: TrainState, duty: _Duty) -> str:
    """The search's deadline came during a report: keep the best report so far (pruned when there is none)."""
    if state.best is None:
        stop_pruned(run, state, duty, f"time budget ran out during report {state.report + 1}, before any report")
    return f"time budget ran out before report {state.report + 1}; kept report {state.best['report']}"


def stop_pruned(run: Run, state: TrainState, duty: _Duty, reason: str):
    """End the run as pruned: the trial keeps what it did, and why it stopped."""
    duty.record(run, state, reason)
    raise optuna.TrialPruned(reason)


def _cpu_copy(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
