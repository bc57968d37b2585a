"""Keeping freed memory (autotl/train/_memory.py) against glibc's defaults, in one process.

    python benchmarks/allocator.py        # about 3 minutes on 2 CPU cores

The setting is process-wide and cannot be undone, so the process first measures with the C
library's defaults, then turns it on and measures the same again:
- a raw training step (lite0, 112 px, batch 32, channels_last, AdamW): median milliseconds of
  15 steps after 3 warm-up steps, in 3 rounds each, and the minor page faults per step;
- a whole autotl trial (``fit``, the step_speedup settings of ``run.py --quick``): images per
  second of its second epoch.
Writes its section of benchmarks/RESULTS.md and prints one JSON object last.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import natural_photos  # noqa: E402
from results_md import write_section  # noqa: E402
from run import BACKBONE, autotl_run, split_folders  # noqa: E402

from autotl import backbones, load_dataset  # noqa: E402
from autotl.train._memory import keep_freed_memory  # noqa: E402

SIZE, BATCH, ROUNDS, STEPS, WARM = 112, 32, 3, 15, 3


def step_rounds(model, optimizer, x, y) -> tuple[list[float], int]:
    """Median ms per step of each round, and the page faults per step over all rounds."""

    def step():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    medians, faults, timed = [], 0, 0
    for _ in range(ROUNDS):
        times = []
        for i in range(STEPS + WARM):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            step()
            if i >= WARM:
                times.append(time.perf_counter() - start)
                faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
                timed += 1
        medians.append(statistics.median(times) * 1000)
    return medians, faults // timed


def trial_images_per_s(data) -> float:
    result = autotl_run(
        data,
        torch.device("cpu"),
        resolution_scale=0.5,
        frozen_depth=0.0,
        augment_strength=0.3,
        batch_size=BATCH,
        max_epochs=2,
    )
    return data.count("train") / result.history[-1].train_seconds


def main() -> dict:
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="autotl-allocator-"))
    try:
        photos = split_folders(
            natural_photos(work / "photos", train_per_class=40, test_per_class=1)[0], work / "photos-split"
        )
        data = load_dataset(str(photos))
        model = backbones.create(BACKBONE, 10).to(memory_format=torch.channels_last).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        x = torch.rand(BATCH, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (BATCH,))
        ms, faults, ips, peak = {}, {}, {}, {}
        for setting in ("glibc defaults", "freed memory kept"):
            if setting == "freed memory kept":
                assert keep_freed_memory(), "this C library is not glibc: nothing to compare"
            else:
                os.environ["AUTOTL_KEEP_FREED_MEMORY"] = "0"  # fit() leaves the defaults alone
            ms[setting], faults[setting] = step_rounds(model, optimizer, x, y)
            ips[setting] = trial_images_per_s(data)
            peak[setting] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            os.environ.pop("AUTOTL_KEEP_FREED_MEMORY", None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    default, kept = "glibc defaults", "freed memory kept"
    results = dict(
        step_speedup=round(statistics.median(ms[default]) / statistics.median(ms[kept]), 3),
        trial_speedup=round(ips[kept] / ips[default], 3),
        page_faults_per_step={k: v for k, v in faults.items()},
    )
    machine = dict(
        cpu=platform.processor() or platform.machine(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        libc=" ".join(platform.libc_ver()),
    )
    lines = [
        f"Machine: {json.dumps(machine)}",
        "",
        f"{BACKBONE}, {SIZE} px, batch {BATCH}, channels_last, CPU; first with the C library's defaults, then "
        "with freed memory kept (the setting cannot be undone in a process).",
        "",
        "| | step ms per round | page faults per step | trial images/s (2nd epoch) | peak RSS so far, MB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for setting in (default, kept):
        lines.append(
            f"| {setting} | {', '.join(f'{t:.1f}' for t in ms[setting])} | {faults[setting]} | "
            f"{ips[setting]:.2f} | {peak[setting]:.0f} |"
        )
    lines += [
        "",
        f"Training step {results['step_speedup']:.3f}x, whole trial epoch {results['trial_speedup']:.3f}x "
        "as fast with freed memory kept.",
    ]
    write_section("python benchmarks/allocator.py", lines)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
