"""Anytime comparison: best validation accuracy against wall time, for three ways to search.

    python benchmarks/anytime.py                  # 2 datasets x 3 methods x 3 seeds, ~40 min on 2 cores
    python benchmarks/anytime.py --budget 60 --seeds 1 --datasets photos   # a quick look

Methods, all on autotl's default search space and trial engine, so only the search differs:
  autotl      autotl's default: LogME ranking, warm-start recipes, TPE, Hyperband pruning
  random      Optuna RandomSampler, no pruning, no ranking, no warm start
  tpe_median  Optuna TPE with MedianPruner, no ranking, no warm start

Each run is a fresh process with one CPU thread and the same wall-clock budget (data
loading and ranking included); two run at a time. A trial counts when it ends (complete),
at its best epoch's validation accuracy: that is when its model could be exported.
Writes benchmarks/anytime.json, benchmarks/anytime.html (Plotly) and the "Anytime search"
section of benchmarks/RESULTS.md; prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from datasets import natural_photos  # noqa: E402
from results_md import write_section  # noqa: E402

METHODS = {
    "autotl": dict(sampler="tpe", pruner="hyperband", rank=True, warm_start=True),
    "random": dict(sampler="random", pruner="none", rank=False, warm_start=False),
    "tpe_median": dict(sampler="tpe", pruner="median", rank=False, warm_start=False),
}
FASHION = dict(spec="builtin:fashion-mnist", max_per_class=40)  # 320 train / 80 val images, 10 classes
PHOTO_CROP, PHOTO_SIZE, PHOTO_PER_CLASS = (0.06, 0.12), 32, 30  # small crops: 12 classes, 288 train / 72 val


def run_one(task: dict) -> dict:
    """One search in this (fresh, single-threaded) process; returns its curve."""
    import torch

    torch.set_num_threads(1)
    import autotl

    started = time.time()
    result = autotl.search(
        task["spec"],
        space="default",
        n_trials=1000,
        timeout=task["budget"],
        seed=task["seed"],
        out=task["out"],
        max_per_class=task.get("max_per_class"),
        progress=False,
        **METHODS[task["method"]],
    )
    points = []
    for t in result.study.trials:
        if t.state.name == "COMPLETE" and t.datetime_complete is not None:
            points.append((t.datetime_complete.timestamp() - started, t.values[0]))
    points.sort()
    curve, best = [], float("-inf")
    for seconds, value in points:
        if value > best:
            best = value
            curve.append([round(seconds, 2), value])
    return dict(
        task,
        curve=curve,
        final=best if curve else None,
        trials=len(result.study.trials),
        complete=len(points),
        wall=round(time.time() - started, 1),
    )


def time_to_reach(curve: list, target: float) -> float | None:
    """Seconds until the curve first reaches ``target`` (None if never)."""
    for seconds, value in curve:
        if value >= target - 1e-9:
            return seconds
    return None


def summarise(runs: list[dict], budget: float) -> dict:
    """Per dataset: the done-when numbers, median over seeds."""
    out = {}
    for dataset in sorted({r["dataset"] for r in runs}):
        by = {(r["method"], r["seed"]): r for r in runs if r["dataset"] == dataset}
        seeds = sorted({s for _, s in by})
        reach, finals = [], {m: [] for m in METHODS}
        for seed in seeds:
            for m in METHODS:
                finals[m].append(by[(m, seed)]["final"] if (m, seed) in by else None)
            target = by[("random", seed)]["final"]
            t = time_to_reach(by[("autotl", seed)]["curve"], target) if target is not None else 0.0
            reach.append(t / budget if t is not None else float("inf"))
        median = {m: statistics.median([v if v is not None else 0.0 for v in vals]) for m, vals in finals.items()}
        out[dataset] = dict(
            autotl_time_to_random_final_fraction=[round(r, 3) for r in reach],
            median_time_fraction=round(statistics.median(reach), 3),
            finals={m: v for m, v in finals.items()},
            median_final=median,
            reaches_random_in_a_fifth=statistics.median(reach) <= 0.2,
            beats_tpe_median=median["autotl"] >= median["tpe_median"],
        )
    return out


def figure(runs: list[dict], budget: float, path: Path) -> None:
    """Best-so-far curves, one panel per dataset, one colour per method, one line per seed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    datasets = sorted({r["dataset"] for r in runs})
    colours = {"autotl": "#1f77b4", "random": "#7f7f7f", "tpe_median": "#ff7f0e"}
    fig = make_subplots(rows=1, cols=len(datasets), subplot_titles=datasets)
    for col, dataset in enumerate(datasets, 1):
        for r in sorted((r for r in runs if r["dataset"] == dataset), key=lambda r: (r["method"], r["seed"])):
            xs = [p[0] for p in r["curve"]] + [budget]
            ys = [p[1] for p in r["curve"]] + ([r["curve"][-1][1]] if r["curve"] else [])
            fig.add_trace(
                go.Scatter(
                    x=xs[: len(ys)],
                    y=ys,
                    mode="lines+markers",
                    line_shape="hv",
                    line=dict(color=colours[r["method"]]),
                    name=f"{r['method']} seed {r['seed']}",
                    legendgroup=r["method"],
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="wall time (s)", range=[0, budget], row=1, col=col)
        fig.update_yaxes(title_text="best validation accuracy", row=1, col=col)
    fig.update_layout(
        template="plotly_white",
        height=460,
        width=560 * len(datasets),
        title="Best validation accuracy against wall time (one CPU thread per run)",
    )
    fig.write_html(path, include_plotlyjs="cdn", full_html=True)  # small in git; RESULTS.md shows a PNG of it
    screenshot(fig, path.with_suffix(".png"))


def screenshot(fig, png: Path) -> None:
    """A PNG of the figure, drawn by headless Chromium from a page with plotly.js inside (offline)."""
    import shutil
    import subprocess

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


def write_results(summary: dict, budget: float, seeds: int, command: str) -> None:
    lines = [
        f"Command: `{command}`. Machine: {platform.processor() or platform.machine()}, "
        f"{multiprocessing.cpu_count()} CPU cores, no GPU; each run one thread, two runs at a time; "
        f"budget {budget:g} s per run (data loading and LogME ranking included), {seeds} seed(s).",
        "",
        "![best validation accuracy against wall time](anytime.png)",
        "",
        "Interactive: [anytime.html](anytime.html); raw numbers: anytime.json. Each seed also draws its "
        "own data subset and validation split. random and tpe_median coincide while a run has at most 10 "
        "trials: Optuna's TPE samples its first 10 (n_startup_trials) at random, with the same seed.",
        "",
        "| dataset | autotl's time to random's final best / budget, per seed | median | "
        "final best per seed (autotl; random; tpe_median) | median final best, autotl / random / tpe_median |",
        "|---|---|---|---|---|",
    ]
    for dataset, s in summary.items():
        finals = "; ".join(
            f"{m} {', '.join('-' if v is None else f'{v:.3f}' for v in s['finals'][m])}" for m in METHODS
        )
        medians = " / ".join(f"{s['median_final'][m]:.3f}" for m in METHODS)
        lines.append(
            f"| {dataset} | {', '.join(str(v) for v in s['autotl_time_to_random_final_fraction'])} | "
            f"{s['median_time_fraction']} | {finals} | {medians} |"
        )
    write_section("Anytime search (issue 6)", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=240.0, help="seconds per search run (default 240)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", default="fashion,photos")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time, one thread each (default 2)")
    parser.add_argument(
        "--from-json",
        action="store_true",
        help="run nothing: redraw the figure and the RESULTS.md section from anytime.json",
    )
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads((HERE / "anytime.json").read_text())
        figure(saved["runs"], saved["budget"], HERE / "anytime.html")
        write_results(saved["summary"], saved["budget"], len({r["seed"] for r in saved["runs"]}), saved["command"])
        return

    work = Path(tempfile.mkdtemp(prefix="autotl-anytime-"))
    sets = {}
    if "fashion" in args.datasets:
        sets["fashion"] = FASHION
    if "photos" in args.datasets:
        train, _ = natural_photos(
            work / "photos", train_per_class=PHOTO_PER_CLASS, test_per_class=1, size=PHOTO_SIZE, crop=PHOTO_CROP
        )
        sets["photos"] = dict(spec=str(train))
    tasks = [
        dict(
            dataset=d,
            method=m,
            seed=s,
            budget=args.budget,
            out=str(work / f"{d}-{m}-{s}"),
            spec=cfg["spec"],
            max_per_class=cfg.get("max_per_class"),
        )
        for d, cfg in sets.items()
        for s in range(args.seeds)
        for m in METHODS
    ]
    random.Random(0).shuffle(tasks)  # interleave methods, so contention on the machine falls on all alike
    try:
        with multiprocessing.get_context("spawn").Pool(args.parallel, maxtasksperchild=1) as pool:
            runs = []
            for run in pool.imap_unordered(run_one, tasks):
                runs.append(run)
                print(
                    f"{run['dataset']} {run['method']} seed {run['seed']}: final {run['final']} "
                    f"({run['complete']} complete of {run['trials']} trials, {run['wall']} s)",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the runs' folders hold an exported model each
    summary = summarise(runs, args.budget)
    command = " ".join(["python benchmarks/anytime.py", *sys.argv[1:]])
    (HERE / "anytime.json").write_text(
        json.dumps(dict(budget=args.budget, runs=runs, summary=summary, command=command), indent=1)
    )
    figure(runs, args.budget, HERE / "anytime.html")
    write_results(summary, args.budget, args.seeds, command)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
