"""Measured: autotl's trial engine and search against the plain loop, side by side in one process.

    python benchmarks/run.py --quick            # about 10 minutes on 2 CPU cores
    python benchmarks/run.py                    # the full run recorded in RESULTS.md
    python benchmarks/run.py --device cuda      # on a GPU

Prints one JSON object as its last line and writes benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plain_loop  # noqa: E402
from datasets import natural_photos  # noqa: E402
from results_md import write_section  # noqa: E402

import autotl  # noqa: E402
from autotl import TrialConfig, backbones, load_dataset  # noqa: E402
from autotl.records import TrialRecord  # noqa: E402
from autotl.train import Setup, fit  # noqa: E402
from autotl.train._prefix import FEATURES  # noqa: E402

BACKBONE = "tf_efficientnet_lite0"


def split_folders(source: Path, target: Path, every: int = 5) -> Path:
    """target/train and target/val class folders: every ``every``-th image of each class goes to val."""
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        for i, file in enumerate(sorted(class_dir.iterdir())):
            dest = target / ("val" if i % every == 0 else "train") / class_dir.name
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(file, dest / file.name)
    return target


def fashion_folders(target: Path, per_class: int) -> Path:
    """A Fashion-MNIST subset written as PNG class folders (train/ and val/), for both loops."""
    from PIL import Image

    data = load_dataset("builtin:fashion-mnist", max_per_class=per_class, seed=0)
    for i in range(len(data.labels)):
        split = data.split_of[i]
        if split == "test":
            continue
        folder = target / split / data.classes[data.labels[i]].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.pixels(i)).save(folder / f"{i:06d}.png")
    return target


def plain_epochs(root: Path, *, scale, frozen_depth, augment, batch_size, epochs, lr=1e-3):
    """Seconds and images of each training epoch of the plain loop."""
    pre = backbones.preprocessing(BACKBONE, scale)
    train, _, n_classes = plain_loop.loaders(
        root / "train", root / "val", pre.size, batch_size, augment, pre.mean, pre.std
    )
    model = plain_loop.make_model(BACKBONE, n_classes, frozen_depth)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    return [plain_loop.train_epoch(model, train, optimizer) for _ in range(epochs)]


def plain_tensor_epochs(data, *, scale, batch_size, epochs, lr=1e-3):
    """The plain loop over all training images held in memory, NHWC like autotl: autotl's work, minus autotl
    (which reads each batch from its on-disk cache and resizes it)."""
    pre = backbones.preprocessing(BACKBONE, scale)
    index = data.indices("train")
    images, labels = data.images(index, pre.size, pre.interpolation), torch.from_numpy(data.labels[index]).long()
    model = backbones.create(BACKBONE, len(data.classes)).to(memory_format=torch.channels_last)  # as autotl does
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(images), generator=generator)
        for b in range(0, len(images) - 1, batch_size):
            idx = order[b : b + batch_size]
            x = pre.normalize(images[idx]).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        out.append(time.perf_counter() - start)
    return out


def autotl_run(data, device, compile=False, **settings):
    base = dict(backbone=BACKBONE, lr=1e-3, warmup_epochs=0, regularizer="none", lr_schedule="constant")
    return fit(TrialConfig(**{**base, **settings}), data, setup=Setup(device, compile=compile))


def best_curve_autotl(study, started):
    """(seconds since start, best-so-far validation accuracy) after every report of every trial."""
    points = []
    for trial in study.trials:
        if trial.datetime_start is None:
            continue
        t0 = trial.datetime_start.timestamp() - started
        elapsed = 0.0
        for report in TrialRecord.of(trial).history:
            elapsed += report.seconds
            if report.val_accuracy is not None:  # a slice's inner reports are not checked
                points.append((t0 + elapsed, report.val_accuracy))
    return _best_so_far(points)


def _best_so_far(points):
    best, out = 0.0, []
    for t, value in sorted(points):
        best = max(best, value)
        out.append((round(t, 2), best))
    return out


def time_to(curve, target):
    for t, value in curve:
        if value >= target:
            return t
    return float("inf")


def search_comparison(root: Path, budget: float, max_epochs: int, device, seed: int = 0) -> dict:
    """Random search + plain loop, no pruning, vs autotl's default search: same data, space and budget."""
    space = autotl.load_space("default")
    space.max_epochs = max_epochs
    started = time.time()
    points = []
    objective = plain_loop.plain_objective(
        space, root / "train", root / "val", started + budget, lambda best: points.append((time.time() - started, best))
    )
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    study.optimize(objective, timeout=budget)
    baseline = _best_so_far(points)
    target = baseline[-1][1] if baseline else 0.0

    FEATURES.clear()
    out = root.parent / "autotl-search"  # inside the benchmark's work folder, removed at the end
    started = time.time()
    result = autotl.search(
        str(root),
        n_trials=1000,
        timeout=budget,
        max_epochs=max_epochs,
        out=out,
        seed=seed,
        device=str(device),
        progress=False,
    )
    curve = best_curve_autotl(result.study, started)
    reached = time_to(curve, target)
    return dict(
        budget_s=budget,
        random_plain_best=target,
        random_plain_trials=len(study.trials),
        autotl_best=curve[-1][1] if curve else 0.0,
        autotl_trials=len(result.study.trials),
        autotl_seconds_to_target=reached,
        ratio=reached / budget,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller budgets: about 10 minutes on 2 CPU cores")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent / "RESULTS.md"))
    args = parser.parse_args(argv)
    device = autotl.train.resolve_device(args.device)
    quick = args.quick
    scale, batch, epochs = (0.5, 32, 2) if quick else (0.75, 32, 3)
    work = Path(tempfile.mkdtemp(prefix="autotl-bench-"))
    train_dir, _ = natural_photos(work / "photos", train_per_class=40 if quick else 50, test_per_class=1)
    photos = split_folders(train_dir, work / "photos-split")
    data = load_dataset(str(photos))
    n_train = data.count("train")
    log = {}

    def note(key, value):
        log[key] = value
        print(f"{key}: {value}", file=sys.stderr, flush=True)

    # 1. a full fine-tuning epoch with augmentation: images per second
    plain = plain_epochs(photos, scale=scale, frozen_depth=0.0, augment=True, batch_size=batch, epochs=2)
    ours = autotl_run(
        data, device, resolution_scale=scale, frozen_depth=0.0, augment_strength=0.3, batch_size=batch, max_epochs=2
    )
    plain_ips = plain[-1][1] / plain[-1][0]
    ours_ips = n_train / ours.history[-1].train_seconds
    note("plain_images_per_s", round(plain_ips, 2))
    note("autotl_images_per_s", round(ours_ips, 2))

    # 1b. the same trial through torch.compile (--compile): its second epoch; the first pays for compiling
    compiled = autotl_run(
        data,
        device,
        compile=True,
        resolution_scale=scale,
        frozen_depth=0.0,
        augment_strength=0.3,
        batch_size=batch,
        max_epochs=2,
    )
    compiled_s = [h.train_seconds for h in compiled.history]
    note(
        "compile_epoch_seconds",
        dict(eager=ours.history[-1].train_seconds, compiled=compiled_s[-1], compiled_first_epoch=compiled_s[0]),
    )

    # 2. the same work: no augmentation, no cache, fp32, same tensors
    # (the fastest of epochs 2 and 3 for each: the first epoch warms up, and one epoch alone is noisy)
    same_plain = min(plain_tensor_epochs(data, scale=scale, batch_size=batch, epochs=3)[1:])
    same_ours = fit(
        TrialConfig(
            backbone=BACKBONE,
            resolution_scale=scale,
            frozen_depth=0.0,
            augment_strength=0.0,
            batch_size=batch,
            max_epochs=3,
            lr=1e-3,
            warmup_epochs=0,
            regularizer="none",
            lr_schedule="constant",
        ),
        data,
        setup=Setup(device, cache_prefix=False),
    )
    same_ours = min(h.train_seconds for h in same_ours.history[1:])
    note("equal_settings_seconds", dict(plain=round(same_plain, 3), autotl=same_ours))

    # 3. half the blocks frozen, deterministic inputs: mean epoch time over the whole run
    FEATURES.clear()
    half_plain = plain_epochs(photos, scale=scale, frozen_depth=0.5, augment=False, batch_size=batch, epochs=epochs)
    half_ours = autotl_run(
        data,
        device,
        resolution_scale=scale,
        frozen_depth=0.5,
        augment_strength=0.0,
        batch_size=batch,
        max_epochs=epochs,
    )
    half_plain_s = sum(s for s, _ in half_plain) / len(half_plain)
    half_ours_s = sum(h.train_seconds for h in half_ours.history) / len(half_ours.history)
    note("frozen_half_epoch_seconds", dict(plain=round(half_plain_s, 2), autotl=round(half_ours_s, 2)))

    # 4. linear probe: second epoch, uncached vs cached
    FEATURES.clear()
    probe = dict(resolution_scale=1.0, frozen_depth=1.0, augment_strength=0.0, batch_size=batch, max_epochs=2)
    uncached = fit(TrialConfig(backbone=BACKBONE, **probe), data, setup=Setup(device, cache_prefix=False))
    cached = fit(TrialConfig(backbone=BACKBONE, **probe), data, setup=Setup(device))
    note(
        "linear_probe_second_epoch_seconds",
        dict(uncached=uncached.history[1].train_seconds, cached=cached.history[1].train_seconds),
    )

    # 5. search: time for autotl to reach what random search + plain loop reach in the whole budget
    fashion = fashion_folders(work / "fashion", per_class=60 if quick else 120)
    search = search_comparison(fashion, budget=120 if quick else 480, max_epochs=3 if quick else 4, device=device)
    note("search", search)

    results = dict(
        step_speedup_vs_plain_loop=round(ours_ips / plain_ips, 3),
        compile_step_speedup=round(ours.history[-1].train_seconds / compiled_s[-1], 3),
        equal_settings_time_ratio=round(same_ours / same_plain, 3),
        frozen_half_epoch_speedup=round(half_plain_s / half_ours_s, 3),
        linear_probe_epoch_speedup=round(
            uncached.history[1].train_seconds / max(cached.history[1].train_seconds, 1e-6), 1
        ),
        search_time_to_target_ratio=round(search["ratio"], 3),
    )
    machine = dict(
        device=str(device),
        cpu=platform.processor() or platform.machine(),
        threads=torch.get_num_threads(),
        gpu=torch.cuda.get_device_name() if device.type == "cuda" else None,
        torch=torch.__version__,
        quick=quick,
    )
    write_results(
        Path(args.results), results, log, machine, " ".join(["python benchmarks/run.py", *(argv or sys.argv[1:])])
    )
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))
    return results


def write_results(path: Path, results, log, machine, command):
    lines = [f"Machine: {json.dumps(machine)}", "", "| key | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in results.items()]
    lines += ["", "Measurements:", "", "```json", json.dumps(log, indent=2), "```"]
    write_section(command, lines, path)


if __name__ == "__main__":
    main()
