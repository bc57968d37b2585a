"""One recipe, chosen by hand, trained on all of Fashion-MNIST for the whole budget: what a search could reach.

The recipe is a full fine-tune of tf_efficientnet_lite0 at 56 px (resolution scale 0.25),
AdamW at 1e-3, batches of 64, no augmentation, cosine without warmup, label smoothing 0.1,
its schedule fitted to ``--seconds`` by autotl's trainer (``Budget(seconds=...)``); a
report every 4,096 training images, the best report's weights kept and scored on the
official 10,000 test images. It is not a peer a user could run without knowing the recipe:
it says how much of the gap between a search and the small CNN (fashion_cnn.py) is the
machine's speed and how much is where the search spent its time.

    python benchmarks/fashion_recipe.py --seconds 780     # prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from autotl import load_dataset
from autotl.space import TrialConfig
from autotl.train import Budget, evaluate, fit

RECIPE = dict(
    backbone="tf_efficientnet_lite0",
    resolution_scale=0.25,
    strategy="full",
    optimizer="adamw",
    lr=1e-3,
    lr_schedule="cosine",
    warmup_epochs=0,
    regularizer="label_smoothing",
    regularizer_strength=0.1,
    batch_size=64,
    augment_strength=0.0,
    max_epochs=2,
)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=780, help="training time (the search's 900 s less its start)")
    args = parser.parse_args()
    data = load_dataset("builtin:fashion-mnist", image_size=224)
    started = time.time()
    result = fit(TrialConfig(**RECIPE), data, budget=Budget(seconds=args.seconds))
    fitted = time.time() - started
    pre = result.preprocessing
    batches = ((pre.normalize(x), y) for x, y in data.batches(data.indices("test"), pre.size, pre.interpolation))
    test = evaluate(result.model.eval(), batches, device=torch.device("cpu"), num_classes=len(data.classes))
    found = dict(
        recipe=RECIPE,
        seconds=round(fitted, 1),
        reports=[[h.report, round(h.val_accuracy, 4)] for h in result.history],
        val_accuracy=round(result.metrics["accuracy"], 4),
        test_accuracy=round(test["accuracy"], 4),
        peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    )
    print(json.dumps(found))
    return found


if __name__ == "__main__":
    main()
