"""Imbalanced classes: the search scored by macro-F1 against accuracy, and each loss treatment alone.

    python benchmarks/imbalance.py          # 2 long-tailed tasks x 3 seeds x 7 arms x 120 s, two runs at a time:
                                            # about 55 min on 2 cores
    python benchmarks/imbalance.py --seeds 1 --budget 90 --tasks photos-lt --arms accuracy macro_f1 --no-results

Two long-tailed tasks, written as CSV datasets under a temporary folder:

- fashion-lt: Fashion-MNIST's training images, 1,000 in the first class falling geometrically to 20 in the last
  (2,894 in all; each seed draws its own images); scored on the official test set, 300 images a class.
- photos-lt: benchmarks/datasets.py's natural-photo crops (12 classes, 32 px), 200 crops in the first class falling
  to 8 in the last; scored on 20 test crops a class from cells of the photos no training crop came from.

Each run is autotl's default search (freeze-thaw, LogME ranking, warm start; one CPU thread, the same seconds).
Arms: ``--metric accuracy`` and ``--metric macro_f1`` on the default space (plain cross-entropy), then with
``--metric macro_f1`` each loss treatment fixed in a space that extends the default one, and the treatments searched
as one more choice of the space. On the test set: macro-F1, accuracy, balanced accuracy and the lowest per-class
recall of the exported model. Writes benchmarks/imbalance.json and the "Imbalanced classes (issue 25)" section of
benchmarks/RESULTS.md; prints one JSON object last.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import platform
import random
import resource
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from datasets import natural_photos  # noqa: E402
from results_md import write_section  # noqa: E402

SECTION = "Imbalanced classes (issue 25)"
SEARCH = dict(sampler="tpe", rank=True, warm_start=True, scheduler="freeze-thaw")
TREATMENTS = ("inverse", "sqrt_inverse", "balanced_sampling", "focal")
ARMS = {
    "accuracy": dict(metric="accuracy", class_balance=None),
    "macro_f1": dict(metric="macro_f1", class_balance=None),
    **{f"macro_f1 + {t}": dict(metric="macro_f1", class_balance=t) for t in TREATMENTS},
    "macro_f1 + searched": dict(metric="macro_f1", class_balance="searched"),
}
SEARCHED = {
    "choices": {"none": {}, **{t: {} for t in TREATMENTS[:-1]}, "focal": {"focal_gamma": {"low": 1.0, "high": 3.0}}}
}
FASHION_LT = dict(largest=1000, smallest=20, test_per_class=300)
PHOTOS_LT = dict(largest=200, smallest=8, test_per_class=20, size=32, crop=(0.06, 0.12))


def long_tail(largest: int, smallest: int, classes: int) -> list[int]:
    """Images per class, falling geometrically from ``largest`` to ``smallest``."""
    return [round(largest * (smallest / largest) ** (i / (classes - 1))) for i in range(classes)]


def write_csv(folder: Path, rows: list[tuple[str, str, str]]) -> Path:
    """``folder/data.csv`` with path,label,split rows (paths relative to the folder)."""
    path = folder / "data.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return path


def fashion_lt(folder: Path, seed: int) -> Path:
    """Fashion-MNIST's long-tailed training subset and a balanced cut of its official test set, as PNGs + a CSV."""
    from autotl.data._sources import find_samples

    samples = find_samples("builtin:fashion-mnist")
    classes = sorted({s.label for s in samples})
    counts = long_tail(FASHION_LT["largest"], FASHION_LT["smallest"], len(classes))
    rng, rows = np.random.default_rng(seed), []
    folder.mkdir(parents=True, exist_ok=True)
    for c, name in enumerate(classes):
        for split, count in (("train", counts[c]), ("test", FASHION_LT["test_per_class"])):
            pool = [i for i, s in enumerate(samples) if s.label == name and s.split == split]
            for i in rng.choice(pool, size=count, replace=False):
                file = f"{split}_{c}_{i}.png"
                Image.fromarray(samples[i].pixels).save(folder / file)
                rows.append((file, name, split))
    return write_csv(folder, rows)


