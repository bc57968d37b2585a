"""Search arms side by side: best validation accuracy against wall time, and the exported model's test accuracy.

    python benchmarks/anytime.py                  # 2 datasets x 5 arms x 3 seeds x 300 s, ~95 min on 2 cores
    python benchmarks/anytime.py --budget 60 --seeds 1 --datasets photos --no-results   # a quick look
    python benchmarks/anytime.py --arms top-k,hyperband   # rerun a subset (it replaces anytime.json)
    python benchmarks/anytime.py --arms freeze-thaw --merge   # rerun one arm, keep the others' stored runs
    python benchmarks/anytime.py --budget 600 --datasets fashion-full   # all of Fashion-MNIST, ~2 h on 2 cores

Arms, all on autotl's default search space and trial engine (LogME ranking, warm start, TPE), so only
the way trials share the time differs:
  freeze-thaw      autotl's default: trials advance in slices, the next to the best predicted gain per second
  top-k            every candidate one slice while a third of the time lasts, then only the best two
  hyperband        each trial to its end, Hyperband pruning (the search before slices)
  warm start only  each trial to its end, no pruning, only the space's warm-start recipes
and one peer:
  autogluon        AutoGluon's MultiModalPredictor, its default fit on the same lite0 weights, given the same
                   train/val/test images and seconds (benchmarks/autogluon_arm.py); it needs its own venv:
                   run benchmarks/setup_autogluon.sh first, else this arm fails (the others still run)

Each run is a fresh process with one CPU thread and the same wall-clock budget (data loading and
ranking included); two run at a time. A trial counts when it ends complete, at its best epoch's
validation accuracy. After the search the same process measures the exported model's accuracy on
the test set as ``autotl evaluate`` does. Writes benchmarks/anytime.json (or --out-json),
benchmarks/anytime.html and .png, and the "Search arms side by side (issue 22)" section of
benchmarks/RESULTS.md (not with --no-results); prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from datasets import natural_photos  # noqa: E402
from results_md import write_section  # noqa: E402

SEARCH = dict(sampler="tpe", rank=True, warm_start=True)
ARMS = {
    "freeze-thaw": dict(scheduler="freeze-thaw"),
    "top-k": dict(scheduler="top-k"),
    "hyperband": dict(scheduler="off", pruner="hyperband"),
    "warm start only": dict(scheduler="off", pruner="none"),  # n_trials: the number of recipes (warm_start_trials)
}
ALL_ARMS = (*ARMS, "autogluon")  # and a peer, run in its own venv
COLOURS = {
    "freeze-thaw": "#1f77b4",
    "top-k": "#2ca02c",
    "hyperband": "#ff7f0e",
    "warm start only": "#7f7f7f",
    "autogluon": "#d62728",
}
AUTOGLUON_PYTHON = HERE / ".autogluon" / "venv" / "bin" / "python"  # made by setup_autogluon.sh
SECTION = "Search arms side by side (issue 22)"
# Tasks where 300 s on one thread does not run every warm-start recipe to its end, so the arms' ways of sharing the
# time decide the model (on 320 images, 40 a class, every arm exported a warm-start recipe: RESULTS.md).
FASHION = dict(spec="builtin:fashion-mnist", max_per_class=150)  # 1200 train / 300 val / 1500 test, 10 classes
# All of Fashion-MNIST (48,000 train / 12,000 val / the official 10,000 test): the full fine-tune ends well above the
# cheap recipes here and needs most of the budget to get there, so the arms' ways of sharing the time can separate.
FASHION_FULL = dict(spec="builtin:fashion-mnist", max_per_class=None)
DATASETS = ("fashion", "photos", "fashion-full")
PHOTO_CROP, PHOTO_SIZE, PHOTO_PER_CLASS, PHOTO_TEST = (0.06, 0.12), 32, 100, 40  # 12 classes: 960/240/480


def warm_start_trials() -> int:
    """How many trials the default space's warm start enqueues (recipes x best-ranked backbones).

    The space's own backbone names stand in for a ranking: unknown names would be left out."""
    import autotl

    space = autotl.load_space("default")
    return len(space.warm_start_params(space.backbones()))


