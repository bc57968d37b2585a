"""The fine-tuning loop: one trial, read top to bottom.

Data arrive as uint8 tensors already at the trial's resolution; each step slices a
batch, augments it as a whole, and trains only what is not frozen. After every epoch
the validation metrics are reported to the trial and the pruner is consulted.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import optuna
import timm.optim
import torch
import torch.nn.functional as F

from .. import backbones
from ..data import ImageDataset, augment, mixup
from ..space import TrialConfig
from ._cost import latency_ms, model_megabytes
from ._memory import keep_freed_memory
from ._prefix import FEATURES, split
from ._soup import SOUP_EPOCHS, greedy_soup
from .regularizers import make_penalty
from .schedules import lr_factor


@dataclass
class TrialResult:
    """What one fine-tuning run produced. ``model`` carries the best epoch's weights."""

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
    feature_seconds: float = 0.0  # the frozen prefix's pass over the training images (0 on a cache hit)
    soup_epochs: list[int] = field(default_factory=list)  # the epochs averaged into the model (a soup), if any
    best_epoch_state: dict | None = field(default=None, repr=False)  # the best epoch's weights, when souped

    @property
    def train_seconds(self) -> float:
        """Seconds spent training: the steps, and the frozen prefix's pass over the training images when
        this run computed it for the cache; evaluation excluded."""
        return round(self.feature_seconds + sum(r["train_seconds"] for r in self.history), 3)

    def attrs(self) -> dict:
        """The plain facts stored on the trial (and read back by the report)."""
        return dict(history=self.history, best_epoch=self.best_epoch, epochs_run=self.epochs_run,
                    wall_seconds=round(self.wall_seconds, 3), train_seconds=self.train_seconds,
                    latency_ms=self.latency_ms, model_mb=self.model_mb, params_total=self.params_total,
                    params_trainable=self.params_trainable, end_reason=self.end_reason,
                    backbone=self.config.backbone, config=self.config.to_dict(), metrics=self.metrics,
                    feature_cache=self.feature_cache, soup_epochs=self.soup_epochs)


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' means CUDA when there is a GPU, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is visible: use --device auto or cpu")
    return torch.device(device)


def evaluate(model, inputs, labels, prepare, device, num_classes, batch_size=256) -> dict:
    """Accuracy, macro-F1 and mean cross-entropy of ``model`` on ``inputs``.

    ``prepare`` turns a slice of ``inputs`` (uint8 images, or cached prefix features)
    into what ``model`` takes.
    """
    model.eval()
    loss_sum, preds = 0.0, []
    with torch.inference_mode(), _autocast(device):
        for start in range(0, len(inputs), batch_size):
            x = prepare(inputs[start:start + batch_size].to(device, non_blocking=True))
            logits = model(x).float()
            y = labels[start:start + batch_size].to(device)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            preds.append(logits.argmax(1).cpu())
    pred = torch.cat(preds)
    confusion = torch.bincount(labels * num_classes + pred, minlength=num_classes ** 2).view(num_classes, num_classes)
    tp = confusion.diag().float()
    precision = tp / confusion.sum(0).clamp(min=1)
    recall = tp / confusion.sum(1).clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp))
    present = (confusion.sum(1) + confusion.sum(0)) > 0
    return dict(accuracy=float(tp.sum() / len(labels)), macro_f1=float(f1[present].mean()),
                loss=loss_sum / len(labels))


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images as NHWC in memory: convolutions run about 1.6x faster so, on the CPU too (measured)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _run_prefix(prefix, images, prepare, device, batch_size=256) -> torch.Tensor:
    """The frozen prefix's outputs for every image (no graph: nothing in it trains)."""
    prefix.eval()
    out = []
    with torch.no_grad(), _autocast(device):
        for start in range(0, len(images), batch_size):
            out.append(prefix(prepare(images[start:start + batch_size].to(device, non_blocking=True))).float())
    return torch.cat(out)


