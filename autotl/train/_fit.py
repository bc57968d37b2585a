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
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from .. import backbones
from ..data import ImageDataset, augment, mixup
from ..space import TrialConfig
from ._cost import latency_ms, model_megabytes
from ._memory import keep_freed_memory
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

    @property
    def train_seconds(self) -> float:
        """Seconds spent training: the steps, including the frozen prefix's passes over the training images
        that this run computed for the cache; evaluation excluded."""
        return round(sum(r["train_seconds"] for r in self.history), 3)

    def attrs(self) -> dict:
        """The plain facts stored on the trial (and read back by the report)."""
        return dict(
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
        )


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' means CUDA when there is a GPU, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is visible: use --device auto or cpu")
    return torch.device(device)


def evaluate(model, batches, device, num_classes, progress_total: int | None = None) -> dict:
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
    confusion = torch.bincount(labels * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)
    tp = confusion.diag().float()
    precision = tp / confusion.sum(0).clamp(min=1)
    recall = tp / confusion.sum(1).clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp))
    present = (confusion.sum(1) + confusion.sum(0)) > 0
    return dict(accuracy=float(tp.sum() / len(labels)), macro_f1=float(f1[present].mean()), loss=loss_sum / len(labels))


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
    benchmarks/RESULTS.md). ``number`` seeds the run (default: the trial's number).
    ``progress`` shows a bar (images/s, time left) for a report or an evaluation that takes
    long. ``time_budget`` (seconds) caps this run: after each report the schedule is
    shortened, from how long that report took, to end within the budget and the deadline
    (its learning rate still anneals, as in budgeted training). A multi-objective
    trial is not reported to (Optuna cannot prune those).
    """
    started = time.time()
    # the search's deadline cuts a report short; the trial's own budget only shortens its schedule
    soft_deadline = deadline
    if time_budget:
        soft_deadline = started + time_budget if deadline is None else min(deadline, started + time_budget)
    device = resolve_device(device) if isinstance(device, str) else device
    if device.type == "cpu":
        keep_freed_memory()  # activations are not paged in afresh each step (benchmarks/allocator.py)
    if number is None:
        number = getattr(trial, "number", 0) if trial is not None else 0
    generator = torch.Generator().manual_seed(seed * 1000 + number)
    torch.manual_seed(seed * 1000 + number)
    num_classes = len(dataset.classes)
    pre = backbones.preprocessing(config.backbone, config.resolution_scale)
    train_index, val_index = dataset.indices("train"), dataset.indices("val")
    check_index = validation_check(dataset)
    check_positions = np.searchsorted(val_index, check_index)
    y_train = torch.from_numpy(dataset.labels[train_index].astype(np.int64))

    model = backbones.create(
        config.backbone,
        num_classes,
        pretrained=pretrained,
        weights_dir=weights_dir,
        drop_rate=config.regularizer_strength if config.regularizer == "dropout" else 0.0,
        drop_path_rate=config.regularizer_strength if config.regularizer == "drop_path" else 0.0,
    )
    backbones.freeze(model, config.frozen_depth)
    frozen = backbones.frozen_modules(model)
    model.to(device, memory_format=torch.channels_last)
    head_names = {
        f"{model.pretrained_cfg.get('classifier', 'classifier')}.{n}"
        for n, _ in model.get_classifier().named_parameters()
    }

    weight_decay = config.regularizer_strength if config.regularizer == "weight_decay" else 0.0
    groups = timm.optim.param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=config.layer_decay)
    groups = [g for g in groups if g["params"]]
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
    penalty = make_penalty(model, config.regularizer, config.regularizer_strength, head_names)
    smoothing = config.regularizer_strength if config.regularizer == "label_smoothing" else 0.0

    network, inputs, cache = _split_prefix(
        model, dataset, pre, device, config, weights_dir, pretrained, cache_prefix, train_index, val_index
    )
    cached = "train" in inputs.features
    feature_seconds_before = inputs.features["train"][0].seconds if cached else 0.0

    # validation stays eager: compiling the eval-mode graph as well would cost a second compile
    train_network = torch.compile(network, dynamic=False) if compile else network
    n_train = len(train_index)
    batch_size = min(config.batch_size, n_train)
    steps_per_epoch = n_train // batch_size + (1 if n_train % batch_size > 1 else 0)  # never a batch of 1
    reports_per_epoch = math.ceil(steps_per_epoch / max(1, config.report_every_images // batch_size))
    steps_per_report = math.ceil(steps_per_epoch / reports_per_epoch)  # an epoch in equal parts
    total_steps = steps_per_epoch * config.max_epochs
    warmup_steps = min(config.warmup_epochs * steps_per_epoch, total_steps // 2)

    history, best, best_state, end_reason, step = [], None, None, "completed", 0
    first_report = None
    top = []  # (score, report, state) of the best reports, for a soup
    reporting = trial is not None and len(getattr(getattr(trial, "study", None), "directions", [None])) == 1
    last_report = config.max_epochs * reports_per_epoch
    if epochs:
        last_report = min(epochs, last_report)
    planned_reports, planned_steps, planned_warmup = last_report, total_steps, warmup_steps
    params_total = sum(p.numel() for p in model.parameters())
    params_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def result(reason, metrics=None):
        feature_seconds = (inputs.features["train"][0].seconds - feature_seconds_before) if cached else 0.0
        return TrialResult(
            config=config,
            metrics=dict(metrics or best or {}),
            history=history,
            best_epoch=(best or {}).get("epoch", 0),
            epochs_run=len(history),
            wall_seconds=time.time() - started,
            params_total=params_total,
            params_trainable=params_trainable,
            end_reason=reason,
            classes=list(dataset.classes),
            preprocessing=pre,
            model=model,
            feature_cache=cache,
            model_mb=model_megabytes(model),
            feature_seconds=round(feature_seconds, 3),
            first_report_seconds=first_report,
        )

    def stop_pruned(reason):
        res = result(reason)
        if trial is not None and hasattr(trial, "set_user_attr"):
            for key, value in res.attrs().items():
                trial.set_user_attr(key, value)
        raise optuna.TrialPruned(reason)

    def train_batch(positions: torch.Tensor):
        labels = y_train[positions].to(device, non_blocking=True)
        targets = F.one_hot(labels, num_classes).float() * (1 - smoothing) + smoothing / num_classes
        if cached:
            return inputs.cached("train", positions), targets
        x = augment(
            inputs.images(train_index[positions.numpy()]).float().div_(255.0), config.augment_strength, generator
        )
        if config.regularizer == "mixup":
            x, targets = mixup(x, targets, config.regularizer_strength, generator)
        return pre.standardize(x), targets

    order, report = None, 0
    while report < last_report:
        report += 1
        report_start = time.time()
        backbones.train_mode(model, frozen)
        loss_sum, seen, cut = 0.0, 0, False
        bar = tqdm(
            total=min(steps_per_report * batch_size, n_train - (step % steps_per_epoch) * batch_size),
            unit="img",
            desc=f"    training report {report}",
            disable=not _bars(progress),
            delay=BAR_DELAY_S,
            leave=False,
        )
        for i in range(steps_per_report):
            within = step % steps_per_epoch
            if within == 0:
                order = torch.randperm(n_train, generator=generator)
            positions = order[within * batch_size : (within + 1) * batch_size]
            x, targets = train_batch(positions)
            x = _channels_last(x)  # once, for raw images and cached features alike
            factor = lr_factor(step, schedule=config.lr_schedule, total_steps=total_steps, warmup_steps=warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * factor * group.get("lr_scale", 1.0)
            with _autocast(device):
                loss = F.cross_entropy(train_network(x).float(), targets)
            if penalty is not None:
                loss = loss + penalty.penalty()
            if not torch.isfinite(loss):
                stop_pruned(f"non-finite loss at report {report}, step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(positions)
            seen += len(positions)
            step += 1
            bar.update(len(positions))
            if interrupt is not None and interrupt.is_set():
                raise KeyboardInterrupt
            if (step % steps_per_epoch) == 0:
                break  # an epoch ends a report
            if deadline is not None and time.time() > deadline and i + 1 < steps_per_report:
                cut = True
                break
        bar.close()
        if cut:
            if best is None:
                stop_pruned(f"time budget ran out during report {report}, before any report")
            end_reason = f"time budget ran out before report {report}; kept report {best['epoch']}"
            break

        train_seconds = time.time() - report_start
        val = evaluate(
            network,
            inputs.batches("val", check_index, check_positions),
            device,
            num_classes,
            len(check_index) if progress else None,
        )
        if first_report is None:
            first_report = round(time.time() - started, 3)
        record = dict(
            epoch=report,
            epochs_done=round(step / steps_per_epoch, 4),
            images=step * batch_size,
            train_loss=loss_sum / max(seen, 1),
            val_loss=val["loss"],
            val_accuracy=val["accuracy"],
            val_macro_f1=val["macro_f1"],
            seconds=round(time.time() - report_start, 3),
            train_seconds=round(train_seconds, 3),
        )
        history.append(record)
        if best is None or keep_last or (val["accuracy"], -val["loss"]) > (best["accuracy"], -best["loss"]):
            best = dict(val, epoch=report)
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if soup:
            state = (
                best_state
                if best["epoch"] == report
                else {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            )
            top = sorted(top + [((val["accuracy"], -val["loss"]), report, state)], key=lambda c: c[0], reverse=True)[
                :SOUP_EPOCHS
            ]
        if on_epoch is not None:
            on_epoch(record, best)
        if reporting:
            trial.report(val["accuracy"], report)
            if trial.should_prune():
                stop_pruned(f"pruned by the pruner after report {report}")
        if not math.isfinite(val["loss"]):
            stop_pruned(f"non-finite validation loss at report {report}")
        if soft_deadline is not None:  # the schedule ends where the time does (never later than planned)
            fits = report + int((soft_deadline - time.time()) / max(record["seconds"], 1e-3))
            last_report = max(report, min(planned_reports, fits))
            total_steps = min(planned_steps, last_report * steps_per_report)
            warmup_steps = min(planned_warmup, total_steps // 2)

    if end_reason == "completed" and last_report < planned_reports:
        end_reason = f"completed a schedule shortened to {last_report} reports to end within the time budget"
    val_positions = np.arange(len(val_index))
    score = lambda: evaluate(
        network,
        inputs.batches("val", val_index, val_positions),
        device,
        num_classes,  # noqa: E731
        len(val_index) if progress else None,
    )
    soup_epochs, unsouped = [], None
    if soup and len(top) > 1:

        def soup_score(state):
            model.load_state_dict(state)
            m = evaluate(network, inputs.batches("val", check_index, check_positions), device, num_classes)
            return (m["accuracy"], -m["loss"])

        souped, soup_epochs, _ = greedy_soup(top, soup_score)
        if len(soup_epochs) > 1:
            unsouped, best_state = best_state, souped
        else:
            soup_epochs = []
    model.load_state_dict(best_state)
    metrics = dict(best)
    if len(check_index) < len(val_index) or soup_epochs:
        metrics = dict(score(), epoch=best["epoch"])  # the trial's score: its kept weights on all of val
    model.to(device, memory_format=torch.contiguous_format).eval()  # as load_model builds it: same numbers
    latency = latency_ms(model, pre.size, device)
    model.to("cpu")
    done = result(end_reason, metrics)
    done.latency_ms, done.soup_epochs, done.best_epoch_state = latency, soup_epochs, unsouped
    return done
