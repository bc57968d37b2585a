"""The plain peer for full Fashion-MNIST: a small CNN trained from scratch under a wall-clock budget.

Two 3x3 convolutions (32 and 64 channels, ReLU, 2x2 max-pooling), a 128-unit dense layer
with dropout, Adam at 1e-3, batches of 128, on the 28x28 images. The 60,000 official
training images are split 48,000 train / 12,000 val (stratified, seed 0); training runs
epoch after epoch until the budget is spent, the best-val epoch's weights are kept, and
that model is scored on the official 10,000 test images. It is the bar a transfer-learning
search on the same data has to clear.

    python benchmarks/fashion_cnn.py --budget 900     # prints one JSON line
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import nn

from autotl.data._sources import FASHION_MNIST_DIR, _read_idx

BATCH_SIZE = 128
EVAL_BATCH_SIZE = 256


def _idx(prefix: str, kind: str) -> np.ndarray:
    for ext in (".gz", ""):
        path = FASHION_MNIST_DIR / f"{prefix}-{kind}{ext}"
        if path.is_file():
            return _read_idx(path)
    raise FileNotFoundError(
        f"Fashion-MNIST {prefix}-{kind} is not in {FASHION_MNIST_DIR}: "
        f"install dataset-fashion-mnist or set AUTOTL_FASHION_MNIST_DIR"
    )


def load_fashion_mnist() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"train", "val", "test"}`` -> (images N x 1 x 28 x 28 float in [0, 1], labels int64)."""

    def tensors(images, labels):
        return (
            torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1),
            torch.from_numpy(labels.astype(np.int64)),
        )

    images, labels = _idx("train", "images-idx3-ubyte"), _idx("train", "labels-idx1-ubyte")
    train, val = train_test_split(np.arange(len(labels)), test_size=12_000, stratify=labels, random_state=0)
    return {
        "train": tensors(images[train], labels[train]),
        "val": tensors(images[val], labels[val]),
        "test": tensors(_idx("t10k", "images-idx3-ubyte"), _idx("t10k", "labels-idx1-ubyte")),
    }


def small_cnn(n_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 28 -> 14
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 14 -> 7
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.25),
        nn.Linear(128, n_classes),
    )


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    correct = sum(
        (model(images[i : i + EVAL_BATCH_SIZE]).argmax(1) == labels[i : i + EVAL_BATCH_SIZE]).sum().item()
        for i in range(0, len(labels), EVAL_BATCH_SIZE)
    )
    return correct / len(labels)


def run_cnn(budget_s: float, seed: int = 0, threads: int | None = None) -> dict:
    """Train the small CNN for ``budget_s`` seconds of wall clock; score the best-val epoch on the test set.

    The clock starts after the data are loaded; an epoch cut short by the budget is still
    evaluated on val, so ``seconds`` can pass the budget by one val pass. ``threads``: torch's intra-op
    threads (None leaves torch's default).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    data = load_fashion_mnist()
    (train_x, train_y), (val_x, val_y) = data["train"], data["val"]
    torch.manual_seed(seed)
    model = small_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)

    start = time.perf_counter()
    deadline = start + budget_s
    best_val, best_state, epochs, curve, seconds_to_090 = -1.0, None, 0, [], None
    while time.perf_counter() < deadline:
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        for i in range(0, len(order), BATCH_SIZE):
            batch = order[i : i + BATCH_SIZE]
            loss = F.cross_entropy(model(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if time.perf_counter() >= deadline:
                break
        epochs += 1
        val = accuracy(model, val_x, val_y)
        seconds = time.perf_counter() - start
        curve.append((round(seconds, 2), val))
        if seconds_to_090 is None and val >= 0.90:
            seconds_to_090 = round(seconds, 2)
        if val > best_val:
            best_val, best_state = val, copy.deepcopy(model.state_dict())
    seconds = time.perf_counter() - start

    if best_state is not None:  # else no epoch fitted in the budget: the untrained model is scored
        model.load_state_dict(best_state)
    return {
        "test_accuracy": accuracy(model, *data["test"]),
        "best_val_accuracy": max(best_val, 0.0),
        "epochs": epochs,
        "seconds": round(seconds, 2),
        "seconds_to_val_0_90": seconds_to_090,
        "curve": curve,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=900, help="training wall-clock seconds (default 900)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    print(json.dumps(run_cnn(args.budget, seed=args.seed, threads=args.threads)))
