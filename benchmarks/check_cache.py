"""What a validation check costs a half-frozen, augmented trial, with the frozen prefix's outputs of the validation
images cached and without.

    python benchmarks/check_cache.py     # about 3 min on 2 cores

A sliced search scores every report on the validation check, and a half-frozen recipe with augmentation cannot
cache its training inputs; its validation inputs do not change, so their prefix outputs are computed once and each
check runs only the rest of the network. Measured here, in one process, side by side: the warm start's half-frozen
SGD recipe (lite0 and lite1, augmented) on the two tasks of benchmarks/anytime.py (its photo crops, 240 validation
images at 168 px; its Fashion-MNIST subset, 300), built twice (cache on, cache off), each scored CHECKS times in
turn after its first check (which computes the cached outputs: timed apart). Writes the "Checks on the cached
prefix" section of benchmarks/RESULTS.md and prints one JSON object last.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from anytime import FASHION, PHOTO_CROP, PHOTO_PER_CLASS, PHOTO_SIZE, PHOTO_TEST, commit  # noqa: E402
from datasets import natural_photos  # noqa: E402
from results_md import write_section  # noqa: E402

from autotl import load_dataset, load_space  # noqa: E402
from autotl.train import Setup  # noqa: E402
from autotl.train._build import build  # noqa: E402
from autotl.train._fit import score  # noqa: E402

CHECKS = 5


def half_frozen_recipes():
    """The default space's warm-start half-frozen recipes (augmented), lite0 and lite1."""
    space = load_space("default")
    names = ["tf_efficientnet_lite0", "tf_efficientnet_lite1"]
    for label, params in space.warm_start_params(names):
        config = space.sample(optuna.trial.FixedTrial(params))
        if 0 < config.frozen_depth < 1 and config.augment_strength > 0:
            yield label, config


def timed_check(run) -> tuple[float, dict]:
    started = time.perf_counter()
    scores = score(run, run.split.check, run.split.check_rows)
    return time.perf_counter() - started, scores


def measure(task: str, label: str, config, data) -> dict:
    runs = {
        "cached": build(config, data, Setup(), seed=0),
        "uncached": build(config, data, Setup(cache_prefix=False), seed=0),
    }
    first, _ = timed_check(runs["cached"])
    seconds = {name: [] for name in runs}
    found = {}
    for _ in range(CHECKS):
        for name, run in runs.items():
            took, found[name] = timed_check(run)
            seconds[name].append(took)
    cached, uncached = statistics.median(seconds["cached"]), statistics.median(seconds["uncached"])
    return dict(
        task=task,
        recipe=label,
        check_images=len(runs["cached"].split.check),
        size=runs["cached"].pre.size,
        uncached_s=round(uncached, 3),
        cached_s=round(cached, 3),
        speedup=round(uncached / cached, 2),
        first_cached_s=round(first, 3),
        same_scores=found["cached"]["accuracy"] == found["uncached"]["accuracy"]
        and abs(found["cached"]["loss"] - found["uncached"]["loss"]) < 1e-4,
    )


def main() -> dict:
    torch.set_num_threads(1)  # as anytime.py's runs
    rows = []
    with tempfile.TemporaryDirectory() as work:
        train, _ = natural_photos(
            Path(work) / "photos",
            train_per_class=PHOTO_PER_CLASS,
            test_per_class=PHOTO_TEST,
            size=PHOTO_SIZE,
            crop=PHOTO_CROP,
        )
        tasks = {
            "photos": load_dataset(str(train), seed=0),
            "fashion": load_dataset(FASHION["spec"], max_per_class=FASHION["max_per_class"], seed=0),
        }
        for task, data in tasks.items():
            for label, config in half_frozen_recipes():
                rows.append(measure(task, label, config, data))
                print(json.dumps(rows[-1]), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    lines = [
        "Command: `python benchmarks/check_cache.py` "
        f"(commit {commit()}, {time.strftime('%Y-%m-%d')}). Machine: {platform.machine()}, "
        f"{torch.get_num_threads()} thread, no GPU; peak RSS {peak:.2f} GB.",
        "",
        "A half-frozen recipe with augmentation trains on the images, but its validation check now reads the frozen "
        "prefix's cached outputs of the check images and runs only the rest of the network. Median of "
        f"{CHECKS} checks each way, alternating, in one process; the first cached check (which computes the "
        "outputs) apart.",
        "",
        "| task | recipe | check images | px | check without cache (s) | with (s) | speed-up | first check with (s) "
        "| same scores |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['recipe']} | {r['check_images']} | {r['size']} | {r['uncached_s']} | {r['cached_s']} "
            f"| {r['speedup']}x | {r['first_cached_s']} | {r['same_scores']} |"
        )
    write_section("Checks on the cached prefix", lines)
    summary = dict(rows=rows, peak_rss_gb=round(peak, 3))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
