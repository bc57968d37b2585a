"""Data at real sizes: memory, cache speed and time to the first trial on phone photos and all of Fashion-MNIST.

    python benchmarks/scale.py                    # photos_12mp, workers and fashion_full: about an hour on 2 cores
    python benchmarks/scale.py --only photos      # photos_12mp and workers alone
    python benchmarks/scale.py --only fashion     # fashion_full alone

photos_12mp  1,000 generated 4000x3000 JPEGs in 10 classes (benchmarks/datasets.py):
             peak RSS of `autotl search --space quick --n-trials 2`; images/s of building the
             cache against a plain full PIL decode and resize, in this process; the second
             run's time to its first trial against the first's. The data path before the
             cache (commit dc08d2a: every photo kept decoded at full size) runs beside it on
             120 of the photos, as far as this machine can hold it.
workers      `--workers 2` on the same photos: each worker's peak RSS (and PSS, which
             splits shared pages) against a single worker's.
fashion_full builtin:fashion-mnist, default space, --timeout 900: peak RSS, when the first
             trial reported, trials finished, the exported model's test accuracy
             (`autotl evaluate`); beside it the plain small CNN trained from scratch on the
             28-px images for the same wall-clock budget (benchmarks/fashion_cnn.py).

Every command runs under /usr/bin/time -v ("Maximum resident set size"). Writes the
"Scale (scale.py)" section of benchmarks/RESULTS.md; prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from datasets import phone_photos  # noqa: E402
from results_md import write_section  # noqa: E402

AUTOTL = [sys.executable, "-m", "autotl.cli"]
OLD_COMMIT = "dc08d2a"  # the data path before the on-disk cache
PLAIN_SAMPLE = 100  # photos decoded the plain way (a full decode takes long)


FIRST_TRIAL = ("[trial 1/", "[slice 1]")  # the line a search prints as its first trial starts (older, sliced)


def timed(command: list[str], env: dict | None = None, watch: tuple | None = None, cwd=None) -> dict:
    """Run ``command`` under /usr/bin/time -v; seconds, peak RSS (GB), exit code, stderr, and when ``watch`` first
    appeared on stderr (seconds from the start)."""
    started = time.time()
    seen = None
    process = subprocess.Popen(
        ["/usr/bin/time", "-v", *command], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=cwd
    )
    lines = []
    for line in process.stderr:
        lines.append(line)
        if watch and seen is None and any(w in line for w in watch):
            seen = time.time() - started
    stdout = process.stdout.read()
    process.wait()
    text = "".join(lines)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return dict(
        seconds=round(time.time() - started, 1),
        rss_gb=round(int(rss.group(1)) / 1024**2, 3) if rss else None,
        code=process.returncode,
        first_seen_s=round(seen, 1) if seen is not None else None,
        stderr=text,
        stdout=stdout,
    )


def cache_speed(folder: Path, cache: Path, size: int) -> dict:
    """Images/s of building the cache (reduced JPEG decode, threads) against a plain full decode and resize."""
    from autotl.data import _store, decode, resize
    from autotl.data._sources import find_samples

    samples = find_samples(str(folder))
    started = time.time()
    _store.open_store(samples, size, cache_dir=cache)
    cache_rate = len(samples) / (time.time() - started)
    started = time.time()
    for sample in samples[:PLAIN_SAMPLE]:  # what a hand-written loader does: a full decode, then resize
        resize(decode(sample.path), size)
    plain_rate = PLAIN_SAMPLE / (time.time() - started)
    return dict(
        cache_images_per_s=round(cache_rate, 2),
        plain_images_per_s=round(plain_rate, 2),
        cache_build_speedup=round(cache_rate / plain_rate, 2),
        images=len(samples),
        size=size,
    )


IMPORT_PROBE = (
    "import autotl.cli, json; s = open('/proc/self/status').read(); "
    "print(json.dumps({k: int(s.split(k + ':')[1].split()[0]) for k in ('VmRSS', 'RssAnon', 'RssFile')}))"
)


def import_floor() -> dict:
    """What every autotl process pays before its first line of work: the seconds and memory of importing it (torch,
    timm, optuna; scikit-learn comes later, with the first split). Measured twice; the second, with the files in the
    page cache, is kept."""
    for _ in range(2):
        started = time.time()
        out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True).stdout
        seconds = time.time() - started
    kb = json.loads(out.strip().splitlines()[-1])
    return dict(
        seconds=round(seconds, 2),
        rss_gb=round(kb["VmRSS"] / 1024**2, 3),
        private_gb=round(kb["RssAnon"] / 1024**2, 3),
        file_gb=round(kb["RssFile"] / 1024**2, 3),
    )


def _pids_of(parent: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _peak(pid: int) -> tuple[float, float]:
    """(peak RSS so far in GB, current PSS in GB) of a live process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
        pss = int(re.search(r"Pss:\s+(\d+)", Path(f"/proc/{pid}/smaps_rollup").read_text()).group(1))
        return hwm / 1024**2, pss / 1024**2
    except (OSError, AttributeError):
        return 0.0, 0.0


