"""Fine-tuning strategies: which parameters of a timm model train.

Every strategy trains the new head and picks the rest through timm's own blocks
(``group_matcher``), so it means the same on ResNet, ConvNeXt, ViT, EfficientNet and
MobileNetV3:

- ``full``: everything; ``linear_probe``: the head alone; ``frozen_prefix``: the blocks
  after a frozen share ``frozen_depth`` of them (from the input side).
- ``lp_ft`` (Kumar et al., ICLR 2022): the head alone first, then everything; the run
  switches with ``train_only(model, "full")``.
- ``surgical`` (Lee et al., ICLR 2023): one third of the blocks, early, middle or late.
- ``bitfit`` (Ben Zaken et al., 2022): every bias; ``norm_only``: the affine parameters
  of every BatchNorm, LayerNorm and GroupNorm.
- ``lora`` (Hu et al., 2022): low-rank updates added to linear and 1x1 convolution
  weights (``add_lora``), the weights themselves frozen; ``merge_lora`` folds them in,
  leaving a plain timm model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ._freeze import body_groups, freeze, head_names

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
LORA_TAG = "lora_"  # in the names of the low-rank factors' parameters


def train_only(model: nn.Module, strategy: str, *, frozen_depth: float = 0.5, surgical_group: str = "late") -> None:
    """Set ``requires_grad`` so that what ``strategy`` trains, and only that, gets gradients."""
    if strategy == "frozen_prefix":
        freeze(model, frozen_depth)
        return
    head = head_names(model)
    names = {n for n, _ in model.named_parameters()}
    if strategy == "full":
        trained = names
    elif strategy in ("linear_probe", "lp_ft"):
        trained = head
    elif strategy == "surgical":
        trained = head | set(_surgical_names(model, surgical_group))
    elif strategy == "bitfit":
        trained = head | {n for n in names if n.endswith("bias") and LORA_TAG not in n}
    elif strategy == "norm_only":
        trained = head | _norm_names(model)
    elif strategy == "lora":
        trained = head | {n for n in names if LORA_TAG in n}
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    for name, param in model.named_parameters():
        param.requires_grad_(name in trained)


def _thirds(count: int) -> dict[str, list[int]]:
    """Block-group positions of the early, middle and late thirds (as even as the count allows)."""
    parts = np.array_split(np.arange(count), 3)
    return {name: [int(i) for i in part] for name, part in zip(("early", "middle", "late"), parts)}


def _surgical_names(model: nn.Module, group: str) -> list[str]:
    groups = body_groups(model)
    return [name for i in _thirds(len(groups))[group] for name in groups[i]]


def _norm_names(model: nn.Module) -> set[str]:
    found = set()
    for module_name, module in model.named_modules():
        if isinstance(module, NORMS):
            found |= {f"{module_name}.{n}" if module_name else n for n, _ in module.named_parameters(recurse=False)}
    return found


class LowRank(nn.Module):
    """A weight plus ``alpha / rank * B @ A``: B starts at zero, so the model starts as pretrained."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float):
        super().__init__()
        rows, cols = weight.shape[0], weight[0].numel()
        self.lora_a = nn.Parameter(torch.empty(rank, cols, dtype=weight.dtype, device=weight.device))
        self.lora_b = nn.Parameter(torch.zeros(rows, rank, dtype=weight.dtype, device=weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.lora_b @ self.lora_a).view_as(weight) * self.scale


def lora_targets(model: nn.Module, layers: str = "all") -> list[str]:
    """Names of the body's linear and 1x1 convolution modules (``layers='late'``: in its later half of blocks)."""
    head = head_names(model)
    groups = body_groups(model)
    allowed = {n for names in (groups[len(groups) // 2 :] if layers == "late" else groups) for n in names}
    found = []
    for name, module in model.named_modules():
        pointwise = isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1
        if (isinstance(module, nn.Linear) or pointwise) and f"{name}.weight" in allowed - head:
            found.append(name)
    return found


def add_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, layers: str = "all") -> int:
    """Give each target layer's weight a trainable low-rank update; returns how many layers were adapted."""
    targets = lora_targets(model, layers)
    for name in targets:
        module = model.get_submodule(name)
        parametrize.register_parametrization(module, "weight", LowRank(module.weight, rank, alpha))
    return len(targets)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every low-rank update into its weight: a plain model with the adapted model's outputs."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight") and isinstance(module.parametrizations.weight[0], LowRank):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model
