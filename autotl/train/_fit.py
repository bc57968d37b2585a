"""The fine-tuning loop: one trial, read top to bottom.

Each step reads a batch of images from the dataset's on-disk cache at the trial's
resolution (or the frozen prefix's cached outputs), augments it as a whole, and trains
only what is not frozen. After every ``report_every_images`` training images (or every
epoch, on a smaller dataset) the model is scored on a fixed stratified part of the
validation split, reported to the trial, and the pruner is consulted; the trial's final
metrics are its best report's weights scored on the whole validation split.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import optuna
import timm.optim
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import backbones
from ..data import ImageDataset, augment, mixup
from ..space import TrialConfig
from ..trials import Standing, TrialRecord, best
from ._cost import latency_ms, model_megabytes
from ._memory import keep_freed_memory
from ._metrics import macro_f1
from ._prefix import FEATURES, Features, split
from ._soup import SOUP_EPOCHS, greedy_soup
from .regularizers import make_penalty
from .schedules import lr_factor

VAL_CHECK_IMAGES = 1000  # intermediate reports score this many validation images (stratified) when there are more
EVAL_BATCH = 256
BAR_DELAY_S = 10.0  # a progress bar appears only for work that lasts longer than this


@dataclass
class TrialResult:
    """What one fine-tuning run produced. ``model`` carries the best report's weights."""

    config: TrialConfig
    metrics: dict
    history: list[dict]
    best_epoch: int
    epochs_run: int
    wall_seconds: float
    params_total: int
    params_trainable: int
    end_reason: str
    classes: list[str]
    preprocessing: backbones.Preprocessing
    model: torch.nn.Module | None = field(default=None, repr=False)
    feature_cache: str = "off"  # 'hit' / 'miss': the frozen prefix's outputs came from / went to the cache
    latency_ms: float | None = None  # one image's prediction on the training device (completed runs only)
    model_mb: float = 0.0
    feature_seconds: float = 0.0  # the frozen prefix's passes over the training images that this run computed
    soup_epochs: list[int] = field(default_factory=list)  # the reports averaged into the model (a soup), if any
    best_epoch_state: dict | None = field(default=None, repr=False)  # the best report's weights, when souped
    first_report_seconds: float | None = None  # from the start of the run to its first report
    val_images: int = 0  # the validation images ``metrics`` count

    @property
    def train_seconds(self) -> float:
        """Seconds spent training: the steps, including the frozen prefix's passes over the training images
        that this run computed for the cache; evaluation excluded."""
        return round(sum(r["train_seconds"] for r in self.history), 3)

    def attrs(self) -> dict:
        """The trial's record, as stored in the study (``autotl.trials.TrialRecord``)."""
        return TrialRecord(
            history=self.history,
            best_epoch=self.best_epoch,
            epochs_run=self.epochs_run,
            wall_seconds=round(self.wall_seconds, 3),
            train_seconds=self.train_seconds,
            latency_ms=self.latency_ms,
            model_mb=self.model_mb,
            params_total=self.params_total,
            params_trainable=self.params_trainable,
            end_reason=self.end_reason,
            backbone=self.config.backbone,
            config=self.config.to_dict(),
            metrics=self.metrics,
            feature_cache=self.feature_cache,
            soup_epochs=self.soup_epochs,
            first_report_seconds=self.first_report_seconds,
            val_images=self.val_images,
            strategy=self.config.strategy,
        ).attrs()


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' means CUDA when there is a GPU, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is visible: use --device auto or cpu")
    return torch.device(device)


def evaluate(model, batches, *, device, num_classes: int, progress_total: int | None = None) -> dict:
    """Accuracy, macro-F1 and mean cross-entropy of ``model`` over ``batches`` of (inputs, labels).

    With ``progress_total`` (the number of images), a long evaluation shows a progress bar.
    """
    model.eval()
    loss_sum, preds, truth = 0.0, [], []
    bar = tqdm(
        total=progress_total,
        unit="img",
        desc="    validating",
        disable=not _bars(progress_total),
        delay=BAR_DELAY_S,
        leave=False,
    )
    with bar, torch.inference_mode(), _autocast(device):
        for x, y in batches:
            bar.update(len(y))
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y.to(device), reduction="sum").item()
            preds.append(logits.argmax(1).cpu())
            truth.append(y.cpu())
    pred, labels = torch.cat(preds), torch.cat(truth)
    truth, predicted = labels.numpy(), pred.numpy()
    return dict(
        accuracy=float((truth == predicted).mean()), macro_f1=macro_f1(truth, predicted), loss=loss_sum / len(labels)
    )


