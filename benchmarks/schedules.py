"""Learning-rate schedules for trials whose length is decided while they run (the scheduler's slices).

    python benchmarks/schedules.py            # 3 arms x 2 lengths x 2 seeds, about 10 min on 2 cores
    python benchmarks/schedules.py --quick    # 1 seed, the short length

A full fine-tune of lite0 on a Fashion-MNIST subset is stopped after L reports (here a
report is an epoch) in three ways, one after the other in this process:

  cosine to L     cosine annealing planned for exactly L epochs: what a trial gets when its
                  length is known in advance (the best case for cosine)
  cosine, cut     cosine planned for the space's max_epochs, paused at L-c and ended with
                  autotl's cool-down (``Budget(end_soon=True)``) over its last c reports
  wsd, cut        warmup-stable-decay, paused and ended the same way

Each ends with its best report's weights, scored on the official test images of the
subset. Writes the "Schedules for trials of unknown length" section of RESULTS.md and
prints one JSON object last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_md import write_section  # noqa: E402

from autotl import load_dataset  # noqa: E402
from autotl.export import load_model  # noqa: E402
from autotl.export._folder import save  # noqa: E402
from autotl.space import TrialConfig  # noqa: E402
from autotl.train import COOL_DOWN_SHARE, Budget, fit  # noqa: E402

MAX_EPOCHS = 12
RECIPE = dict(
    backbone="tf_efficientnet_lite0",
    resolution_scale=0.25,
    strategy="full",
    optimizer="adamw",
    lr=5e-4,
    warmup_epochs=1,
    regularizer="label_smoothing",
    regularizer_strength=0.1,
    batch_size=32,
    augment_strength=0.3,
    report_every_images=100_000,  # a report each epoch
)


def test_accuracy(result, data) -> float:
    """The run's kept weights on the subset's test images, as ``autotl evaluate`` scores them."""
    with tempfile.TemporaryDirectory() as folder:
        save(result, folder)
        model = load_model(folder)
        pre, idx = model.preprocessing, data.indices("test")
        correct = 0
        for images, labels in data.batches(idx, pre.size, pre.interpolation, batch_size=128):
            correct += int((model.logits(images).argmax(1) == labels.numpy()).sum())
    return correct / len(idx)


def run_arm(arm: str, length: int, seed: int, data) -> dict:
    started = time.time()
    if arm == "cosine to L":
        config = TrialConfig.from_dict(dict(RECIPE, lr_schedule="cosine", max_epochs=length))
        result = fit(config, data, seed=seed)
    else:
        schedule = "cosine" if arm == "cosine, cut" else "wsd"
        config = TrialConfig.from_dict(dict(RECIPE, lr_schedule=schedule, max_epochs=MAX_EPOCHS))
        cool = max(1, int(np.ceil(COOL_DOWN_SHARE * (length - 1))))
        with tempfile.TemporaryDirectory() as folder:
            state = Path(folder) / "state.safetensors"
            fit(config, data, seed=seed, state_file=state, budget=Budget(pause_after=length - cool))
            result = fit(config, data, seed=seed, state_file=state, budget=Budget(end_soon=True))
    return dict(
        arm=arm,
        length=length,
        seed=seed,
        reports=len(result.history),
        val_accuracy=result.metrics["accuracy"],
        test_accuracy=test_accuracy(result, data),
        seconds=round(time.time() - started, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = load_dataset("builtin:fashion-mnist", max_per_class=250, image_size=56)
    lengths, seeds = ([3], [0]) if args.quick else ([3, 6], [0, 1])
    arms = ("cosine to L", "cosine, cut", "wsd, cut")
    runs = [run_arm(arm, length, seed, data) for length in lengths for seed in seeds for arm in arms]
    for run in runs:
        print(json.dumps(run), flush=True)
    summary = {
        f"{arm} @ {length}": statistics.median(
            r["test_accuracy"] for r in runs if r["arm"] == arm and r["length"] == length
        )
        for length in lengths
        for arm in arms
    }
    if not args.quick:
        write_section("Schedules for trials of unknown length", _markdown(runs, lengths, arms, data))
    print(json.dumps(dict(summary=summary, runs=runs)))


def _markdown(runs, lengths, arms, data) -> str:
    rows = ["| stopped after | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for length in lengths:
        cells = []
        for arm in arms:
            mine = [r for r in runs if r["arm"] == arm and r["length"] == length]
            tests = ", ".join(f"{r['test_accuracy']:.4f}" for r in mine)
            cells.append(f"{statistics.median(r['test_accuracy'] for r in mine):.4f} ({tests})")
        rows.append(f"| {length} epochs | " + " | ".join(cells) + " |")
    recipe = dataclasses.asdict(TrialConfig.from_dict(dict(RECIPE, lr_schedule="wsd")))
    return [
        "`python benchmarks/schedules.py` on "
        + f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads: "
        + f"Fashion-MNIST, {data.count('train')} train / {data.count('test')} test images, "
        + f"full fine-tune of lite0 at 56 px ({recipe['optimizer']} lr {recipe['lr']}, batch "
        + f"{recipe['batch_size']}). Test accuracy of the best report, median (per seed):",
        "",
        *rows,
    ]


if __name__ == "__main__":
    main()
