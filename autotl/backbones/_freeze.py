"""Freeze the first blocks of a timm model, from the input side, using its group_matcher.

``frozen_depth`` is a fraction of the backbone's blocks (timm's fine-grained groups, the
classifier excluded): 0 trains everything, 1 trains the classifier alone (a linear probe).
Frozen parameters get no gradient, so autograd builds no graph through a frozen prefix;
frozen modules stay in eval mode so BatchNorm statistics do not drift.
"""

from __future__ import annotations

import torch
from timm.models import group_parameters


def head_names(model: torch.nn.Module) -> set[str]:
    """Names of the classifier's parameters, from timm's ``pretrained_cfg['classifier']`` (a name or a tuple)."""
    heads = model.pretrained_cfg.get("classifier") or "classifier"
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    return {n for n, _ in model.named_parameters() if any(n == h or n.startswith(f"{h}.") for h in heads)}


def body_groups(model: torch.nn.Module) -> list[list[str]]:
    """Parameter names of each block group, input side first, classifier parameters left out."""
    head = head_names(model)
    groups = group_parameters(model, model.group_matcher(coarse=False))
    ordered = [[n for n in names if n not in head] for _, names in sorted(groups.items())]
    return [names for names in ordered if names]


def freeze(model: torch.nn.Module, frozen_depth: float) -> int:
    """Freeze the first ``round(frozen_depth * blocks)`` groups; returns how many were frozen."""
    if not 0.0 <= frozen_depth <= 1.0:
        raise ValueError(f"frozen_depth must be in [0, 1], got {frozen_depth}")
    groups = body_groups(model)
    n_frozen = round(frozen_depth * len(groups))
    frozen = {name for names in groups[:n_frozen] for name in names}
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
    return n_frozen


def frozen_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The outermost modules whose parameters are all frozen (to be kept in eval mode)."""
    found, covered = [], set()
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in covered):
            continue
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            found.append(module)
            covered.add(name)
    return found


def train_mode(model: torch.nn.Module, frozen: list[torch.nn.Module]) -> None:
    """Put the model in training mode, but keep its frozen modules in eval mode."""
    model.train()
    for module in frozen:
        module.eval()
