"""Rank the candidate backbones before any training: LogME on their frozen features.

Each candidate's pretrained body (no head) embeds a sample of the training images once;
LogME scores how well a linear model on those features explains the labels. The ranking
orders the warm-start trials, and with ``drop_margin`` candidates scoring more than that
below the best are left out of the search. It is computed once per study and stored in
it, so a resumed study keeps the same candidates.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .. import backbones
from ..records import BackboneScore, Ranking
from ._logme import logme

MAX_IMAGES = 500  # features of this many training images per backbone: enough to rank, quick to embed


def rank_backbones(
    names: list[str],
    data,
    *,
    resolution_scale: float = 1.0,
    weights_dir=None,
    device=None,
    max_images: int = MAX_IMAGES,
    seed: int = 0,
    drop_margin: float | None = None,
) -> Ranking:
    """The LogME ranking of ``names`` on ``data``'s training images, best first, as stored in the study."""
    started = time.time()
    device = device if device is not None else torch.device("cpu")
    train = data.indices("train")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(train, size=min(max_images, len(train)), replace=False))  # image indices
    labels = data.labels[sample]
    scores = []
    for name in names:
        begun = time.time()
        features = embed(name, data, sample, resolution_scale, weights_dir, device)
        score = round(logme(features, labels), 6)
        scores.append(BackboneScore(backbone=name, logme=score, seconds=round(time.time() - begun, 3)))
    scores.sort(key=lambda s: -s.logme)
    for rank, score in enumerate(scores, 1):
        score.rank = rank
        score.dropped = drop_margin is not None and score.logme < scores[0].logme - drop_margin
    return Ranking(
        method="LogME",
        images=int(len(sample)),
        resolution_scale=resolution_scale,
        margin=drop_margin,
        seconds=round(time.time() - started, 3),
        scores=scores,
    )


def embed(
    name: str, data, sample: np.ndarray, resolution_scale: float, weights_dir, device, batch_size: int = 128
) -> np.ndarray:
    """Pooled pretrained features (before any head) of the images ``sample`` (indices into ``data``).

    Only the sampled images are read from the cache: a large dataset is not resized whole just to be ranked.
    """
    pre = backbones.preprocessing(name, resolution_scale)
    model = backbones.create(name, 1, weights_dir=weights_dir).to(device, memory_format=torch.channels_last).eval()
    out = []
    with torch.inference_mode():
        for images, _ in data.batches(sample, pre.size, pre.interpolation, batch_size):
            x = pre.normalize(images.to(device))
            x = x.contiguous(memory_format=torch.channels_last)
            out.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu())
    return torch.cat(out).numpy()


def kept(ranking: Ranking) -> list[str]:
    """The backbones the search may pick, best-ranked first."""
    return [s.backbone for s in ranking.scores if not s.dropped]