def run_one(task: dict) -> dict:
    """One search and its test accuracy in this (fresh, single-threaded) process; returns its record."""
    import torch

    torch.set_num_threads(1)
    try:
        return dict(task, **(autogluon(task) if task["arm"] == "autogluon" else search_and_test(task)))
    except Exception as error:
        reason = str(error) if isinstance(error, PeerMissing) else traceback.format_exc()
        return dict(task, error=reason, curve=[], final=None, test=None, trials=0, complete=0)


class PeerMissing(RuntimeError):
    """A peer's own environment is not set up: the run fails with this one line."""


def search_and_test(task: dict) -> dict:
    """The search (its best-so-far curve of complete trials), then the exported model on the test set."""
    import autotl

    started = time.time()
    arm = ARMS[task["arm"]]
    result = autotl.search(
        task["spec"],
        space="default",
        n_trials=warm_start_trials() if task["arm"] == "warm start only" else 1000,
        timeout=task["budget"],
        seed=task["seed"],
        out=task["out"],
        max_per_class=task.get("max_per_class"),
        progress=False,
        **SEARCH,
        **arm,
    )
    searched = time.time() - started
    points = sorted(
        (t.datetime_complete.timestamp() - started, t.values[0])
        for t in result.study.trials
        if t.state.name == "COMPLETE" and t.datetime_complete is not None
    )
    curve, best = [], float("-inf")
    for seconds, value in points:
        if value > best:
            best = value
            curve.append([round(seconds, 2), value])
    test, test_images = test_accuracy(result.model_dir, task["test_spec"], task.get("max_per_class"), task["seed"])
    return dict(
        curve=curve,
        final=best if curve else None,
        to_final=round(curve[-1][0] / task["budget"], 3) if curve else None,
        test=test,
        test_images=test_images,
        trials=len(result.study.trials),
        complete=len(points),
        states=dict(Counter(t.state.name for t in result.study.trials)),  # WAITING: enqueued, never started
        wall=round(searched, 1),
        test_seconds=round(time.time() - started - searched, 1),
    )


def test_accuracy(model_dir, spec: str, max_per_class: int | None, seed: int) -> tuple[float, int]:
    """The exported model's accuracy on ``spec``'s test split (else all its images), as ``autotl evaluate``."""
    import numpy as np

    from autotl.data import load_dataset
    from autotl.export import load_model

    model = load_model(model_dir)
    pre = model.preprocessing
    data = load_dataset(spec, max_per_class=max_per_class, seed=seed, image_size=pre.size)
    idx = test_indices(data)
    column = np.array([model.classes.index(name) for name in data.classes])  # dataset label -> model output
    correct = 0
    for images, labels in data.batches(idx, pre.size, pre.interpolation, batch_size=128):
        correct += int((model.logits(images).argmax(1) == column[labels.numpy()]).sum())
    return correct / len(idx), len(idx)


def test_indices(data):
    """The dataset's test split, else all its images (the photos' test folder has no split)."""
    import numpy as np

    return data.indices("test") if data.count("test") else np.arange(len(data.labels))