def photos_lt(folder: Path, seed: int) -> Path:
    """The natural-photo crops, long-tailed in train (the first class in PHOTOS largest), as a CSV over the PNGs."""
    train, test = natural_photos(
        folder,
        train_per_class=PHOTOS_LT["largest"],
        test_per_class=PHOTOS_LT["test_per_class"],
        size=PHOTOS_LT["size"],
        seed=seed,
        crop=PHOTOS_LT["crop"],
    )
    names = sorted(p.name for p in train.iterdir())
    counts = long_tail(PHOTOS_LT["largest"], PHOTOS_LT["smallest"], len(names))
    rows = []
    for name, count in zip(names, counts):
        rows += [(str(f.relative_to(folder)), name, "train") for f in sorted((train / name).glob("*.png"))[:count]]
        rows += [(str(f.relative_to(folder)), name, "test") for f in sorted((test / name).glob("*.png"))]
    return write_csv(folder, rows)


def space_file(folder: Path, class_balance: str | None) -> str:
    """The default space, or one that extends it with the class treatment fixed (or searched)."""
    if class_balance is None:
        return "default"
    import yaml

    path = folder / f"space-{class_balance}.yaml"
    treatment = SEARCHED if class_balance == "searched" else class_balance
    path.write_text(yaml.safe_dump({"extends": "default", "class_balance": treatment}))
    return str(path)


def run_one(task: dict) -> dict:
    """One search and its exported model on the test split, in a fresh single-threaded process."""
    import torch

    torch.set_num_threads(1)
    try:
        return dict(task, **search_and_test(task))
    except Exception:
        return dict(task, error=traceback.format_exc())


def search_and_test(task: dict) -> dict:
    import autotl
    from autotl.records import TrialRecord

    arm = ARMS[task["arm"]]
    started = time.time()
    result = autotl.search(
        task["spec"],
        space=space_file(Path(task["out"]).parent, arm["class_balance"]),
        n_trials=1000,
        timeout=task["budget"],
        seed=task["seed"],
        out=task["out"],
        progress=False,
        metric=arm["metric"],
        **SEARCH,
    )
    wall = time.time() - started
    config = TrialRecord.of(result.best_trial).config or {}
    return dict(
        wall=round(wall, 1),
        val=round(result.best_value, 4),
        trials=len(result.study.trials),
        best_class_balance=config.get("class_balance"),
        best_strategy=config.get("strategy"),
        **test_scores(result.model_dir, task["spec"]),
        peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3),
    )


def test_scores(model_dir, spec: str) -> dict:
    """The exported model on the dataset's test split: macro-F1, accuracy, balanced accuracy, lowest recall."""
    from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

    from autotl.data import load_dataset
    from autotl.export import load_model

    model = load_model(model_dir)
    pre = model.preprocessing
    data = load_dataset(spec, image_size=pre.size)
    index = data.indices("test")
    column = np.array([model.classes.index(name) for name in data.classes])  # dataset label -> model output
    truth, predicted = [], []
    for images, labels in data.batches(index, pre.size, pre.interpolation, batch_size=128):
        predicted.append(np.asarray(model.logits(images)).argmax(1))
        truth.append(column[labels.numpy()])
    truth, predicted = np.concatenate(truth), np.concatenate(predicted)
    return dict(
        test_macro_f1=round(float(f1_score(truth, predicted, average="macro", zero_division=0)), 4),
        test_accuracy=round(float((truth == predicted).mean()), 4),
        test_balanced_accuracy=round(float(balanced_accuracy_score(truth, predicted)), 4),
        test_min_recall=round(float(recall_score(truth, predicted, average=None, zero_division=0).min()), 4),
        test_images=len(truth),
    )


def summarise(runs: list[dict]) -> list[dict]:
    """Per (task, arm): the medians over seeds, and the per-seed macro-F1."""
    rows = []
    for task in dict.fromkeys(r["task"] for r in runs):
        for arm in dict.fromkeys(r["arm"] for r in runs):
            mine = sorted((r for r in runs if r["task"] == task and r["arm"] == arm and "error" not in r), key=_seed)
            if not mine:
                continue
            med = {k: round(statistics.median(r[k] for r in mine), 4) for k in MEASURES}
            rows.append(
                dict(
                    task=task,
                    arm=arm,
                    seeds=len(mine),
                    **med,
                    macro_f1_per_seed=[r["test_macro_f1"] for r in mine],
                    chosen=[r["best_class_balance"] for r in mine],
                )
            )
    return rows


MEASURES = ("test_macro_f1", "test_accuracy", "test_balanced_accuracy", "test_min_recall", "val", "wall")


def _seed(run: dict) -> int:
    return run["seed"]


