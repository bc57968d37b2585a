"""The greedy ensemble against the best single model of the same search, on test images neither was chosen on.

    python benchmarks/ensemble.py                      # anytime.py's two subsets x 3 seeds x 300 s, then all of
                                                       # Fashion-MNIST at --timeout 900: about 40 min on 2 cores
    python benchmarks/ensemble.py --seeds 1 --budget 60 --no-full --no-results   # a quick look

Each run is autotl's default search (freeze-thaw) with ``ensemble=True``, one CPU thread,
on anytime.py's Fashion-MNIST and photo subsets (two runs at a time), then on all of
Fashion-MNIST (alone, two threads, --timeout 900 as benchmarks/scale.py runs it). After
each search, on the test set: the best single model (``best_model/``), the ensemble as
selected (its members' kept weights and its weights, whether or not the search wrote it:
written only when it beat the best model on the held-back half of validation), and what
``--ensemble`` gives the user (the ensemble if written, else the best model); their
latencies as the search measured them. Writes benchmarks/ensemble.json and the "Greedy
ensemble (issue 23)" section of benchmarks/RESULTS.md; prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from anytime import SEARCH, make_tasks, test_accuracy  # noqa: E402
from results_md import write_section  # noqa: E402

SECTION = "Greedy ensemble (issue 23)"
FULL = dict(
    dataset="fashion (all)",
    arm="freeze-thaw",
    seed=0,
    budget=900.0,
    spec="builtin:fashion-mnist",
    test_spec="builtin:fashion-mnist",
    max_per_class=None,
    threads=2,
)


def run_one(task: dict) -> dict:
    """One search with ensemble=True and the test accuracy of its single model and its ensemble."""
    import torch

    import autotl
    from autotl.records import StudyRecord

    torch.set_num_threads(task.get("threads", 1))
    try:
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
            ensemble=True,
            scheduler="freeze-thaw",
            **SEARCH,
        )
        wall = time.time() - started
        chosen = StudyRecord.of(result.study).ensemble
        args = (task["test_spec"], task.get("max_per_class"), task["seed"])
        single, images = test_accuracy(result.model_dir, *args)
        together = test_accuracy(selected(result, chosen), *args)[0] if chosen is not None else None
        return dict(
            task,
            wall=round(wall, 1),
            test_images=images,
            single=single,
            ensemble=together,
            written=bool(chosen and chosen.written),
            given=together if chosen is not None and chosen.written else single,
            members=chosen.members if chosen else [],
            weights=chosen.weights if chosen else [],
            held_back=dict(ensemble=chosen.ensemble_held_back, single=chosen.single_held_back) if chosen else None,
            latency_ms=dict(ensemble=chosen.latency_ms, single=chosen.single_latency_ms) if chosen else None,
        )
    except Exception:
        return dict(task, error=traceback.format_exc())


def selected(result, chosen) -> Path:
    """The ensemble as the search selected it, as a folder (the search's own when it wrote one)."""
    from autotl import export
    from autotl.search._ensemble import _kept_result
    from autotl.search._trial_files import model_file
    from autotl.train import read_facts

    if chosen.written:
        return result.run_dir / "ensemble_model"
    trials = {t.number: t for t in result.study.get_trials(deepcopy=False)}
    members = [trials[n] for n in chosen.members]
    results = [
        _kept_result(model_file(result.run_dir, t), read_facts(model_file(result.run_dir, t)), t) for t in members
    ]
    folder = result.run_dir / "ensemble_not_written"
    export.save_ensemble(results, chosen.weights, folder, dict(members=[dict(trial=n) for n in chosen.members]))
    return folder


def summarise(runs: list[dict]) -> dict:
    """Per dataset: median and per-seed test accuracy of the single model, the ensemble and what the user gets."""
    out = {}
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        done = sorted((r for r in runs if r["dataset"] == dataset and "error" not in r), key=lambda r: r["seed"])
        pick = lambda key: [r[key] for r in done if r[key] is not None]  # noqa: E731
        out[dataset] = dict(
            runs=len(done),
            single=_median(pick("single")),
            ensemble=_median(pick("ensemble")),
            given=_median(pick("given")),
            written=sum(r["written"] for r in done),
            per_seed=[
                dict(
                    seed=r["seed"],
                    single=r["single"],
                    ensemble=r["ensemble"],
                    written=r["written"],
                    members=len(r["members"]),
                    latency_ms=r["latency_ms"],
                    held_back=r["held_back"],
                )
                for r in done
            ],
        )
    return out


def _median(values: list) -> float | None:
    return round(statistics.median(values), 4) if values else None


def write_results(payload: dict) -> None:
    """The RESULTS.md section: command, table per dataset and per seed."""
    lines = [
        f"`{payload['command']}` ({payload['seconds'] / 60:.0f} min, peak RSS {payload['peak_rss_kb'] / 1e6:.2f} GB, "
        f"{payload['machine']}; commit {payload['commit']}, {payload['date']}). Default search (freeze-thaw) with "
        f"`ensemble=True`; the subsets get {payload['budget']:g} s and one thread each, two at a time; all of "
        "Fashion-MNIST 900 s and two threads, alone. Test accuracy on the test images (never seen by the search):",
        "",
        "| dataset | runs | best single model | ensemble as selected | what --ensemble gives | ensembles written |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, s in payload["summary"].items():
        lines.append(f"| {dataset} | {s['runs']} | {s['single']} | {s['ensemble']} | {s['given']} | {s['written']} |")
    lines += ["", "Per run (held-back: the half of validation the selection did not see; latency in ms an image):", ""]
    lines += [
        "| dataset | seed | members | single test | ensemble test | held-back ensemble / single | latency "
        "ensemble / single | written |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset, s in payload["summary"].items():
        for r in s["per_seed"]:
            held, lat = r["held_back"] or {}, r["latency_ms"] or {}
            together = "-" if r["ensemble"] is None else f"{r['ensemble']:.4f}"
            lines.append(
                f"| {dataset} | {r['seed']} | {r['members']} | {r['single']:.4f} | {together} | "
                f"{held.get('ensemble')} / {held.get('single')} | {lat.get('ensemble')} / {lat.get('single')} | "
                f"{'yes' if r['written'] else 'no'} |"
            )
    write_section(SECTION, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", default="fashion,photos")
    parser.add_argument("--no-full", action="store_true", help="leave out the run on all of Fashion-MNIST")
    parser.add_argument("--no-results", action="store_true", help="write no RESULTS.md section")
    args = parser.parse_args()
    args.arms = ["freeze-thaw"]
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="autotl-ensemble-"))
    runs = []
    try:
        tasks = make_tasks(args, work)
        with multiprocessing.get_context("spawn").Pool(2, maxtasksperchild=1) as pool:
            runs += list(pool.imap_unordered(run_one, tasks))
        if not args.no_full:
            with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
                runs += pool.map(run_one, [dict(FULL, out=str(work / "fashion-all"))])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for run in runs:
        print(json.dumps({k: v for k, v in run.items() if k not in ("out", "spec", "test_spec")}), flush=True)
    import subprocess

    payload = dict(
        command=shlex.join(["python", "benchmarks/ensemble.py", *sys.argv[1:]]),
        seconds=round(time.time() - started, 1),
        peak_rss_kb=max(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ),
        machine=f"{platform.machine()}, {multiprocessing.cpu_count()} cores",
        commit=subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        date=time.strftime("%Y-%m-%d"),
        budget=args.budget,
        runs=runs,
        summary=summarise(runs),
    )
    (HERE / "ensemble.json").write_text(json.dumps(payload, indent=1))
    if not args.no_results:
        write_results(payload)
    print(json.dumps(payload["summary"]))


if __name__ == "__main__":
    main()
