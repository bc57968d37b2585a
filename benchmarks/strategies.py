"""Fine-tuning strategies side by side: the best test accuracy each reaches, and the default search with them.

    python benchmarks/strategies.py                     # 2 datasets x 11 arms x 3 seeds, ~50 min on 2 cores
    python benchmarks/strategies.py --seeds 1 --datasets photos --strategy-budget 30   # a quick look

On the natural-photo and Fashion-MNIST subsets of benchmarks/anytime.py, each arm is one
autotl search in a fresh single-threaded process with a wall-clock budget (data loading
and ranking included), then ``autotl evaluate`` of its exported model on held-out test
images (Fashion-MNIST: 500 of the official test images, the same for every arm; photos:
360 crops from parts of the photos no training crop touches). Arms:

  strategy:NAME   the default space with only that strategy (``--strategy-budget`` each)
  default         the default space: every strategy, trials pruned among their strategy's
  frozen_only     the space before strategies: ``frozen_depth`` in {0, .25, .5, .75, 1}
                  (full fine-tune ... linear probe), same engine as default
  before          frozen_only with every trial compared with every other by the pruner,
                  as autotl pruned before this change
  (the three default arms get ``--default-budget`` each)

Writes benchmarks/strategies.json, strategies.html and .png (Plotly) and the
"Fine-tuning strategies" section of benchmarks/RESULTS.md; prints one JSON line last.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from anytime import FASHION, PHOTO_CROP, PHOTO_PER_CLASS, PHOTO_SIZE, screenshot  # noqa: E402
from datasets import natural_photos  # noqa: E402
from results_md import write_section  # noqa: E402

FASHION_TEST = dict(spec="builtin:fashion-mnist", max_per_class=50)  # 500 official test images, seed 0
DEFAULT_ARMS = ("default", "frozen_only", "before")


def spaces(folder: Path) -> dict[str, Path]:
    """A YAML space per arm, each extending the default space."""
    from autotl.space._space import SPACES_DIR

    default = yaml.safe_load((SPACES_DIR / "default.yaml").read_text())
    found = {"default": SPACES_DIR / "default.yaml"}
    for name, settings in default["strategy"]["choices"].items():
        found[f"strategy:{name}"] = _write(folder / f"{name}.yaml", {"strategy": {"choices": {name: settings}}})
    frozen = {
        "strategy": "frozen_prefix",
        "frozen_depth": {"choices": [0.0, 0.25, 0.5, 0.75, 1.0]},
        "start_from": {**default["start_from"], "strategy": "frozen_prefix", "frozen_depth": 0.5},
        "warm_start": {
            "backbones": default["warm_start"]["backbones"],
            "recipes": {
                "linear_probe": dict(
                    frozen_depth=1.0, lr=5.0e-3, warmup_epochs=0, regularizer="none", augment_strength=0.0
                ),
                "half_frozen_sgd": {"frozen_depth": 0.5, "optimizer": "sgd", "lr": 1.0e-2, "lr_schedule": "cosine"},
                "full_finetune": {"frozen_depth": 0.0, "optimizer": "adamw", "lr": 5.0e-4, "lr_schedule": "cosine"},
            },
        },
    }
    found["frozen_only"] = found["before"] = _write(folder / "frozen_only.yaml", frozen)
    return found


def _write(path: Path, settings: dict) -> Path:
    from autotl.space._space import SPACES_DIR

    path.write_text(yaml.safe_dump({"extends": str(SPACES_DIR / "default.yaml"), **settings}, sort_keys=False))
    return path


def run_one(task: dict) -> dict:
    """One search and its test accuracy, in this (fresh, single-threaded) process."""
    import torch

    torch.set_num_threads(1)
    import autotl
    from autotl import cli
    from autotl.search import _plugins

    if task["arm"] == "before":
        _plugins.strategy_of = lambda trial: None  # one group: every trial compared with every other
    started = time.time()
    result = autotl.search(
        task["spec"],
        space=task["space"],
        n_trials=1000,
        timeout=task["budget"],
        seed=task["seed"],
        out=task["out"],
        max_per_class=task.get("max_per_class"),
        progress=False,
    )
    wall = time.time() - started
    trials = result.study.trials
    best = result.best_trial
    test = None
    if best is not None:
        printed = io.StringIO()
        args = ["evaluate", "--model", str(Path(task["out"]) / "best_model"), "--dataset", task["test_spec"]]
        args += ["--max-per-class", str(task["test_max_per_class"])] if task.get("test_max_per_class") else []
        with contextlib.redirect_stdout(printed):
            cli.main(args)
        test = float(re.search(r"accuracy: ([0-9.]+)", printed.getvalue()).group(1))
    config = result.best_config if best is not None else None
    return dict(
        task,
        test_accuracy=test,
        val_accuracy=result.best_value if best is not None else None,
        best_strategy=config.strategy if config else None,
        best_recipe=config.describe() if config else None,
        trials=len(trials),
        complete=sum(t.state.name == "COMPLETE" for t in trials),
        pruned=sum(t.state.name == "PRUNED" for t in trials),
        strategies_tried=sorted({t.user_attrs.get("strategy") or "?" for t in trials}),
        wall=round(wall, 1),
    )


def summarise(runs: list[dict]) -> dict:
    """Per dataset and arm: test accuracy per seed, its median, and what won."""
    out = {}
    for dataset in sorted({r["dataset"] for r in runs}):
        arms = {}
        for arm in sorted({r["arm"] for r in runs if r["dataset"] == dataset}):
            mine = sorted((r for r in runs if r["dataset"] == dataset and r["arm"] == arm), key=lambda r: r["seed"])
            tests = [r["test_accuracy"] for r in mine]
            arms[arm] = dict(
                test=tests,
                median_test=statistics.median([t if t is not None else 0.0 for t in tests]),
                complete=[r["complete"] for r in mine],
                pruned=[r["pruned"] for r in mine],
                winners=[r["best_strategy"] for r in mine],
            )
        out[dataset] = arms
    return out


def figure(summary: dict, path: Path) -> None:
    """Median test accuracy per arm (seeds as dots), one panel per dataset."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    datasets = list(summary)
    fig = make_subplots(rows=1, cols=len(datasets), subplot_titles=datasets, shared_yaxes=False)
    for col, dataset in enumerate(datasets, 1):
        arms = sorted(summary[dataset], key=lambda a: summary[dataset][a]["median_test"])
        colours = ["#d62728" if a in DEFAULT_ARMS else "#1f77b4" for a in arms]
        fig.add_trace(
            go.Bar(
                x=[summary[dataset][a]["median_test"] for a in arms],
                y=arms,
                orientation="h",
                marker_color=colours,
                name="median of seeds",
                showlegend=col == 1,
            ),
            row=1,
            col=col,
        )
        for a in arms:
            tests = [t for t in summary[dataset][a]["test"] if t is not None]
            fig.add_trace(
                go.Scatter(
                    x=tests,
                    y=[a] * len(tests),
                    mode="markers",
                    marker=dict(color="black", size=6),
                    name="one seed",
                    showlegend=col == 1 and a == arms[0],
                ),
                row=1,
                col=col,
            )
        low = min((t for a in arms for t in summary[dataset][a]["test"] if t is not None), default=0.0)
        fig.update_xaxes(title_text="test accuracy", range=[max(0.0, low - 0.05), 1.0], row=1, col=col)
    fig.update_layout(
        template="plotly_white",
        height=520,
        width=620 * len(datasets),
        title="Test accuracy of the exported model, per strategy and search (same budget within each group)",
        barmode="overlay",
    )
    fig.write_html(path, include_plotlyjs="cdn", full_html=True)
    screenshot(fig, path.with_suffix(".png"))


