"""Augmentation on whole batches of tensors: one affine warp per batch, no per-sample Python.

Runs on whatever device the batch is on, so on the GPU when there is one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(images: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random flip, zoom, shift, small rotation and brightness/contrast jitter of a float batch.

    ``strength`` in [0, 1] scales every range; 0 returns the batch unchanged.
    """
    if strength <= 0:
        return images
    n, device = images.shape[0], images.device

    def uniform(low, high):
        return torch.rand(n, generator=generator, device="cpu").to(device) * (high - low) + low

    scale = uniform(1.0 - 0.35 * strength, 1.0)
    angle = uniform(-0.26 * strength, 0.26 * strength)  # radians, about +-15 degrees at full strength
    flip = torch.where(torch.rand(n, generator=generator).to(device) < 0.5, -1.0, 1.0)
    shift_x, shift_y = uniform(-0.15, 0.15) * strength, uniform(-0.15, 0.15) * strength
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift_x], 1), torch.stack([sin * flip, cos, shift_y], 1)], 1
    ).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    brightness = uniform(-0.2, 0.2).view(n, 1, 1, 1) * strength
    contrast = (1.0 + uniform(-0.3, 0.3) * strength).view(n, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * contrast + mean + brightness).to(images.dtype)


def mixup(images: torch.Tensor, targets: torch.Tensor, alpha: float, generator: torch.Generator | None = None):
    """Mix each image with a shuffled partner; returns (mixed images, soft targets).

    ``targets`` are one-hot (or already smoothed) class probabilities.
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    order = torch.randperm(images.shape[0], generator=generator).to(images.device)
    return lam * images + (1 - lam) * images[order], lam * targets + (1 - lam) * targets[order]
