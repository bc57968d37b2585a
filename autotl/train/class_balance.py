"""How the training loss treats imbalanced classes: plain, class-weighted, class-balanced batches, or focal.

- ``none``: plain cross-entropy (each image counts alike, so the large classes dominate);
- ``inverse`` and ``sqrt_inverse``: each image's loss weighed by 1 / n_c (or 1 / sqrt(n_c)) of
  its class, scaled so that the weights average 1 over the training images
  (scikit-learn's ``class_weight="balanced"`` is ``inverse``);
- ``balanced_sampling``: an epoch's batches drawn with replacement with each class equally
  likely (as torch's WeightedRandomSampler does), the loss plain;
- ``focal``: the focal loss of Lin et al. (2017), -(1 - p)^gamma log p of the true class:
  images the model already gets right count less.
"""

from __future__ import annotations

import torch

from ..space._config import CLASS_BALANCE as TREATMENTS  # noqa: F401 - the names, declared with the recipe


def class_weights(counts: torch.Tensor, treatment: str) -> torch.Tensor | None:
    """Per-class loss weights for ``treatment`` from the training class ``counts`` (None: no weights); weighted by
    the counts they average 1, so the loss keeps its scale."""
    if treatment not in ("inverse", "sqrt_inverse"):
        return None
    counts = counts.double().clamp_min(1)
    raw = 1.0 / counts if treatment == "inverse" else 1.0 / counts.sqrt()
    return (raw * counts.sum() / (raw * counts).sum()).float()


def loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None, focal_gamma: float | None):
    """The mean over the batch of the (soft-target) cross-entropy, each class's term times its weight, or the focal
    loss when ``focal_gamma`` is given."""
    log_p = logits.float().log_softmax(1)
    terms = -targets * log_p
    if focal_gamma is not None:
        terms = terms * (1.0 - log_p.exp()).pow(focal_gamma)
    if weights is not None:
        terms = terms * weights.to(terms.device)
    return terms.sum(1).mean()


def balanced_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """An epoch's image positions (as many as there are images), drawn with replacement, every class equally
    likely."""
    counts = torch.bincount(labels)
    chance = 1.0 / counts[labels].double()
    return torch.multinomial(chance, len(labels), replacement=True, generator=generator)