def workers_memory(folder: Path, work: Path, env: dict) -> dict:
    """Peak RSS and PSS of each worker of --workers 2 against one worker's run, and the PSS of the whole process
    tree (the main process and its children) sampled at once: what the machine holds."""

    def watch(args):
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peaks: dict[int, list] = {}
        tree_pss = 0.0
        while process.poll() is None:
            now = 0.0
            for pid in [process.pid] + _pids_of(process.pid):
                rss, pss = _peak(pid)
                old = peaks.setdefault(pid, [0.0, 0.0])
                peaks[pid] = [max(old[0], rss), max(old[1], pss)]
                now += pss
            tree_pss = max(tree_pss, now)
            time.sleep(0.5)
        err = process.stderr.read()
        if process.returncode != 0:
            raise RuntimeError(f"{args} failed: {err[-2000:]}")
        workers = {pid: v for pid, v in peaks.items() if pid != process.pid and v[0] > 0.2}  # not small helpers
        return peaks[process.pid], workers, tree_pss

    base = [
        *AUTOTL,
        "search",
        "--dataset",
        str(folder),
        "--space",
        "quick",
        "--n-trials",
        "4",
        "--no-rank",
        "--cache-dir",
        str(work / "cache"),
    ]
    single, _, one_tree = watch([*base, "--out", str(work / "one_worker")])
    _, workers, two_tree = watch([*base, "--out", str(work / "two_workers"), "--workers", "2"])
    return dict(
        one_worker_rss_gb=round(single[0], 3),
        one_worker_pss_gb=round(single[1], 3),
        worker_rss_gb=[round(v[0], 3) for v in workers.values()],
        worker_pss_gb=[round(v[1], 3) for v in workers.values()],
        summed_rss_ratio=round(sum(v[0] for v in workers.values()) / single[0], 3),
        summed_pss_ratio=round(sum(v[1] for v in workers.values()) / single[1], 3),
        tree_pss_gb=dict(one_worker=round(one_tree, 3), two_workers=round(two_tree, 3)),
        tree_pss_ratio=round(two_tree / one_tree, 3),
    )


def _old_checkout(work: Path) -> Path | None:
    """The code before the cache, as a git worktree (None when git or the commit is not there)."""
    target = work / "old"
    done = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(target), OLD_COMMIT], capture_output=True, text=True
    )
    return target if done.returncode == 0 else None