def autogluon(task: dict) -> dict:
    """AutoGluon's default fit on the images autotl's search and test would see, in its venv, on the same budget."""
    if not AUTOGLUON_PYTHON.is_file():
        raise PeerMissing(f"no AutoGluon venv at {AUTOGLUON_PYTHON}: run bash benchmarks/setup_autogluon.sh first")
    out = Path(task["out"])
    tables = write_images(task, out / "images")
    started = time.time()  # the process's budget starts here; AutoGluon reads the images inside it
    command = [str(AUTOGLUON_PYTHON), str(HERE / "autogluon_arm.py"), *tables, "--budget", str(task["budget"])]
    command += ["--seed", str(task["seed"]), "--out", str(out / "autogluon.json"), "--started", str(started)]
    with open(out / "autogluon.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = "".join((out / "autogluon.log").read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"autogluon_arm.py exited with {done.returncode}:\n{tail}")
    r = json.loads((out / "autogluon.json").read_text())
    return dict(
        curve=[[r["wall_s"], r["val"]]],  # one model, ready at the end of its fit
        final=r["val"],
        to_final=round(r["wall_s"] / task["budget"], 3),
        test=r["test"],
        test_images=r["test_images"],
        trials=1,
        complete=1,
        wall=r["wall_s"],
        test_seconds=r["eval_s"],
    )


def write_images(task: dict, folder: Path) -> list[str]:
    """The task's train, val and test images as PNGs, one CSV (image,label) per split: the same images, split
    and seed as autotl's search and test_accuracy load (load_dataset's val_fraction and cap); returns the CSVs."""
    import csv

    from PIL import Image

    from autotl.data import load_dataset

    cap, seed = task.get("max_per_class"), task["seed"]
    data = load_dataset(task["spec"], max_per_class=cap, seed=seed)
    test = data if task["test_spec"] == task["spec"] else load_dataset(task["test_spec"], max_per_class=cap, seed=seed)
    tables = []
    for split, source, idx in [
        ("train", data, data.indices("train")),
        ("val", data, data.indices("val")),
        ("test", test, test_indices(test)),
    ]:
        (folder / split).mkdir(parents=True)
        with open(folder / f"{split}.csv", "w", newline="") as handle:
            rows = csv.writer(handle)
            rows.writerow(["image", "label"])
            for i in idx:
                Image.fromarray(source.pixels(i)).save(folder / split / f"{i}.png")
                rows.writerow([f"{split}/{i}.png", source.classes[source.labels[i]]])
        tables.append(str(folder / f"{split}.csv"))
    return tables


def commit() -> str:
    """The commit the runs ran at (``+changes``: with uncommitted changes to autotl/ or this script)."""
    git = ["git", "-C", str(HERE)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--", "autotl", "benchmarks/anytime.py"], capture_output=True, text=True
    )
    return (head or "?") + ("+changes" if changed.stdout.strip() else "")


def median(values: list) -> float | None:
    """The median of the values that are not None (None if there are none)."""
    kept = [v for v in values if v is not None]
    return round(statistics.median(kept), 4) if kept else None


def summarise(runs: list[dict]) -> dict:
    """Per dataset and arm: test and validation accuracy (median and per seed), time to own final best, trials."""
    out = {}
    for dataset in sorted({r["dataset"] for r in runs}):
        arms = {}
        for arm in ALL_ARMS:
            mine = sorted((r for r in runs if r["dataset"] == dataset and r["arm"] == arm), key=lambda r: r["seed"])
            if not mine:
                continue
            arms[arm] = dict(
                median_test=median([r["test"] for r in mine]),
                test_per_seed=[None if r["test"] is None else round(r["test"], 4) for r in mine],
                median_val=median([r["final"] for r in mine]),
                median_time_to_own_final_fraction=median([r.get("to_final") for r in mine]),
                median_complete=median([r["complete"] for r in mine]),
                errors=sum("error" in r for r in mine),
                commit=", ".join(sorted({r.get("commit", "?") for r in mine})),
            )
        ft = arms.get("freeze-thaw", {}).get("median_test")
        others = {a: s["median_test"] for a, s in arms.items() if a != "freeze-thaw"}
        warm = others.get("warm start only")
        out[dataset] = dict(
            arms=arms,
            freeze_thaw_at_least_every_arm=ft is not None and all(v is None or ft >= v for v in others.values()),
            freeze_thaw_above_warm_start=ft is not None and warm is not None and ft > warm,
        )
    return out


def figure(runs: list[dict], budget: float, path: Path) -> None:
    """Best-so-far curves, one panel per dataset, one colour per arm, one line per seed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    datasets = sorted({r["dataset"] for r in runs})
    fig = make_subplots(rows=1, cols=len(datasets), subplot_titles=datasets)
    shown = set()
    longest = max([budget] + [p[0] for r in runs for p in r["curve"]])  # AutoGluon runs past the budget
    for col, dataset in enumerate(datasets, 1):
        for r in sorted((r for r in runs if r["dataset"] == dataset), key=lambda r: (r["arm"], r["seed"])):
            xs = [p[0] for p in r["curve"]] + [max([budget] + [p[0] for p in r["curve"]])]
            ys = [p[1] for p in r["curve"]] + ([r["curve"][-1][1]] if r["curve"] else [])
            fig.add_trace(
                go.Scatter(
                    x=xs[: len(ys)],
                    y=ys,
                    mode="lines+markers",
                    line_shape="hv",
                    line=dict(color=COLOURS[r["arm"]]),
                    name=r["arm"],
                    legendgroup=r["arm"],
                    showlegend=r["arm"] not in shown,
                ),
                row=1,
                col=col,
            )
            shown.add(r["arm"])
        # 3% past the longest run, so that its last point is drawn whole
        fig.update_xaxes(title_text="wall time (s)", range=[0, longest * 1.03], row=1, col=col)
        fig.update_yaxes(title_text="best validation accuracy (complete trials)", row=1, col=col)
    fig.update_layout(
        template="plotly_white",
        height=460,
        width=560 * len(datasets),
        title="Best validation accuracy against wall time, one line per seed (one CPU thread per run)",
    )
    fig.write_html(path, include_plotlyjs="cdn", full_html=True)  # small in git; RESULTS.md shows a PNG of it
    screenshot(fig, path.with_suffix(".png"))


def screenshot(fig, png: Path) -> None:
    """A PNG of the figure, drawn by headless Chromium from a page with plotly.js inside (offline)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print("no chromium: skipped the PNG of the figure", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "figure.html"
        fig.write_html(page, include_plotlyjs=True, full_html=True, config={"staticPlot": True})
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--window-size={int(fig.layout.width) + 20},{int(fig.layout.height) + 20}",
                "--virtual-time-budget=10000",
                f"--screenshot={png}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_results(summary: dict, budget: float, seeds: int, parallel: int, command: str, raw: Path) -> None:
    """The RESULTS.md section: the setup, the figure and one table row per (dataset, arm)."""
    lines = [
        f"Command: `{command}`. Machine: {platform.processor() or platform.machine()}, "
        f"{multiprocessing.cpu_count()} CPU cores, no GPU; each run one thread, {parallel} run(s) at a time; "
        f"budget {budget:g} s per run (data loading and LogME ranking included), {seeds} seed(s).",
        "",
        "![best validation accuracy against wall time](anytime.png)",
        "",
        f"Interactive: [anytime.html](anytime.html); raw numbers: {raw.name}. Every arm ranks the backbones "
        "by LogME and starts from the space's warm-start recipes, with TPE after them; each seed also draws its "
        "own data subset and validation split. Test accuracy is the exported model's (`result.model_dir`), "
        "measured after the search as `autotl evaluate` does: Fashion-MNIST's official test split capped at "
        f"{FASHION['max_per_class']} per class (fashion-full: all 10,000), and {PHOTO_TEST} test crops per class "
        "of the photos. The curve "
        "counts complete trials only: under a scheduler the trials it left paused end pruned, not complete. "
        "autogluon is AutoGluon's MultiModalPredictor (its default fit of the same lite0 weights, in its own venv, "
        "on the same train/val/test images and one thread): one point, its validation accuracy at the end of "
        "its fit, which runs past the budget by the seconds it takes to average its checkpoints.",
        "",
        "| dataset | arm | median test acc | test acc per seed | median val acc | "
        "median time to own final best / budget | complete trials (median) | commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset, s in summary.items():
        for arm, a in s["arms"].items():
            per_seed = ", ".join(fmt(v) for v in a["test_per_seed"])
            lines.append(
                f"| {dataset} | {arm} | {fmt(a['median_test'])} | {per_seed} | {fmt(a['median_val'])} | "
                f"{fmt(a['median_time_to_own_final_fraction'])} | {a['median_complete']:g} | {a.get('commit', '?')} |"
            )
    lines.append("")
    for dataset, s in summary.items():
        lines.append(
            f"{dataset}: freeze-thaw's median test accuracy at least every other arm's: "
            f"{s['freeze_thaw_at_least_every_arm']}; strictly above warm start only: "
            f"{s['freeze_thaw_above_warm_start']}."
        )
    write_section(SECTION, lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per search run (default 300)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--datasets", default="fashion,photos", help=f"comma list of {', '.join(DATASETS)} (default fashion,photos)"
    )
    parser.add_argument("--arms", default=",".join(ALL_ARMS), help=f"comma list of {', '.join(ALL_ARMS)} (default all)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time, one thread each (default 2)")
    parser.add_argument("--out-json", type=Path, default=HERE / "anytime.json", help="default benchmarks/anytime.json")
    parser.add_argument("--no-results", action="store_true", help="write no RESULTS.md section, no html/png")
    parser.add_argument("--keep", type=Path, help="keep the runs' folders (studies, models) here, not in a temp folder")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep --out-json's runs of the datasets and arms not rerun (the table names each arm's commit)",
    )
    parser.add_argument(
        "--from-json",
        action="store_true",
        help="run nothing: redraw the figure and the RESULTS.md section from --out-json",
    )
    args = parser.parse_args()
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in ALL_ARMS]
    if unknown:
        parser.error(f"unknown arm {unknown[0]!r}: use {', '.join(ALL_ARMS)}")
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}: use {', '.join(DATASETS)}")
    if args.from_json and not args.out_json.is_file():
        parser.error(f"--from-json redraws from {args.out_json}, which does not exist: name a json anytime.py wrote")
    if args.merge and not args.out_json.is_file():
        parser.error(f"--merge keeps the runs stored in {args.out_json}, which does not exist: rerun without --merge")
    return args


