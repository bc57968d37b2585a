"""Split a model at the end of its frozen prefix, and cache what the prefix computes.

A frozen prefix in eval mode is a fixed function of the image. When a trial's inputs are
deterministic (no augmentation, no mixup), its outputs are the same every epoch and every
trial with the same backbone, weights, frozen depth and resolution: compute each once,
keep them (bounded in memory: 1 GB by default, $AUTOTL_FEATURE_CACHE_MB), and train only
the rest of the network on them.

Splitting relies on the model's ``forward_features`` being a plain chain of its children
(true of EfficientNet, ResNet, ConvNeXt and many CNNs in timm). The split is checked
numerically against the whole model once per architecture; a model that fails the check
simply trains uncached.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict

import torch
from torch import nn

_HEAD_NAMES = {"global_pool", "head", "fc", "classifier", "head_drop", "fc_norm", "head_hidden_size"}
_VERIFIED: dict[tuple, bool] = {}


def _chain(model: nn.Module) -> list[nn.Module]:
    """The modules ``forward_features`` runs in order, nested Sequentials flattened."""
    head = model.get_classifier()
    found = []

    def walk(module):
        for name, child in module.named_children():
            if module is model and (name in _HEAD_NAMES or child is head):
                continue
            if isinstance(child, nn.Sequential):
                walk(child)
            else:
                found.append(child)

    walk(model)
    return found


class _Rest(nn.Module):
    """The part of the model after the prefix: remaining chain modules, then the head."""

    def __init__(self, model: nn.Module, modules: list[nn.Module], pooled: bool):
        super().__init__()
        self.chain = nn.ModuleList(modules)
        self.model = [model]  # a list, so the whole model is not registered twice
        self.pooled = pooled

    def forward(self, x):
        for module in self.chain:
            x = module(x)
        model = self.model[0]
        if not self.pooled:
            return model.forward_head(x)
        pool, model.global_pool = model.global_pool, nn.Identity()
        try:
            return model.forward_head(x)
        finally:
            model.global_pool = pool


def _frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


def split(model: nn.Module, example: torch.Tensor):
    """(prefix, rest) such that rest(prefix(x)) == model(x), or None when it cannot be split.

    The prefix is every leading chain module whose parameters are all frozen, plus the
    global pooling when the whole chain is frozen (a linear probe then caches vectors).
    """
    chain = _chain(model)
    n = 0
    while n < len(chain) and _frozen(chain[n]):
        n += 1
    if n == 0 or not hasattr(model, "forward_head"):
        return None
    pooled = n == len(chain) and isinstance(getattr(model, "global_pool", None), nn.Module)
    prefix_modules = chain[:n] + ([model.global_pool] if pooled else [])
    prefix = nn.Sequential(*prefix_modules)
    rest = _Rest(model, chain[n:], pooled)
    key = (type(model).__name__, model.pretrained_cfg.get("architecture"), pooled)
    if key not in _VERIFIED:
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            try:
                _VERIFIED[key] = bool(torch.allclose(rest(prefix(example)), model(example), atol=1e-4, rtol=1e-4))
            except (RuntimeError, ValueError, TypeError):  # children that are not a chain (a ViT's tokens)
                _VERIFIED[key] = False
        model.train(was_training)
    if not _VERIFIED[key]:
        return None
    return prefix, rest


class Features:
    """The frozen prefix's outputs for ``count`` images, each computed the first time it is asked for.

    A trial on a large dataset can then train and report before the prefix has seen every
    image; after one epoch every row is here and later epochs (and trials) only read them.
    """

    def __init__(self, count: int, shape: tuple, device):
        self.values = torch.empty((count, *shape), dtype=torch.float32, device=device)
        self.done = torch.zeros(count, dtype=torch.bool)
        self.seconds = 0.0  # spent running the prefix

    @property
    def nbytes(self) -> int:
        return self.values.numel() * self.values.element_size()

    def get(self, positions: torch.Tensor, compute) -> torch.Tensor:
        """Rows ``positions``; ``compute(missing_positions)`` gives the prefix's outputs of those not yet done."""
        missing = positions[~self.done[positions]].unique()
        if len(missing):
            started = time.time()
            self.values[missing.to(self.values.device)] = compute(missing).float()
            self.done[missing] = True
            self.seconds += time.time() - started
        return self.values[positions.to(self.values.device)]


class FeatureCache:
    """``Features`` by key, least recently used dropped first past ``max_bytes``."""

    def __init__(self, max_bytes: int = 2 * 1024**3):
        self.max_bytes = max_bytes
        self.entries: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def fits(self, nbytes: int) -> bool:
        """Whether features of ``nbytes`` may be cached at all (larger ones train through the prefix instead)."""
        return nbytes <= self.max_bytes

    def get(self, key, make):
        """The entry for ``key``, or ``make()``'s, kept and counted as a miss."""
        if key in self.entries:
            self.entries.move_to_end(key)
            self.hits += 1
            return self.entries[key]
        self.misses += 1
        value = self.entries[key] = make()
        while sum(v.nbytes for v in self.entries.values()) > self.max_bytes and len(self.entries) > 1:
            self.entries.popitem(last=False)
        return value

    def clear(self):
        self.entries.clear()


FEATURES = FeatureCache(int(os.environ.get("AUTOTL_FEATURE_CACHE_MB", 1024)) * 1024**2)