def _bars(wanted) -> bool:
    """Progress bars go to a terminal only: in a log file the per-report lines say enough."""
    return bool(wanted) and sys.stderr.isatty()


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images as NHWC in memory: convolutions run faster so, on the CPU too (benchmarks/RESULTS.md)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def validation_check(dataset: ImageDataset, size: int | None = None) -> np.ndarray:
    """The validation images scored at each report: all of them, or a fixed stratified ``size`` of them."""
    size = size or VAL_CHECK_IMAGES
    val = dataset.indices("val")
    if len(val) <= size:
        return val
    from sklearn.model_selection import train_test_split  # here, not at the top: predicting never needs it

    labels = dataset.labels[val]
    try:
        part, _ = train_test_split(val, train_size=size, stratify=labels, random_state=dataset.seed)
    except ValueError:  # a class with a single validation image cannot be stratified
        part = np.random.default_rng(dataset.seed).choice(val, size=size, replace=False)
    return np.sort(part)


class _Inputs:
    """What the trainable part of the network takes, for any images of the dataset.

    Raw images (read from the cache, resized, augmented) or, when the frozen prefix is a
    fixed function of the image, the prefix's outputs, computed once per image and cached.
    """

    def __init__(self, dataset, pre, device):
        self.dataset, self.pre, self.device = dataset, pre, device
        self.features = {}  # split -> (Features, dataset positions of its rows), when the prefix is cached
        self.prefix = None

    def images(self, index) -> torch.Tensor:
        """uint8 images of ``index`` (dataset positions) on the device."""
        x = self.dataset.images(index, self.pre.size, self.pre.interpolation)
        if self.device.type == "cuda":
            x = x.pin_memory()
        return x.to(self.device, non_blocking=True)

    def eval_input(self, index) -> torch.Tensor:
        return _channels_last(self.pre.normalize(self.images(index)))

    def cached(self, split: str, rows: torch.Tensor) -> torch.Tensor:
        """Prefix outputs of ``rows`` (positions in ``split``'s index), computing those not yet cached."""
        store, index = self.features[split]

        def compute(missing):
            with torch.no_grad(), _autocast(self.device):
                return self.prefix(self.eval_input(index[missing.numpy()]))

        return store.get(rows, compute)

    def batches(self, split: str, index, positions=None):
        """(inputs, labels) of ``index`` (dataset positions) in evaluation form; ``positions`` in the split's rows."""
        for start in range(0, len(index), EVAL_BATCH):
            part = index[start : start + EVAL_BATCH]
            labels = torch.from_numpy(self.dataset.labels[part].astype(np.int64))
            if split in self.features:
                rows = torch.from_numpy(np.asarray(positions[start : start + EVAL_BATCH], dtype=np.int64))
                yield _channels_last(self.cached(split, rows)), labels
            else:
                yield self.eval_input(part), labels