def make_tasks(args, work: Path) -> list[dict]:
    """One task per (dataset, seed, arm), shuffled; the photos are written under ``work``."""
    sets = {}
    if "fashion" in args.datasets:
        sets["fashion"] = dict(FASHION, test_spec=FASHION["spec"])
    if "fashion-full" in args.datasets:
        sets["fashion-full"] = dict(FASHION_FULL, test_spec=FASHION_FULL["spec"])
    if "photos" in args.datasets:
        train, test = natural_photos(
            work / "photos",
            train_per_class=PHOTO_PER_CLASS,
            test_per_class=PHOTO_TEST,
            size=PHOTO_SIZE,
            crop=PHOTO_CROP,
        )
        sets["photos"] = dict(spec=str(train), test_spec=str(test))
    tasks = [
        dict(
            dataset=d,
            arm=arm,
            seed=s,
            budget=args.budget,
            out=str(work / f"{d}-{arm.replace(' ', '-')}-{s}"),
            spec=cfg["spec"],
            test_spec=cfg["test_spec"],
            max_per_class=cfg.get("max_per_class"),
        )
        for d, cfg in sets.items()
        for s in range(args.seeds)
        for arm in args.arms
    ]
    random.Random(0).shuffle(tasks)  # interleave arms, so contention on the machine falls on all alike
    return tasks


