"""Depthwise 5x5 weight gradients as a grouped convolution (autotl/backbones/_depthwise.py) against oneDNN's.

    python benchmarks/depthwise.py        # about 3 minutes on 2 CPU cores

One process, one model: rounds alternate between oneDNN's weight gradient and the grouped
convolution (a switch in _depthwise.py), so that a busy moment hits both. Per round: the
median of 10 timed training steps (AdamW, channels_last, freed memory kept as in a trial)
after 3 warm-up steps, at the two resolutions of ``run.py`` (--quick and full). Also times
each such layer's weight gradient alone. Writes its section of
benchmarks/RESULTS.md and prints one JSON object last.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import write_section  # noqa: E402
from same_padding import median_ms  # noqa: E402

from autotl import backbones  # noqa: E402
from autotl.backbones import _depthwise  # noqa: E402
from autotl.train._memory import keep_freed_memory  # noqa: E402

BACKBONE, BATCH, ROUNDS, SIZES = "tf_efficientnet_lite0", 32, 5, (112, 160)
SETTINGS = {"oneDNN": 10**6, "grouped": _depthwise.MIN_KERNEL}  # the smallest kernel given to the grouped way


def layer_rows(size: int) -> list[str]:
    """Each layer's weight gradient alone, at this input size: oneDNN's and the grouped one."""
    model = backbones.create(BACKBONE, 10).to(memory_format=torch.channels_last).train()
    calls, apply = [], _depthwise._DepthwiseConv.apply

    def record(x, weight, stride, padding):
        calls.append((x.shape, weight.shape, stride, padding))
        return apply(x, weight, stride, padding)

    _depthwise._DepthwiseConv.apply = record  # the layers' real inputs, kernels (6x6: a shifted 5x5) and padding
    try:
        model(torch.rand(BATCH, 3, size, size).contiguous(memory_format=torch.channels_last))
    finally:
        _depthwise._DepthwiseConv.apply = apply
    rows = []
    for x_shape, w_shape, stride, padding in calls:
        x = torch.randn(x_shape).contiguous(memory_format=torch.channels_last)
        w = torch.randn(w_shape).contiguous(memory_format=torch.channels_last)
        grad = torch.randn_like(F.conv2d(x, w, None, stride, padding, 1, x_shape[1]))
        onednn = median_ms(
            n=10,
            call=lambda: torch.ops.aten.convolution_backward(
                grad, x, w, None, stride, padding, (1, 1), False, (0, 0), x_shape[1], (False, True, False)
            ),
        )
        ctx = type(
            "Ctx", (), dict(saved_tensors=(x, w), stride=stride, padding=padding, needs_input_grad=(False, True))
        )
        grouped = median_ms(lambda: _depthwise._DepthwiseConv.backward(ctx(), grad), n=10)
        rows.append(
            f"| {size} | {tuple(x_shape)} | {w_shape[-2]}x{w_shape[-1]}, stride {stride[0]}, pad {padding[0]} | "
            f"{onednn:.2f} | {grouped:.2f} | {onednn / grouped:.2f} |"
        )
    return rows


def main() -> dict:
    torch.manual_seed(0)
    keep_freed_memory()
    ms = {(size, name): [] for size in SIZES for name in SETTINGS}
    for size in SIZES:
        model = backbones.create(BACKBONE, 10).to(memory_format=torch.channels_last).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        x = torch.rand(BATCH, 3, size, size).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (BATCH,))

        def step():
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        for _ in range(ROUNDS):
            for name, min_kernel in SETTINGS.items():
                _depthwise.MIN_KERNEL = min_kernel
                ms[size, name].append(median_ms(step, n=10))
    _depthwise.MIN_KERNEL = SETTINGS["grouped"]
    ratios = {size: statistics.median(o / g for o, g in zip(ms[size, "oneDNN"], ms[size, "grouped"])) for size in SIZES}
    results = {f"step_speedup_{size}px": round(ratios[size], 3) for size in SIZES}
    machine = dict(
        cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(), torch=torch.__version__
    )
    lines = [
        f"Machine: {json.dumps(machine)}",
        "",
        f"{BACKBONE}, batch {BATCH}, channels_last, AdamW, CPU; {ROUNDS} alternating rounds of a training step.",
        "",
        "| input px | oneDNN ms per round | grouped ms per round | median ratio (oneDNN / grouped) |",
        "| --- | --- | --- | --- |",
    ]
    for size in SIZES:
        lines.append(
            f"| {size} | {', '.join(f'{t:.1f}' for t in ms[size, 'oneDNN'])} | "
            f"{', '.join(f'{t:.1f}' for t in ms[size, 'grouped'])} | {ratios[size]:.3f} |"
        )
    lines += [
        "",
        "Each layer's weight gradient alone (median ms of 10):",
        "",
        "| input px | layer input | kernel | oneDNN ms | grouped ms | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for size in SIZES:
        lines += layer_rows(size)
    write_section("python benchmarks/depthwise.py", lines)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