def _autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fit(config: TrialConfig, dataset: ImageDataset, trial: optuna.Trial | None = None, *,
        device: str | torch.device = "auto", weights_dir=None, deadline: float | None = None,
        seed: int = 0, on_epoch=None, pretrained: bool = True, cache_prefix: bool = True,
        interrupt=None, epochs: int | None = None, keep_last: bool = False, soup: bool = False,
        compile: bool = False) -> TrialResult:
    """Fine-tune ``config.backbone`` on ``dataset`` for up to ``config.max_epochs`` epochs.

    Reports validation accuracy to ``trial`` after each epoch and raises
    ``optuna.TrialPruned`` when the pruner says so or the loss stops being finite (the
    trial's user attrs then say why). Stops early, keeping its best epoch, once
    ``deadline`` (a ``time.time()`` value) would be passed by another epoch. With no
    augmentation and no mixup, the frozen prefix runs once and its outputs are cached
    (``cache_prefix=False`` turns that off). ``interrupt`` (a threading.Event) set by a
    Ctrl-C handler ends the run at the next step with KeyboardInterrupt. ``epochs`` stops
    after that many epochs of the ``max_epochs`` schedule (to repeat a trial that ended
    early); ``keep_last`` keeps the last epoch instead of the best (a refit, whose
    validation images are in its training set). ``soup`` averages the best epochs greedily
    (kept when validation does not get worse). ``compile`` runs the training steps through
    ``torch.compile``: meant for a GPU and long trials; on a CPU the first epoch spends seconds
    compiling and later ones measured 1 to 13% slower (benchmarks/RESULTS.md). A multi-objective trial is
    not reported to (Optuna cannot prune those).
    """
    started = time.time()
    device = resolve_device(device) if isinstance(device, str) else device
    if device.type == "cpu":
        keep_freed_memory()  # activations are not paged in afresh each step (benchmarks/allocator.py)
    number = trial.number if trial is not None and hasattr(trial, "number") else 0
    generator = torch.Generator().manual_seed(seed * 1000 + number)
    torch.manual_seed(seed * 1000 + number)
    num_classes = len(dataset.classes)
    pre = backbones.preprocessing(config.backbone, config.resolution_scale)
    x_train, y_train = dataset.tensors("train", pre.size, pre.interpolation)
    x_val, y_val = dataset.tensors("val", pre.size, pre.interpolation)

    model = backbones.create(config.backbone, num_classes, pretrained=pretrained, weights_dir=weights_dir,
                             drop_rate=config.regularizer_strength if config.regularizer == "dropout" else 0.0,
                             drop_path_rate=config.regularizer_strength if config.regularizer == "drop_path" else 0.0)
    backbones.freeze(model, config.frozen_depth)
    frozen = backbones.frozen_modules(model)
    model.to(device, memory_format=torch.channels_last)
    head_names = {f"{model.pretrained_cfg.get('classifier', 'classifier')}.{n}"
                  for n, _ in model.get_classifier().named_parameters()}

    weight_decay = config.regularizer_strength if config.regularizer == "weight_decay" else 0.0
    groups = timm.optim.param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=config.layer_decay)
    groups = [g for g in groups if g["params"]]
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
    penalty = make_penalty(model, config.regularizer, config.regularizer_strength, head_names)
    smoothing = config.regularizer_strength if config.regularizer == "label_smoothing" else 0.0

    # Deterministic inputs: run the frozen prefix once (cached across trials), train the rest.
    network, train_inputs, val_inputs, cache, feature_seconds = model, x_train, x_val, "off", 0.0
    prepare_eval = lambda x: _channels_last(pre.normalize(x))  # noqa: E731
    if cache_prefix and config.augment_strength == 0 and config.regularizer != "mixup":
        parts = split(model, prepare_eval(x_train[:2].to(device)))
        if parts is not None:
            prefix, network = parts
            key = (config.backbone, str(weights_dir), pretrained, len(prefix), pre.size, pre.interpolation,
                   str(device), dataset.spec, id(dataset))
            hits, feature_start = FEATURES.hits, time.time()
            train_inputs = FEATURES.get(key + ("train",), lambda: _run_prefix(prefix, x_train, prepare_eval, device))
            feature_seconds = time.time() - feature_start
            val_inputs = FEATURES.get(key + ("val",), lambda: _run_prefix(prefix, x_val, prepare_eval, device))
            prepare_eval, cache = (lambda x: x), ("hit" if FEATURES.hits > hits else "miss")

    # validation stays eager: compiling the eval-mode graph as well would cost a second compile
    train_network = torch.compile(network, dynamic=False) if compile else network
    n_train = len(train_inputs)
    batch_size = min(config.batch_size, n_train)
    steps_per_epoch = n_train // batch_size + (1 if n_train % batch_size > 1 else 0)  # never a batch of 1
    total_steps = steps_per_epoch * config.max_epochs
    warmup_steps = min(config.warmup_epochs * steps_per_epoch, total_steps // 2)
    pin = device.type == "cuda" and cache == "off"

    history, best, best_state, end_reason, step = [], None, None, "completed", 0
    top = []  # (score, epoch, state) of the best epochs, for a soup
    reporting = trial is not None and len(getattr(getattr(trial, "study", None), "directions", [None])) == 1
    last_epoch = min(epochs or config.max_epochs, config.max_epochs)
    params_total = sum(p.numel() for p in model.parameters())
    params_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def result(reason):
        return TrialResult(config=config, metrics=dict(best or {}), history=history,
                           best_epoch=(best or {}).get("epoch", 0), epochs_run=len(history),
                           wall_seconds=time.time() - started, params_total=params_total,
                           params_trainable=params_trainable, end_reason=reason,
                           classes=list(dataset.classes), preprocessing=pre, model=model, feature_cache=cache,
                           model_mb=model_megabytes(model), feature_seconds=round(feature_seconds, 3))

    def stop_pruned(reason):
        res = result(reason)
        if trial is not None and hasattr(trial, "set_user_attr"):
            for key, value in res.attrs().items():
                trial.set_user_attr(key, value)
        raise optuna.TrialPruned(reason)

    for epoch in range(1, last_epoch + 1):
        epoch_start = time.time()
        backbones.train_mode(model, frozen)
        order = torch.randperm(n_train, generator=generator)
        loss_sum, seen = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            inputs, labels = train_inputs[idx.to(train_inputs.device)], y_train[idx]
            labels = labels.to(device, non_blocking=True)
            targets = F.one_hot(labels, num_classes).float() * (1 - smoothing) + smoothing / num_classes
            if cache == "off":
                if pin:
                    inputs = inputs.pin_memory()
                inputs = augment(inputs.to(device, non_blocking=True).float().div_(255.0), config.augment_strength,
                                 generator)
                if config.regularizer == "mixup":
                    inputs, targets = mixup(inputs, targets, config.regularizer_strength, generator)
                inputs = pre.standardize(inputs)
            inputs = _channels_last(inputs)  # once, for raw images and cached features alike
            factor = lr_factor(step, schedule=config.lr_schedule, total_steps=total_steps, warmup_steps=warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * factor * group.get("lr_scale", 1.0)
            with _autocast(device):
                loss = F.cross_entropy(train_network(inputs).float(), targets)
            if penalty is not None:
                loss = loss + penalty.penalty()
            if not torch.isfinite(loss):
                stop_pruned(f"non-finite loss at epoch {epoch}, step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
            step += 1
            if interrupt is not None and interrupt.is_set():
                raise KeyboardInterrupt
            if deadline is not None and time.time() > deadline and b + 1 < steps_per_epoch:
                break
        if deadline is not None and time.time() > deadline and seen < n_train - 1:
            if best is None:
                stop_pruned(f"time budget ran out during epoch {epoch}, before any epoch finished")
            end_reason = f"time budget ran out during epoch {epoch}; kept epoch {best['epoch']}"
            break

        train_seconds = time.time() - epoch_start
        val = evaluate(network, val_inputs, y_val, prepare_eval, device, num_classes)
        record = dict(epoch=epoch, train_loss=loss_sum / max(seen, 1), val_loss=val["loss"],
                      val_accuracy=val["accuracy"], val_macro_f1=val["macro_f1"],
                      seconds=round(time.time() - epoch_start, 3), train_seconds=round(train_seconds, 3))
        history.append(record)
        if best is None or keep_last or (val["accuracy"], -val["loss"]) > (best["accuracy"], -best["loss"]):
            best = dict(val, epoch=epoch)
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if soup:
            state = best_state if best["epoch"] == epoch else {k: v.detach().to("cpu", copy=True)
                                                               for k, v in model.state_dict().items()}
            top = sorted(top + [((val["accuracy"], -val["loss"]), epoch, state)], key=lambda c: c[0],
                         reverse=True)[:SOUP_EPOCHS]
        if on_epoch is not None:
            on_epoch(record, best)
        if reporting:
            trial.report(val["accuracy"], epoch)
            if trial.should_prune():
                stop_pruned(f"pruned by the pruner after epoch {epoch}")
        if not math.isfinite(val["loss"]):
            stop_pruned(f"non-finite validation loss at epoch {epoch}")
        if deadline is not None and epoch < last_epoch and time.time() + record["seconds"] > deadline:
            end_reason = f"time budget ran out after epoch {epoch}"
            break

    soup_epochs, unsouped = [], None
    if soup and len(top) > 1:
        def score(state):
            model.load_state_dict(state)
            m = evaluate(network, val_inputs, y_val, prepare_eval, device, num_classes)
            return (m["accuracy"], -m["loss"])

        souped, soup_epochs, _ = greedy_soup(top, score)
        if len(soup_epochs) > 1:
            unsouped, best_state = best_state, souped
            model.load_state_dict(best_state)
            best = dict(evaluate(network, val_inputs, y_val, prepare_eval, device, num_classes), epoch=best["epoch"])
        else:
            soup_epochs = []
    model.load_state_dict(best_state)
    model.to(device, memory_format=torch.contiguous_format).eval()  # as load_model builds it: same numbers
    latency = latency_ms(model, pre.size, device)
    model.to("cpu")
    done = result(end_reason)
    done.latency_ms, done.soup_epochs, done.best_epoch_state = latency, soup_epochs, unsouped
    return done