def _split_prefix(model, dataset, pre, device, config, weights_dir, pretrained, cache_prefix, train_index, val_index):
    """(network to train, _Inputs, 'hit'/'miss'/'off'): the frozen prefix cut off when its outputs can be cached."""
    inputs = _Inputs(dataset, pre, device)
    if not cache_prefix or config.augment_strength != 0 or config.regularizer == "mixup":
        return model, inputs, "off"
    example = inputs.eval_input(train_index[:2])
    parts = split(model, example)
    if parts is None:
        return model, inputs, "off"
    prefix, network = parts
    with torch.no_grad():
        shape = tuple(prefix.eval()(example).shape[1:])
    per_image = 4 * math.prod(shape)
    if not FEATURES.fits(per_image * (len(train_index) + len(val_index))):
        return model, inputs, "off"  # too large to keep: the frozen prefix runs every step (without a graph)
    key = (
        config.backbone,
        str(weights_dir),
        pretrained,
        len(prefix),
        pre.size,
        pre.interpolation,
        str(device),
        dataset.spec,
        str(dataset.store.folder),
    )
    hits = FEATURES.hits
    inputs.prefix = prefix.eval()
    for name, index in (("train", train_index), ("val", val_index)):
        images = hashlib.blake2b(np.asarray(index, dtype=np.int64).tobytes(), digest_size=16).hexdigest()
        store = FEATURES.get(key + (name, images), functools.partial(Features, len(index), shape, device))
        inputs.features[name] = (store, index)
    return network, inputs, ("hit" if FEATURES.hits > hits and inputs.features["train"][0].done.all() else "miss")


def fit(
    config: TrialConfig,
    dataset: ImageDataset,
    trial: optuna.Trial | None = None,
    *,
    device: str | torch.device = "auto",
    weights_dir=None,
    deadline: float | None = None,
    seed: int = 0,
    on_epoch=None,
    pretrained: bool = True,
    cache_prefix: bool = True,
    interrupt=None,
    epochs: int | None = None,
    keep_last: bool = False,
    soup: bool = False,
    compile: bool = False,
    number: int | None = None,
    progress: bool = False,
    time_budget: float | None = None,
) -> TrialResult:
    """Fine-tune ``config.backbone`` on ``dataset`` for up to ``config.max_epochs`` epochs.

    Reports the validation accuracy to ``trial`` after every ``config.report_every_images``
    training images (at least once per epoch) and raises ``optuna.TrialPruned`` when the
    pruner says so or the loss stops being finite (the trial's user attrs then say why).
    Stops early, keeping its best report, once ``deadline`` (a ``time.time()`` value) would
    be passed by another report's training. With no augmentation and no mixup, the frozen
    prefix's outputs are cached (``cache_prefix=False`` turns that off). ``interrupt`` (a
    threading.Event) set by a Ctrl-C handler ends the run at the next step with
    KeyboardInterrupt. ``epochs`` stops after that many reports of the schedule (to repeat
    a trial that ended early); ``keep_last`` keeps the last report instead of the best (a
    refit, whose validation images are in its training set). ``soup`` averages the best
    reports' weights greedily (kept when validation does not get worse). ``compile`` runs
    the training steps through ``torch.compile`` (for a GPU; slower on a CPU, see
    benchmarks/RESULTS.md). ``number`` seeds the run (default: the trial's number; a run
    without a trial, such as a refit, passes it). ``progress`` shows a bar (images/s, time
    left) for a report or an evaluation that takes long. ``time_budget`` (seconds) caps this
    run: after each report the schedule is shortened, from how long that report took, to
    end within the budget and the deadline (its learning rate still anneals, as in budgeted
    training). A multi-objective trial is not reported to (Optuna cannot prune those).
    """
    started = time.time()
    device = resolve_device(device) if isinstance(device, str) else device
    if device.type == "cpu":
        keep_freed_memory()  # activations are not paged in afresh each step (benchmarks/allocator.py)
    if number is None:
        number = trial.number if trial is not None else 0
    torch.manual_seed(seed * 1000 + number)
    # the search's deadline cuts a report short; the trial's own budget only shortens its schedule
    soft_deadline = deadline
    if time_budget:
        soft_deadline = started + time_budget if deadline is None else min(deadline, started + time_budget)
    size = backbones.preprocessing(config.backbone, config.resolution_scale).size
    model = _build(config, len(dataset.classes), device, weights_dir, pretrained, size)
    run = _Run(config, dataset, model, device, started=started, trial=trial, seed=seed * 1000 + number)
    run.inputs_from(weights_dir, pretrained, cache_prefix)
    run.plan = _Plan.make(config, len(run.train_index), epochs)
    run.compile = compile
    run.train_network = run.compiled(run.network)
    run.deadline, run.soft_deadline, run.interrupt, run.progress = deadline, soft_deadline, interrupt, progress
    run.keep_last, run.soup, run.on_epoch = keep_last, soup, on_epoch
    while run.report < run.plan.last_report:
        run.report += 1
        if not run.train_report():
            break  # the deadline came before the report's end
        run.check()
    return run.finish()