def photos(work: Path, n_images: int, old_path: bool = True, workers: bool = True) -> dict:
    folder = phone_photos(work / "photos", n_images=n_images)
    env = dict(os.environ, AUTOTL_CACHE=str(work / "cache"), PYTHONUNBUFFERED="1")
    size = 112  # the quick space's only input size: lite0 at x0.5
    speed = cache_speed(folder, work / "speed-cache", size)
    shutil.rmtree(work / "speed-cache", ignore_errors=True)
    search = [*AUTOTL, "search", "--dataset", str(folder), "--space", "quick", "--n-trials", "2"]
    first = timed([*search, "--out", str(work / "run1")], env, watch=FIRST_TRIAL)
    second = timed([*search, "--out", str(work / "run2")], env, watch=FIRST_TRIAL)
    for run in (first, second):
        if run["code"] != 0:
            raise RuntimeError(f"autotl search failed: {run['stderr'][-3000:]}")
    result = dict(
        speed,
        import_floor=import_floor(),
        n_images=n_images,
        first_run=_brief(first),
        second_run=_brief(second),
        second_to_first_trial_ratio=round(second["first_seen_s"] / first["first_seen_s"], 3),
    )
    old = _old_checkout(work) if old_path else None
    if old is not None:
        subset = work / "photos-120"
        for folder_class in sorted(folder.iterdir()):
            (subset / folder_class.name).mkdir(parents=True, exist_ok=True)
            for image in sorted(folder_class.iterdir())[:12]:
                os.link(image, subset / folder_class.name / image.name)
        old_env = dict(env, PYTHONPATH=str(old))
        args = ["search", "--dataset", str(subset), "--space", "quick", "--n-trials", "2"]
        before = timed(
            [sys.executable, "-m", "autotl.cli", *args, "--out", str(work / "old-run")],
            old_env,
            watch=FIRST_TRIAL,
            cwd=old,
        )
        now = timed(
            [*AUTOTL, *args, "--out", str(work / "new-run-120")],
            dict(env, AUTOTL_CACHE=str(work / "c120")),
            watch=FIRST_TRIAL,
        )
        result["before_cache_120_photos"] = _brief(before)
        result["with_cache_120_photos"] = _brief(now)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    if workers:
        result["workers"] = workers_memory(folder, work, env)
    return result


def _brief(run: dict) -> dict:
    return dict(seconds=run["seconds"], rss_gb=run["rss_gb"], first_trial_s=run["first_seen_s"], code=run["code"])


