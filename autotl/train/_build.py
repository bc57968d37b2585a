"""Build a run: the pretrained model with a new head, what trains, the optimizer, the inputs, the schedule.

A run is built the same in any process from the recipe, the data, the seed and the
weights; what it then does lives in its TrainState, which can be saved and loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import timm.optim
import torch

from .. import backbones
from ..data import ImageDataset
from ..space import TrialConfig
from ._device import resolve_device
from ._inputs import Inputs, split_prefix, validation_check
from ._plan import Plan
from .class_balance import class_weights
from .regularizers import make_penalty


@dataclass
class Setup:
    """Where and how a run computes: the same recipe gives the same model under any setup (``compile`` and
    ``cache_prefix`` change the speed, not the numbers)."""

    device: torch.device | str = "auto"
    weights_dir: object = None  # a folder of <timm name>.safetensors|.pth files, tried first
    pretrained: bool = True  # False: random weights (tests)
    cache_prefix: bool = True  # keep a frozen prefix's outputs instead of running it every epoch
    compile: bool = False  # the training step through torch.compile (for a GPU)
    progress: bool = False  # a progress bar for a report or an evaluation that takes long

    def __post_init__(self):
        if isinstance(self.device, str):
            self.device = resolve_device(self.device)


@dataclass
class Split:
    """The dataset's positions a run uses: training images, validation images, and the validation check."""

    train: np.ndarray
    val: np.ndarray
    check: np.ndarray  # the validation images each report scores
    check_rows: np.ndarray  # their rows in ``val``
    train_labels: torch.Tensor

    @classmethod
    def of(cls, dataset: ImageDataset) -> Split:
        train, val, check = dataset.indices("train"), dataset.indices("val"), validation_check(dataset)
        labels = torch.from_numpy(dataset.labels[train].astype(np.int64))
        return cls(train, val, check, np.searchsorted(val, check), labels)


@dataclass
class Run:
    """One run's fixed parts; ``network`` is the part that trains (after the cached prefix, if any)."""

    config: TrialConfig
    dataset: ImageDataset
    setup: Setup
    split: Split
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    plan: Plan
    generator: torch.Generator  # the data order, augmentation and mixup partners
    pre: backbones.Preprocessing
    frozen: list = field(default_factory=list)  # modules kept in eval mode
    penalty: object = None
    network: torch.nn.Module | None = None
    train_network: torch.nn.Module | None = None  # ``network``, compiled when asked
    inputs: Inputs | None = None
    feature_cache: str = "off"  # 'hit', 'miss' or 'off'
    probing: bool = False  # LP-FT: the head trains alone until the plan's probe steps
    class_weights: torch.Tensor | None = None  # the loss's weight per class (class_balance inverse, sqrt_inverse)
    _changing: list | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return self.setup.device

    def changing(self) -> dict[str, torch.Tensor]:
        """The model's state entries that training can have changed, by name (views that follow the training):
        trainable parameters, and the buffers (BatchNorm statistics) of modules that are not frozen. Frozen parts
        only ever become trainable (LP-FT), never the reverse, so these include every entry that changed before."""
        if self._changing is None:
            ids = {id(module) for module in self.frozen}
            frozen = [name + "." for name, module in self.model.named_modules() if id(module) in ids]
            keys = {n for n, p in self.model.named_parameters() if p.requires_grad}
            keys |= {n for n, _ in self.model.named_buffers() if not any(n.startswith(f) for f in frozen)}
            self._changing = {k: v for k, v in sorted(self.model.state_dict().items()) if k in keys}
        return self._changing

    def fine_tune_all(self) -> None:
        """LP-FT's second phase: from the probed head, everything trains, on the images themselves."""
        self.probing, self._changing = False, None
        backbones.train_only(self.model, "full")
        self.frozen = backbones.frozen_modules(self.model)
        self.penalty = _penalty(self.model, self.config)
        self.network = self.model
        self.train_network = _compiled(self.model, self.setup.compile)
        self.inputs = Inputs(self.dataset, self.pre, self.device)


def build(config: TrialConfig, dataset: ImageDataset, setup: Setup, *, seed: int, reports=None) -> Run:
    """The run of ``config`` on ``dataset``, seeded with ``seed``, ending after ``reports`` reports when given."""
    torch.manual_seed(seed)
    split = Split.of(dataset)
    pre = backbones.preprocessing(config.backbone, config.resolution_scale)
    model = _pretrained(config, len(dataset.classes), setup, pre.size)
    optimizer = _optimizer(model, config)
    backbones.train_only(model, config.strategy, frozen_depth=config.frozen_depth, surgical_group=config.surgical_group)
    run = Run(
        config,
        dataset,
        setup,
        split,
        model,
        optimizer,
        Plan.make(config, len(split.train), reports),
        torch.Generator().manual_seed(seed),
        pre,
        frozen=backbones.frozen_modules(model),
        penalty=_penalty(model, config),
        probing=config.strategy == "lp_ft",
        class_weights=class_weights(
            torch.bincount(split.train_labels, minlength=len(dataset.classes)), config.class_balance
        ),
    )
    key = (config.backbone, str(setup.weights_dir), setup.pretrained) if setup.cache_prefix else None
    run.network, run.inputs, run.feature_cache = split_prefix(
        model, dataset, pre, setup.device, config, key, split.train, split.val
    )
    run.train_network = _compiled(run.network, setup.compile)
    return run


def _pretrained(config: TrialConfig, num_classes: int, setup: Setup, size: int) -> torch.nn.Module:
    """The backbone with its pretrained weights and a new head (LoRA's low-rank updates added), on the device."""
    strength = config.regularizer_strength
    model = backbones.create(
        config.backbone,
        num_classes,
        pretrained=setup.pretrained,
        weights_dir=setup.weights_dir,
        drop_rate=strength if config.regularizer == "dropout" else 0.0,
        drop_path_rate=strength if config.regularizer == "drop_path" else 0.0,
        input_size=size,
    )
    if config.strategy == "lora":
        backbones.add_lora(model, config.lora_rank, config.lora_alpha, config.lora_layers)
    return model.to(setup.device, memory_format=torch.channels_last)


def _optimizer(model: torch.nn.Module, config: TrialConfig) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum 0.9, over every parameter in timm's layer-decay groups (timm's factory).

    The optimizer holds every parameter (LP-FT unfreezes the body mid-run); a frozen one
    gets no gradient, and optimizers skip parameters without one. Biases, norms and what the
    model names in ``no_weight_decay()`` (a ViT's position embedding) are not decayed.
    """
    weight_decay = config.regularizer_strength if config.regularizer == "weight_decay" else 0.0
    return timm.optim.create_optimizer_v2(
        model, config.optimizer, lr=config.lr, weight_decay=weight_decay, layer_decay=config.layer_decay
    )


def _penalty(model, config: TrialConfig):
    """The regularizer's loss penalty over what trains now (None when it acts elsewhere)."""
    return make_penalty(model, config.regularizer, config.regularizer_strength, backbones.head_names(model))


def _compiled(network, compile: bool):
    return torch.compile(network, dynamic=False) if compile else network