@dataclass
class _Model:
    """The network with its prefix frozen, and what trains it."""

    model: torch.nn.Module
    frozen: list
    optimizer: torch.optim.Optimizer
    penalty: object


def _build(config: TrialConfig, num_classes: int, device, weights_dir, pretrained: bool, size: int) -> _Model:
    """The pretrained model with a new head, training what its strategy trains, on ``device``; optimizer, penalty.

    The optimizer holds every parameter (LP-FT unfreezes the body mid-run); a frozen one
    gets no gradient, and optimizers skip parameters without one.
    """
    strength = config.regularizer_strength
    model = backbones.create(
        config.backbone,
        num_classes,
        pretrained=pretrained,
        weights_dir=weights_dir,
        drop_rate=strength if config.regularizer == "dropout" else 0.0,
        drop_path_rate=strength if config.regularizer == "drop_path" else 0.0,
        input_size=size,
    )
    if config.strategy == "lora":
        backbones.add_lora(model, config.lora_rank, config.lora_alpha, config.lora_layers)
    model.to(device, memory_format=torch.channels_last)
    weight_decay = strength if config.regularizer == "weight_decay" else 0.0
    groups = timm.optim.param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=config.layer_decay)
    groups = [g for g in groups if g["params"]]
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
    backbones.train_only(model, config.strategy, frozen_depth=config.frozen_depth, surgical_group=config.surgical_group)
    return _Model(model, backbones.frozen_modules(model), optimizer, _penalty(model, config))


def _penalty(model, config: TrialConfig):
    """The regularizer's loss penalty over what trains now (None when it acts elsewhere)."""
    return make_penalty(model, config.regularizer, config.regularizer_strength, backbones.head_names(model))


