"""What a model costs to use: its prediction latency on a device, and its size."""

from __future__ import annotations

import statistics
import time

import torch


def latency_ms(model: torch.nn.Module, size: int, device, repeats: int = 10) -> float:
    """Median milliseconds to predict one ``size`` x ``size`` image on ``device`` (after two warm-up runs)."""
    x = torch.zeros(1, 3, size, size, device=device)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 2):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


def model_megabytes(model: torch.nn.Module) -> float:
    """The size of the model's weights and buffers, in MB (10^6 bytes), as exported."""
    return round(sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6, 3)