def run_all(tasks: list[dict], parallel: int) -> list[dict]:
    """The tasks, ``parallel`` fresh processes at a time; prints each run as it ends."""
    runs = []
    with multiprocessing.get_context("spawn").Pool(parallel, maxtasksperchild=1) as pool:
        for run in pool.imap_unordered(run_one, tasks):
            runs.append(run)
            if "error" in run:
                print(f"{run['dataset']} {run['arm']} seed {run['seed']} FAILED:\n{run['error']}", flush=True)
                continue
            print(
                f"{run['dataset']} {run['arm']} seed {run['seed']}: val {fmt(run['final'])}, "
                f"test {fmt(run['test'])} on {run['test_images']} images "
                f"({run['complete']} complete of {run['trials']} trials, "
                f"{run['wall']} s + {run['test_seconds']} s test)",
                flush=True,
            )
    return runs


def main() -> None:
    args = parse_args()
    if args.from_json:
        saved = json.loads(args.out_json.read_text())
        figure(saved["runs"], saved["budget"], HERE / "anytime.html")
        seeds = len({r["seed"] for r in saved["runs"]})
        write_results(
            saved["summary"], saved["budget"], seeds, saved.get("parallel", 2), saved["command"], args.out_json
        )
        return
    stamp = commit()  # read first: the checkout may move on while the runs go
    work = args.keep or Path(tempfile.mkdtemp(prefix="autotl-anytime-"))
    try:
        runs = run_all(make_tasks(args, work), args.parallel)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)  # the runs' folders hold an exported model each
    for run in runs:
        run["commit"] = stamp
    if args.merge:
        rerun = {(r["dataset"], r["arm"]) for r in runs}
        runs += [r for r in json.loads(args.out_json.read_text())["runs"] if (r["dataset"], r["arm"]) not in rerun]
    summary = summarise(runs)
    command = shlex.join(["python", "benchmarks/anytime.py", *sys.argv[1:]])
    args.out_json.write_text(
        json.dumps(
            dict(budget=args.budget, parallel=args.parallel, runs=runs, summary=summary, command=command), indent=1
        )
    )
    if not args.no_results:
        figure(runs, args.budget, HERE / "anytime.html")
        write_results(summary, args.budget, args.seeds, args.parallel, command, args.out_json)
    print(json.dumps(summary))
    if any("error" in r for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
