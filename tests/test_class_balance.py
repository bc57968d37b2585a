"""How the loss treats imbalanced classes: each treatment against a hand computation on a small batch, balanced
sampling drawing the classes evenly, and every treatment training a real run."""

from __future__ import annotations

import math

import pytest
import torch

from autotl import TrialConfig, load_dataset
from autotl.train import fit
from autotl.train.class_balance import balanced_order, class_weights, loss

COUNTS = torch.tensor([6, 2, 2])


def test_inverse_weights_are_one_over_the_count_averaging_one_over_the_images():
    # 1/6, 1/2, 1/2 scaled by 10 images / (6/6 + 2/2 + 2/2) = 10/3
    assert class_weights(COUNTS, "inverse").tolist() == pytest.approx([10 / 18, 10 / 6, 10 / 6])
    # 1/sqrt(6), 1/sqrt(2), 1/sqrt(2) scaled by 10 / (6/sqrt(6) + 2 * 2/sqrt(2))
    scale = 10 / (6 / math.sqrt(6) + 4 / math.sqrt(2))
    assert class_weights(COUNTS, "sqrt_inverse").tolist() == pytest.approx(
        [scale / math.sqrt(6), scale / math.sqrt(2), scale / math.sqrt(2)]
    )
    for treatment in ("none", "balanced_sampling", "focal"):
        assert class_weights(COUNTS, treatment) is None


def test_each_loss_is_what_a_hand_computation_gives():
    """Two images of classes 0 and 2; probabilities from the logits by hand."""
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    p0 = math.exp(2) / (math.exp(2) + 2)  # image 0, its class 0
    p2 = math.e / (2 * math.e + 1)  # image 1, its class 2
    plain = (-math.log(p0) - math.log(p2)) / 2
    assert loss(logits, targets, None, None).item() == pytest.approx(plain)
    assert loss(logits, targets, None, None).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, targets).item()
    )
    weights = torch.tensor([0.5, 1.0, 2.0])
    assert loss(logits, targets, weights, None).item() == pytest.approx((-0.5 * math.log(p0) - 2.0 * math.log(p2)) / 2)
    focal = (-((1 - p0) ** 2) * math.log(p0) - (1 - p2) ** 2 * math.log(p2)) / 2
    assert loss(logits, targets, None, 2.0).item() == pytest.approx(focal)
    assert loss(logits, targets, None, 0.0).item() == pytest.approx(plain)  # gamma 0 is cross-entropy


def test_balanced_sampling_draws_the_classes_evenly_over_an_epoch():
    labels = torch.tensor([0] * 180 + [1] * 15 + [2] * 5)
    generator = torch.Generator().manual_seed(0)
    drawn = torch.cat([balanced_order(labels, generator) for _ in range(50)])
    assert len(drawn) == 50 * len(labels)
    shares = torch.bincount(labels[drawn], minlength=3).double() / len(drawn)
    assert shares.tolist() == pytest.approx([1 / 3] * 3, abs=0.02)


@pytest.mark.parametrize("treatment", ["inverse", "sqrt_inverse", "balanced_sampling", "focal"])
def test_every_treatment_trains_a_real_run(treatment, photo_folder):
    data = load_dataset(str(photo_folder), val_fraction=0.25)
    config = TrialConfig(
        backbone="tf_efficientnet_lite0",
        resolution_scale=0.25,
        strategy="frozen_prefix",
        frozen_depth=0.75,
        lr=3e-3,
        max_epochs=2,
        batch_size=16,
        augment_strength=0.0,
        class_balance=treatment,
    )
    result = fit(config, data)
    assert result.metrics["accuracy"] > 1 / len(data.classes) + 0.2  # well above chance on 3 classes
    assert config.describe() != TrialConfig(**{**config.to_dict(), "class_balance": "none"}).describe()
