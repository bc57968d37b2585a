"""Copy-free SAME padding (autotl/backbones/_padding.py) against timm's own layers, side by side.

    python benchmarks/same_padding.py        # about 2 minutes on 2 CPU cores

The same weights in both models; rounds alternate between them so that a busy moment hits
both. Per round: the median of 15 timed calls after 3 warm-up calls. Reports each round's
ratio (timm over autotl) and their median, for a training step (AdamW) and for inference,
and checks the outputs are identical. Writes its section of benchmarks/RESULTS.md and
prints one JSON object last.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import write_section  # noqa: E402

from autotl import backbones  # noqa: E402
from autotl.backbones import _depthwise  # noqa: E402

BACKBONE, SIZE, BATCH, ROUNDS = "tf_efficientnet_lite0", 112, 32, 5


def median_ms(call, n: int = 15, warm: int = 3) -> float:
    times = []
    for i in range(n + warm):
        start = time.perf_counter()
        call()
        if i >= warm:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> dict:
    torch.manual_seed(0)
    _depthwise.MIN_KERNEL = 10**6  # the padding alone: benchmarks/depthwise.py measures the depthwise gradient
    x = torch.rand(BATCH, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (BATCH,))
    ours = backbones.create(BACKBONE, 1000).to(memory_format=torch.channels_last)  # the pretrained head
    theirs = timm.create_model(BACKBONE).to(memory_format=torch.channels_last)
    theirs.load_state_dict(ours.state_dict())
    with torch.inference_mode():
        identical = torch.equal(ours.eval()(x), theirs.eval()(x))

    def train_step(model, optimizer):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def infer(model):
        with torch.inference_mode():
            model(x)

    ms = {(kind, name): [] for kind in ("train", "infer") for name in ("timm", "autotl")}
    for _ in range(ROUNDS):
        for name, model in (("timm", theirs), ("autotl", ours)):
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
            model.train()
            ms["train", name].append(median_ms(lambda: train_step(model, optimizer)))
            model.eval()
            ms["infer", name].append(median_ms(lambda: infer(model)))
    ratios = {kind: [t / a for t, a in zip(ms[kind, "timm"], ms[kind, "autotl"])] for kind in ("train", "infer")}
    results = dict(
        train_step_speedup=round(statistics.median(ratios["train"]), 3),
        inference_speedup=round(statistics.median(ratios["infer"]), 3),
        identical_outputs=identical,
    )
    machine = dict(
        cpu=platform.processor() or platform.machine(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        timm=timm.__version__,
    )
    lines = [
        f"Machine: {json.dumps(machine)}",
        "",
        f"{BACKBONE}, {SIZE} px, batch {BATCH}, channels_last, CPU; {ROUNDS} alternating rounds.",
        "",
        "| | timm ms per round | autotl ms per round | median ratio (timm / autotl) |",
        "| --- | --- | --- | --- |",
    ]
    for kind, label in (("train", "training step"), ("infer", "inference")):
        lines.append(
            f"| {label} | {', '.join(f'{t:.1f}' for t in ms[kind, 'timm'])} | "
            f"{', '.join(f'{t:.1f}' for t in ms[kind, 'autotl'])} | "
            f"{statistics.median(ratios[kind]):.3f} |"
        )
    lines += ["", f"Outputs identical (torch.equal): {identical}"]
    write_section("python benchmarks/same_padding.py", lines)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