@dataclass
class _Plan:
    """How a run's steps fall into epochs and reports, and where its learning-rate schedule ends."""

    batch_size: int
    steps_per_epoch: int
    steps_per_report: int
    last_report: int
    total_steps: int
    warmup_steps: int
    planned: tuple  # (reports, steps, warmup steps) before any shortening
    probe_steps: int = 0  # LP-FT: steps that train the head alone, before the schedule proper

    @property
    def protected_steps(self) -> int:
        """The pruner is not consulted until after these steps: a probe phase and a warmup are no verdict."""
        return self.probe_steps + self.warmup_steps

    @classmethod
    def make(cls, config: TrialConfig, n_train: int, epochs: int | None) -> _Plan:
        batch_size = min(config.batch_size, n_train)
        steps_per_epoch = n_train // batch_size + (1 if n_train % batch_size > 1 else 0)  # never a batch of 1
        reports_per_epoch = math.ceil(steps_per_epoch / max(1, config.report_every_images // batch_size))
        steps_per_report = math.ceil(steps_per_epoch / reports_per_epoch)  # an epoch in equal parts
        total_steps = steps_per_epoch * config.max_epochs
        probe_steps = min(config.probe_epochs * steps_per_epoch, total_steps // 2) if config.strategy == "lp_ft" else 0
        warmup_steps = min(config.warmup_epochs * steps_per_epoch, (total_steps - probe_steps) // 2)
        last_report = config.max_epochs * reports_per_epoch
        if epochs:
            last_report = min(epochs, last_report)
        return cls(
            batch_size,
            steps_per_epoch,
            steps_per_report,
            last_report,
            total_steps,
            warmup_steps,
            (last_report, total_steps, warmup_steps),
            probe_steps,
        )

    def shorten(self, report: int, seconds_left: float, seconds_per_report: float) -> None:
        """End the schedule where the time does (never later than planned), so the learning rate still anneals."""
        reports, steps, warmup = self.planned
        self.last_report = max(report, min(reports, report + int(seconds_left / max(seconds_per_report, 1e-3))))
        self.total_steps = min(steps, self.last_report * self.steps_per_report)
        self.probe_steps = min(self.probe_steps, self.total_steps // 2)
        self.warmup_steps = min(warmup, (self.total_steps - self.probe_steps) // 2)

    def lr_factor(self, step: int, schedule: str, probe_scale: float) -> float:
        """The learning rate's multiplier at ``step``: constant while probing, then warmup and the schedule."""
        if step < self.probe_steps:
            return probe_scale
        return lr_factor(
            step - self.probe_steps,
            schedule=schedule,
            total_steps=self.total_steps - self.probe_steps,
            warmup_steps=self.warmup_steps,
        )


class _Run:
    """One fine-tuning run as it goes: train a report's steps, check it on validation, finish with the kept weights."""

    def __init__(self, config, dataset, built: _Model, device, *, started: float, trial, seed: int):
        self.config, self.dataset, self.device, self.started, self.trial = config, dataset, device, started, trial
        self.model, self.frozen, self.optimizer, self.penalty = (
            built.model,
            built.frozen,
            built.optimizer,
            built.penalty,
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.num_classes = len(dataset.classes)
        self.pre = backbones.preprocessing(config.backbone, config.resolution_scale)
        self.train_index, self.val_index = dataset.indices("train"), dataset.indices("val")
        self.check_index = validation_check(dataset)
        self.check_positions = np.searchsorted(self.val_index, self.check_index)
        self.y_train = torch.from_numpy(dataset.labels[self.train_index].astype(np.int64))
        self.smoothing = config.regularizer_strength if config.regularizer == "label_smoothing" else 0.0
        self.history, self.best, self.best_state, self.top = [], None, None, []  # top: best reports, for a soup
        self.end_reason, self.step, self.report, self.order, self.first_report = "completed", 0, 0, None, None
        self.reporting = trial is not None and len(trial.study.directions) == 1
        self.probing = config.strategy == "lp_ft"  # LP-FT trains the head alone until the plan's probe steps
        self.params_total = sum(p.numel() for p in self.model.parameters())
        self.params_trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def inputs_from(self, weights_dir, pretrained: bool, cache_prefix: bool) -> None:
        """What the trainable part takes: raw images, or the frozen prefix's cached outputs."""
        self.network, self.inputs, self.cache = _split_prefix(
            self.model,
            self.dataset,
            self.pre,
            self.device,
            self.config,
            weights_dir,
            pretrained,
            cache_prefix,
            self.train_index,
            self.val_index,
        )
        self.cached = "train" in self.inputs.features
        self.feature_seconds_before = self.inputs.features["train"][0].seconds if self.cached else 0.0

    def train_report(self) -> bool:
        """Train up to one report's steps; False when the deadline came first (the run then ends)."""
        plan, started = self.plan, time.time()
        backbones.train_mode(self.model, self.frozen)
        self.loss_sum, self.seen = 0.0, 0
        left = self.dataset_left_in_epoch()
        bar = tqdm(
            total=min(plan.steps_per_report * plan.batch_size, left),
            unit="img",
            desc=f"    training report {self.report}",
            disable=not _bars(self.progress),
            delay=BAR_DELAY_S,
            leave=False,
        )
        with bar:
            for i in range(plan.steps_per_report):
                bar.update(self.train_step())
                if self.interrupt is not None and self.interrupt.is_set():
                    raise KeyboardInterrupt
                if self.step % plan.steps_per_epoch == 0:
                    break  # an epoch ends a report
                if self.deadline is not None and time.time() > self.deadline and i + 1 < plan.steps_per_report:
                    if self.best is None:
                        self.stop_pruned(f"time budget ran out during report {self.report}, before any report")
                    self.end_reason = (
                        f"time budget ran out before report {self.report}; kept report {self.best['epoch']}"
                    )
                    return False
        self.train_seconds = time.time() - started
        self.report_started = started
        return True

    def dataset_left_in_epoch(self) -> int:
        return len(self.train_index) - (self.step % self.plan.steps_per_epoch) * self.plan.batch_size

    def train_step(self) -> int:
        """One optimizer step on the next batch of the epoch's order; returns the batch's size."""
        plan, config = self.plan, self.config
        within = self.step % plan.steps_per_epoch
        if within == 0:
            self.order = torch.randperm(len(self.train_index), generator=self.generator)
        if self.probing and self.step >= plan.probe_steps:
            self.fine_tune_all()
        positions = self.order[within * plan.batch_size : (within + 1) * plan.batch_size]
        x, targets = self.train_batch(positions)
        x = _channels_last(x)  # once, for raw images and cached features alike
        factor = plan.lr_factor(self.step, config.lr_schedule, config.probe_lr_scale)
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * factor * group.get("lr_scale", 1.0)
        with _autocast(self.device):
            loss = F.cross_entropy(self.train_network(x).float(), targets)
        if self.penalty is not None:
            loss = loss + self.penalty.penalty()
        if not torch.isfinite(loss):
            self.stop_pruned(f"non-finite loss at report {self.report}, step {self.step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.item() * len(positions)
        self.seen += len(positions)
        self.step += 1
        return len(positions)

    def compiled(self, network):
        return torch.compile(network, dynamic=False) if self.compile else network

    def fine_tune_all(self) -> None:
        """LP-FT's second phase: from the probed head, everything trains, on the images themselves."""
        self.probing = False
        if self.cached:
            self.feature_seconds_before -= self.inputs.features["train"][0].seconds  # keep the probe's feature time
        backbones.train_only(self.model, "full")
        self.frozen = backbones.frozen_modules(self.model)
        backbones.train_mode(self.model, self.frozen)
        self.penalty = _penalty(self.model, self.config)
        self.network, self.train_network = self.model, self.compiled(self.model)
        self.inputs, self.cached = _Inputs(self.dataset, self.pre, self.device), False
        self.params_trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def train_batch(self, positions: torch.Tensor):
        """(inputs, soft targets) of a batch: augmented images (mixed up, when asked) or cached prefix outputs."""
        config = self.config
        labels = self.y_train[positions].to(self.device, non_blocking=True)
        targets = F.one_hot(labels, self.num_classes).float() * (1 - self.smoothing) + self.smoothing / self.num_classes
        if self.cached:
            return self.inputs.cached("train", positions), targets
        images = self.inputs.images(self.train_index[positions.numpy()]).float().div_(255.0)
        x = augment(images, config.augment_strength, self.generator)
        if config.regularizer == "mixup":
            x, targets = mixup(x, targets, config.regularizer_strength, self.generator)
        return self.pre.standardize(x), targets

    def score(self, index, positions, progress=None) -> dict:
        batches = self.inputs.batches("val", index, positions)
        return evaluate(
            self.network, batches, device=self.device, num_classes=self.num_classes, progress_total=progress
        )

    def check(self) -> None:
        """Score the report on the validation check, keep the best, report to the trial, shorten the schedule."""
        report, val = (
            self.report,
            self.score(self.check_index, self.check_positions, len(self.check_index) if self.progress else None),
        )
        if self.first_report is None:
            self.first_report = round(time.time() - self.started, 3)
        record = dict(
            epoch=report,
            epochs_done=round(self.step / self.plan.steps_per_epoch, 4),
            images=self.step * self.plan.batch_size,
            train_loss=self.loss_sum / max(self.seen, 1),
            val_loss=val["loss"],
            val_accuracy=val["accuracy"],
            val_macro_f1=val["macro_f1"],
            seconds=round(time.time() - self.report_started, 3),
            train_seconds=round(self.train_seconds, 3),
        )
        self.history.append(record)
        self.keep(val, report)
        if self.on_epoch is not None:
            self.on_epoch(record, self.best)
        if self.reporting:
            self.trial.report(val["accuracy"], report)
            if self.step > self.plan.protected_steps and self.trial.should_prune():
                self.stop_pruned(f"pruned by the pruner after report {report}")
        if not math.isfinite(val["loss"]):
            self.stop_pruned(f"non-finite validation loss at report {report}")
        if self.soft_deadline is not None:
            self.plan.shorten(report, self.soft_deadline - time.time(), record["seconds"])

    def keep(self, val: dict, report: int) -> None:
        """Keep the report's weights when they are the best so far (or the last, for a refit), and for a soup."""
        if self.best is None or self.keep_last or self.ahead(val, report, self.best):
            self.best = dict(val, epoch=report)
            self.best_state = _cpu_copy(self.model)
        if self.soup:
            state = self.best_state if self.best["epoch"] == report else _cpu_copy(self.model)
            candidates = self.top + [((val["accuracy"], -val["loss"]), report, state)]
            self.top = sorted(candidates, key=lambda c: c[0], reverse=True)[:SOUP_EPOCHS]

    def ahead(self, val: dict, report: int, than: dict) -> bool:
        """Whether a report beats another by the best-trial rule (``autotl.trials.best``) on the validation check."""
        mine = Standing((val["accuracy"],), report, val["loss"], len(self.check_index))
        theirs = Standing((than["accuracy"],), than["epoch"], than["loss"], len(self.check_index))
        return best([mine, theirs], [optuna.study.StudyDirection.MAXIMIZE]) is mine

    def finish(self) -> TrialResult:
        """The kept weights (a soup of them, when that helps), scored on all of val, with their latency."""
        if self.end_reason == "completed" and self.plan.last_report < self.plan.planned[0]:
            self.end_reason = (
                f"completed a schedule shortened to {self.plan.last_report} reports to end within the time budget"
            )
        soup_epochs, unsouped = self.souped()
        self.model.load_state_dict(self.best_state)
        metrics = dict(self.best)
        if len(self.check_index) < len(self.val_index) or soup_epochs:
            # the trial's score: its kept weights on all of val
            every = np.arange(len(self.val_index))
            metrics = dict(
                self.score(self.val_index, every, len(self.val_index) if self.progress else None),
                epoch=self.best["epoch"],
            )
        backbones.merge_lora(self.model)  # a plain timm model, whatever the strategy
        self.model.to(self.device, memory_format=torch.contiguous_format).eval()  # as load_model builds it
        latency = latency_ms(self.model, self.pre.size, self.device)
        self.model.to("cpu")
        done = self.result(self.end_reason, metrics)
        done.latency_ms, done.soup_epochs, done.best_epoch_state = latency, soup_epochs, unsouped
        return done

    def souped(self) -> tuple[list[int], dict | None]:
        """(reports averaged, the unsouped best weights) when a greedy soup of the best reports is kept."""
        if not (self.soup and len(self.top) > 1):
            return [], None

        def soup_score(state):
            self.model.load_state_dict(state)
            m = self.score(self.check_index, self.check_positions)
            return (m["accuracy"], -m["loss"])

        souped, soup_epochs, _ = greedy_soup(self.top, soup_score)
        if len(soup_epochs) <= 1:
            return [], None
        unsouped, self.best_state = self.best_state, souped
        return soup_epochs, unsouped

    def result(self, reason: str, metrics: dict | None = None) -> TrialResult:
        features = (self.inputs.features["train"][0].seconds if self.cached else 0.0) - self.feature_seconds_before
        best = self.best or {}
        return TrialResult(
            config=self.config,
            metrics=dict(metrics or best),
            history=self.history,
            best_epoch=best.get("epoch", 0),
            epochs_run=len(self.history),
            wall_seconds=time.time() - self.started,
            params_total=self.params_total,
            params_trainable=self.params_trainable,
            end_reason=reason,
            classes=list(self.dataset.classes),
            preprocessing=self.pre,
            model=self.model,
            feature_cache=self.cache,
            model_mb=model_megabytes(self.model),
            feature_seconds=round(features, 3),
            first_report_seconds=self.first_report,
            val_images=len(self.val_index if metrics is not None else self.check_index),  # finish scores all of val
        )

    def stop_pruned(self, reason: str):
        """End the run as pruned: the trial keeps what it did, and why it stopped."""
        if self.trial is not None:
            for key, value in self.result(reason).attrs().items():
                self.trial.set_user_attr(key, value)
        raise optuna.TrialPruned(reason)


def _cpu_copy(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