def _bytes_under(folder: Path) -> int:
    """The bytes of the files under ``folder``; what the search deletes while we look (a file, or a whole trial's
    folder while rglob lists it) counts as gone."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except FileNotFoundError:
                pass
    return total


@contextmanager
def peak_disk(folder: Path, every_s: float = 0.5):
    """Sample the bytes under ``folder`` (and under its trials/) while the block runs; yields a dict of peaks."""
    peaks, done = dict(run_dir=0, trials=0), threading.Event()

    def sample():
        while not done.wait(every_s):
            peaks["run_dir"] = max(peaks["run_dir"], _bytes_under(folder) if folder.exists() else 0)
            trials = folder / "trials"
            peaks["trials"] = max(peaks["trials"], _bytes_under(trials) if trials.exists() else 0)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        yield peaks
    finally:
        done.set()
        watcher.join()


def fashion(work: Path, budget: float) -> dict:
    import optuna
    from fashion_cnn import run_cnn

    env = dict(os.environ, AUTOTL_CACHE=str(work / "cache"), PYTHONUNBUFFERED="1")
    out = work / "fashion"
    started = time.time()
    command = [*AUTOTL, "search", "--dataset", "builtin:fashion-mnist", "--timeout", str(budget)]
    with peak_disk(out) as disk:
        search = timed([*command, "--n-trials", "1000", "--out", str(out)], env, watch=FIRST_TRIAL)
    if search["code"] != 0:
        raise RuntimeError(f"autotl search failed: {search['stderr'][-3000:]}")
    study = optuna.load_study(study_name="autotl", storage=f"sqlite:///{out / 'study.db'}")
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    first_reports = [  # a sliced trial's start is its first slice's (datetime_start is its last slice's)
        (t.user_attrs["slices"][0]["at"] if t.user_attrs.get("slices") else t.datetime_start.timestamp())
        + t.user_attrs["first_report_seconds"]
        - started
        for t in study.trials
        if t.user_attrs.get("first_report_seconds") is not None
    ]
    evaluate = timed(
        [*AUTOTL, "evaluate", "--model", str(out / "best_model"), "--dataset", "builtin:fashion-mnist"], env
    )
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", evaluate["stdout"]).group(1))
    best = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.values[0])
    trials = [
        dict(
            number=t.number,
            state=t.state.name.lower(),
            value=t.values[0] if t.values else None,
            recipe=t.user_attrs.get("config"),
            reports=len(t.user_attrs.get("history", [])),
            seconds=t.user_attrs.get("wall_seconds"),
            end=t.user_attrs.get("end_reason"),
        )
        for t in study.trials
    ]
    cnn_started = time.time()
    peer = run_cnn(budget)
    peer["wall_seconds"] = round(time.time() - cnn_started, 1)
    return dict(
        budget_s=budget,
        rss_gb=search["rss_gb"],
        wall_s=search["seconds"],
        first_report_s=round(min(first_reports), 1) if first_reports else None,
        trials_finished=len(finished),
        trials_complete=sum(t.state.name == "COMPLETE" for t in finished),
        best_val_accuracy=round(best.values[0], 4),
        best_recipe=best.user_attrs.get("config"),
        test_accuracy=accuracy,
        evaluate_rss_gb=evaluate["rss_gb"],
        trials=trials,
        disk_mb=dict(
            peak_run_dir=round(disk["run_dir"] / 1e6, 1),
            peak_trials=round(disk["trials"] / 1e6, 1),
            end_run_dir=round(_bytes_under(out) / 1e6, 1),
            end_trials=round(_bytes_under(out / "trials") / 1e6, 1) if (out / "trials").exists() else 0.0,
        ),
        cnn={k: v for k, v in peer.items() if k != "curve"},
    )


def _ran(part: dict) -> str:
    """When and at which commit a part of the results was measured."""
    ran = part.get("ran")
    return f"{ran['date']}, `{ran['command']}` at {ran['commit']}" if ran else "an earlier run"


def _stamp(command: str) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    return dict(date=time.strftime("%Y-%m-%d"), commit=commit.stdout.strip() or "?", command=command)


def write_results(result: dict) -> None:
    lines = [
        f"Run on {platform.node()} ({os.cpu_count()} CPU cores); each part names the run it comes from (the "
        "readings of the runs are in the next section, which this script does not touch). Peak RSS from "
        "`/usr/bin/time -v`.",
        "",
    ]
    p = result.get("photos_12mp")
    if p:
        lines += [
            f"**photos_12mp** ({p['n_images']} generated 4000x3000 JPEGs, 10 classes; {_ran(p)}):",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| peak RSS, `autotl search --space quick --n-trials 2` (cold cache) | {p['first_run']['rss_gb']} GB "
            f"| <= 2.5 GB |",
            f"| peak RSS, same search, cache warm | {p['second_run']['rss_gb']} GB | |",
            f"| cache build, images/s | {p['cache_images_per_s']} | |",
            f"| plain full PIL decode + resize, images/s ({PLAIN_SAMPLE} photos) | {p['plain_images_per_s']} | |",
            f"| cache build speedup (the cache decodes in threads, one per core; the plain loop one image "
            f"at a time, as a hand-written loop does) | **{p['cache_build_speedup']}x** | >= 3 |",
            f"| time to the first trial: first run / second run | {p['first_run']['first_trial_s']} s / "
            f"{p['second_run']['first_trial_s']} s | |",
            f"| second run's time to first trial / first's | **{p['second_to_first_trial_ratio']}** | <= 0.2 |",
        ]
        f0 = p.get("import_floor")
        if f0:
            lines += [
                f"| `python -c 'import autotl.cli'` (torch, timm, optuna), files in the page cache: "
                f"seconds; peak RSS (private / file-backed) | {f0['seconds']} s; {f0['rss_gb']} GB "
                f"({f0['private_gb']} / {f0['file_gb']}) | |",
            ]
        if "before_cache_120_photos" in p:
            b, n = p["before_cache_120_photos"], p["with_cache_120_photos"]
            lines += [
                f"| 120 of the photos, before the cache ({OLD_COMMIT}): peak RSS, wall | {b['rss_gb']} GB, "
                f"{b['seconds']} s | |",
                f"| 120 of the photos, with the cache (cold): peak RSS, wall | {n['rss_gb']} GB, {n['seconds']} s | |",
            ]
        w = p.get("workers", {})
        lines += (
            []
            if not w
            else [
                "",
                f"**workers** (`--workers 2`, quick space, 4 trials): one worker's peak RSS "
                f"{w['one_worker_rss_gb']} GB (PSS {w['one_worker_pss_gb']} GB); the two workers' peak RSS "
                f"{w['worker_rss_gb']} GB, summed **{w['summed_rss_ratio']}x** one worker's (target <= 1.5x); "
                f"summed PSS {w['summed_pss_ratio']}x. The whole process tree (the main process, which waits, and "
                f"the workers), PSS sampled at once: {w['tree_pss_gb']['two_workers']} GB against "
                f"{w['tree_pss_gb']['one_worker']} GB for one worker, {w['tree_pss_ratio']}x. Every process first "
                f"imports torch and timm (the import row above), which the image cache cannot share.",
                "",
            ]
        )
    f = result.get("fashion_full")
    if f:
        c = f["cnn"]
        lines += [
            f"**fashion_full** (builtin:fashion-mnist, 48,000 train / 12,000 val, default space, "
            f"--timeout {f['budget_s']:g}; {_ran(f)}):",
            "",
            "| measure | autotl | small CNN from scratch (peer) | target |",
            "|---|---|---|---|",
            f"| peak RSS | {f['rss_gb']} GB | | <= 4 GB |",
            f"| first report to the pruner | {f['first_report_s']} s after the start | | <= 120 s |",
            f"| trials finished (complete) | {f['trials_finished']} ({f['trials_complete']}) | | >= 8 |",
            f"| best validation accuracy | {f['best_val_accuracy']} | {c['best_val_accuracy']:.4f} | |",
            f"| test accuracy (official 10,000) | **{f['test_accuracy']}** | **{c['test_accuracy']:.4f}** "
            f"| >= 0.93 and above the CNN |",
            f"| CNN: epochs, seconds to val 0.90 | | {c['epochs']}, {c['seconds_to_val_0_90']} s | |",
            *_disk_rows(f.get("disk_mb")),
            "",
            f"Best recipe: `{json.dumps(f['best_recipe'])}`",
            "",
        ]
    write_section("Scale (scale.py)", lines)


def _disk_rows(disk: dict | None) -> list[str]:
    """The run directory's disk use: its peak while the search ran (sampled every 0.5 s), and what stays."""
    if not disk:
        return []
    return [
        f"| peak disk of the run directory (of which trials/: training states, kept models) | "
        f"{disk['peak_run_dir']} MB ({disk['peak_trials']} MB) | | |",
        f"| disk of the run directory at the end (of which trials/) | {disk['end_run_dir']} MB "
        f"({disk['end_trials']} MB) | | |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["photos", "fashion"], default=None)
    parser.add_argument("--photos", type=int, default=1000, help="how many 12-MP photos (default 1000)")
    parser.add_argument("--budget", type=float, default=900, help="fashion_full's --timeout (default 900)")
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one, deleted at the end)")
    parser.add_argument("--no-old-path", action="store_true", help="photos: skip the run of the code before the cache")
    parser.add_argument("--no-workers", action="store_true", help="photos: skip the --workers 2 measurement")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="autotl-scale-"))
    result = {}
    try:
        if args.only in (None, "photos"):
            result["photos_12mp"] = photos(work, args.photos, not args.no_old_path, not args.no_workers)
        if args.only in (None, "fashion"):
            result["fashion_full"] = fashion(work, args.budget)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    command = "python benchmarks/scale.py" + (f" --only {args.only}" if args.only else "")
    for part in result.values():
        part["ran"] = _stamp(command)
    previous = {}
    saved = HERE / "scale.json"
    if saved.exists():
        previous = json.loads(saved.read_text())
    merged = {**previous, **{key: {**previous.get(key, {}), **value} for key, value in result.items()}}
    saved.write_text(json.dumps(merged, indent=1) + "\n")
    write_results(merged)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "trials"} for k, v in merged.items()}))


if __name__ == "__main__":
    main()