def write_results(rows: list[dict], runs: list[dict], args, command: str) -> None:
    lines = [
        f"Command: `{command}`. Machine: {platform.machine()}, 2 CPU cores, no GPU; each run one thread, "
        f"{args.parallel} run(s) at a time, {args.budget:g} s a search (`--timeout`), {args.seeds} seed(s). "
        f"fashion-lt: {sum(long_tail(FASHION_LT['largest'], FASHION_LT['smallest'], 10))} training images "
        f"({FASHION_LT['largest']} down to {FASHION_LT['smallest']} a class), tested on "
        f"{FASHION_LT['test_per_class']} official test images a class; photos-lt: "
        f"{sum(long_tail(PHOTOS_LT['largest'], PHOTOS_LT['smallest'], 12))} crops ({PHOTOS_LT['largest']} down to "
        f"{PHOTOS_LT['smallest']}), {PHOTOS_LT['test_per_class']} test crops a class. Medians over seeds; "
        "val is the best trial's validation score by the arm's metric; `chosen` is the exported recipe's "
        "class_balance.",
        "",
        "| task | arm | test macro-F1 | per seed | test accuracy | balanced accuracy | lowest class recall "
        "| val | wall (s) | chosen |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['arm']} | **{r['test_macro_f1']:.4f}** | "
            f"{', '.join(f'{v:.3f}' for v in r['macro_f1_per_seed'])} | {r['test_accuracy']:.4f} | "
            f"{r['test_balanced_accuracy']:.4f} | {r['test_min_recall']:.3f} | {r['val']:.4f} | {r['wall']:.0f} | "
            f"{', '.join(str(c) for c in r['chosen'])} |"
        )
    failed = [r for r in runs if "error" in r]
    if failed:
        lines += [
            "",
            f"{len(failed)} run(s) failed: " + "; ".join(f"{r['task']} {r['arm']} seed {r['seed']}" for r in failed),
        ]
    peak = max((r.get("peak_rss_gb") or 0 for r in runs), default=0)
    lines += ["", f"Peak RSS of one search process (its test included): {peak:.2f} GB."]
    write_section(SECTION, lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per search (--timeout)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--tasks", nargs="+", default=["fashion-lt", "photos-lt"], choices=["fashion-lt", "photos-lt"])
    parser.add_argument("--no-results", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--out-json", type=Path, default=HERE / "imbalance.json")
    return parser.parse_args()


def make_tasks(args, work: Path) -> list[dict]:
    """One task per (task, seed, arm), shuffled so that contention falls on every arm alike."""
    makers = {"fashion-lt": fashion_lt, "photos-lt": photos_lt}
    tasks = []
    for name in args.tasks:
        for seed in range(args.seeds):
            spec = makers[name](work / f"{name}-data-{seed}", seed)
            for arm in args.arms:
                out = work / f"{name}-{seed}" / arm.replace(" ", "").replace("+", "-")
                out.parent.mkdir(parents=True, exist_ok=True)
                tasks.append(dict(task=name, arm=arm, seed=seed, budget=args.budget, spec=str(spec), out=str(out)))
    random.Random(0).shuffle(tasks)
    return tasks


def main() -> None:
    args = parse_args()
    command = "python benchmarks/imbalance.py " + shlex.join(sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="autotl-imbalance-"))
    tasks = make_tasks(args, work)
    print(f"{len(tasks)} runs in {work}", flush=True)
    runs = []
    with multiprocessing.get_context("spawn").Pool(args.parallel, maxtasksperchild=1) as pool:
        for run in pool.imap_unordered(run_one, tasks):
            runs.append(run)
            if "error" in run:
                print(f"{run['task']} {run['arm']} seed {run['seed']} FAILED:\n{run['error']}", flush=True)
            else:
                print(
                    f"{run['task']} {run['arm']} seed {run['seed']}: test macro-F1 {run['test_macro_f1']:.4f}, "
                    f"accuracy {run['test_accuracy']:.4f}, lowest recall {run['test_min_recall']:.3f} "
                    f"(val {run['val']:.4f}, {run['trials']} trials, {run['wall']} s, best {run['best_strategy']} "
                    f"/ {run['best_class_balance']})",
                    flush=True,
                )
    rows = summarise(runs)
    args.out_json.write_text(json.dumps(dict(command=command, budget=args.budget, rows=rows, runs=runs), indent=1))
    if not args.no_results:
        write_results(rows, runs, args, command)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