def write_results(summary: dict, args, command: str) -> None:
    lines = [
        f"Command: `{command}`. Machine: {platform.processor() or platform.machine()}, "
        f"{multiprocessing.cpu_count()} CPU cores, no GPU; each run one thread, {args.parallel} runs at a time; "
        f"budget {args.strategy_budget:g} s per single-strategy search and {args.default_budget:g} s per "
        f"default-space search (data loading and LogME ranking included); {args.seeds} seed(s), each drawing "
        "its own training subset. Test accuracy of the exported model (`autotl evaluate`): Fashion-MNIST on "
        "500 official test images, photos on 360 crops from held-out parts of the photos.",
        "",
        "![test accuracy per strategy](strategies.png)",
        "",
        "Interactive: [strategies.html](strategies.html); raw numbers: strategies.json.",
        "",
        "| dataset | arm | test accuracy per seed | median | trials complete / pruned per seed | "
        "strategy of the exported model per seed |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, arms in summary.items():
        for arm, s in sorted(arms.items(), key=lambda item: -item[1]["median_test"]):
            tests = ", ".join("-" if t is None else f"{t:.3f}" for t in s["test"])
            counts = ", ".join(f"{c}/{p}" for c, p in zip(s["complete"], s["pruned"]))
            winners = ", ".join(map(str, s["winners"]))
            lines.append(f"| {dataset} | {arm} | {tests} | {s['median_test']:.3f} | {counts} | {winners} |")
    write_section("Fine-tuning strategies (issue 14)", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy-budget", type=float, default=60.0, help="seconds per single-strategy search")
    parser.add_argument("--default-budget", type=float, default=120.0, help="seconds per default-space search")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", default="fashion,photos")
    parser.add_argument("--arms", default="", help="comma-separated arms (default: all)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time, one thread each (default 2)")
    parser.add_argument("--from-json", action="store_true", help="run nothing: redraw from strategies.json")
    args = parser.parse_args()
    command = " ".join(["python benchmarks/strategies.py", *sys.argv[1:]])
    if args.from_json:
        saved = json.loads((HERE / "strategies.json").read_text())
        figure(saved["summary"], HERE / "strategies.html")
        write_results(saved["summary"], argparse.Namespace(**saved["args"]), saved["command"])
        return

    work = Path(tempfile.mkdtemp(prefix="autotl-strategies-"))
    sets = {}
    if "fashion" in args.datasets:
        sets["fashion"] = dict(
            FASHION, test_spec=FASHION_TEST["spec"], test_max_per_class=FASHION_TEST["max_per_class"]
        )
    if "photos" in args.datasets:
        train, test = natural_photos(
            work / "photos", train_per_class=PHOTO_PER_CLASS, test_per_class=30, size=PHOTO_SIZE, crop=PHOTO_CROP
        )
        sets["photos"] = dict(spec=str(train), test_spec=str(test))
    arm_spaces = spaces(work)
    chosen = [a for a in arm_spaces if not args.arms or a in args.arms.split(",")]
    tasks = [
        dict(
            cfg,
            dataset=d,
            arm=arm,
            seed=s,
            space=str(arm_spaces[arm]),
            budget=args.default_budget if arm in DEFAULT_ARMS else args.strategy_budget,
            out=str(work / f"{d}-{arm.replace(':', '-')}-{s}"),
        )
        for d, cfg in sets.items()
        for s in range(args.seeds)
        for arm in chosen
    ]
    random.Random(0).shuffle(tasks)  # interleave arms, so contention on the machine falls on all alike
    runs = []
    try:
        with multiprocessing.get_context("spawn").Pool(args.parallel, maxtasksperchild=1) as pool:
            for run in pool.imap_unordered(run_one, tasks):
                runs.append(run)
                print(
                    f"{run['dataset']} {run['arm']} seed {run['seed']}: test {run['test_accuracy']} "
                    f"val {run['val_accuracy']} ({run['complete']} complete, {run['pruned']} pruned of "
                    f"{run['trials']}, {run['wall']} s): {run['best_recipe']}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)  # each run's folder holds an exported model
    summary = summarise(runs)
    saved = dict(args=vars(args), runs=runs, summary=summary, command=command)
    (HERE / "strategies.json").write_text(json.dumps(saved, indent=1))
    figure(summary, HERE / "strategies.html")
    write_results(summary, args, command)
    print(json.dumps({d: {a: s["median_test"] for a, s in arms.items()} for d, arms in summary.items()}))


if __name__ == "__main__":
    main()
