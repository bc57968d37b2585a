"""Where a run computes: the device, mixed precision on a GPU, and the memory layout of images."""

from __future__ import annotations

import contextlib
import sys

import torch

BAR_DELAY_S = 10.0  # a progress bar appears only for work that lasts longer than this


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' means CUDA when there is a GPU, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is visible: use --device auto or cpu")
    return torch.device(device)


def autocast(device: torch.device):
    """bf16 autocast on a GPU; nothing on the CPU (chosen once, as nanoGPT does)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images as NHWC in memory: convolutions run faster so, on the CPU too (benchmarks/RESULTS.md)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def bars(wanted) -> bool:
    """Progress bars go to a terminal only: in a log file the per-report lines say enough."""
    return bool(wanted) and sys.stderr.isatty()
