"""Prediction at scale: `autotl predict` on a folder against `load_model(...).predict` one image at a time.

    python benchmarks/predict.py                     # 1,000 generated 4000x3000 phone photos, ~10 min on 2 cores
    python benchmarks/predict.py --images 200 --size 1600x1200   # a quick look

A model is first searched on 10 photos per class (quick space, one trial, one epoch). Then:
  in_process  in one Python process, alternating: the batched path (`predict_files`: files decoded
              in threads, the next batch while the model runs, batches of 64) and the plain loop
              (`model.predict([path])` per file), on the same model object; images/s and the ratio.
  cli         `autotl predict --model DIR FOLDER --out p.csv` (torch and --runtime onnx) as a user
              runs it, under /usr/bin/time -v: wall seconds (start-up included), images/s, peak RSS;
              beside it the plain loop as a script of its own, also under /usr/bin/time -v.
The labels of every path agree between the ways (checked). Writes the "Prediction at scale
(predict.py)" section of benchmarks/RESULTS.md; prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from datasets import phone_photos  # noqa: E402
from results_md import write_section  # noqa: E402
from scale import AUTOTL, timed  # noqa: E402

PLAIN_LOOP = """
import sys, autotl
from pathlib import Path
model = autotl.load_model(sys.argv[1])
paths = sorted(p for p in Path(sys.argv[2]).rglob("*") if p.is_file())
with open(sys.argv[3], "w") as out:
    for path in paths:
        out.write(f"{path},{model.predict([path])[0]}\\n")
"""


def _labels(text: str) -> dict:
    return {row["path"]: row["label"] for row in csv.DictReader(io.StringIO(text))}


def in_process(model_dir: Path, folder: Path, rounds: int) -> dict:
    """Batched and one-at-a-time on the same model in this process, alternating; best round of each."""
    import autotl
    from autotl.export import image_paths, predict_files

    model = autotl.load_model(model_dir)
    paths = image_paths([str(folder)])
    batched, plain, labels = [], [], {}
    for _ in range(rounds):
        started = time.perf_counter()
        out = io.StringIO()
        predict_files(model, paths, out)
        batched.append(time.perf_counter() - started)
        started = time.perf_counter()
        one_by_one = {str(p): model.predict([p])[0] for p in paths}
        plain.append(time.perf_counter() - started)
        labels = dict(batched=_labels(out.getvalue()), plain=one_by_one)
    agree = sum(labels["batched"][p] == label for p, label in labels["plain"].items()) / len(paths)
    return dict(
        images=len(paths),
        rounds=rounds,
        batched_images_per_s=round(len(paths) / min(batched), 1),
        plain_images_per_s=round(len(paths) / min(plain), 1),
        speedup=round(min(plain) / min(batched), 2),
        labels_agree=agree,
    )


def cli(model_dir: Path, folder: Path, work: Path) -> dict:
    """The commands as a user runs them, each under /usr/bin/time -v."""
    count = sum(1 for p in folder.rglob("*") if p.is_file())
    result, labels = {}, {}
    for runtime in ("torch", "onnx"):
        out = work / f"p_{runtime}.csv"
        run = timed(
            [*AUTOTL, "predict", "--model", str(model_dir), str(folder), "--out", str(out), "--runtime", runtime]
        )
        assert run["code"] == 0, run["stderr"][-2000:]
        labels[runtime] = _labels(out.read_text())
        result[runtime] = dict(
            seconds=run["seconds"], images_per_s=round(count / run["seconds"], 1), rss_gb=run["rss_gb"]
        )
    script = work / "plain_loop.py"
    script.write_text(PLAIN_LOOP)
    labels_file = work / "plain_loop.txt"  # not stdout: timed() reads stdout only at the end
    run = timed([sys.executable, str(script), str(model_dir), str(folder), str(labels_file)])
    assert run["code"] == 0, run["stderr"][-2000:]
    plain = dict(line.rsplit(",", 1) for line in labels_file.read_text().splitlines())
    result["plain_loop"] = dict(
        seconds=run["seconds"], images_per_s=round(count / run["seconds"], 1), rss_gb=run["rss_gb"]
    )
    result["speedup_torch"] = round(run["seconds"] / result["torch"]["seconds"], 2)
    result["speedup_onnx"] = round(run["seconds"] / result["onnx"]["seconds"], 2)
    result["labels_agree_torch"] = sum(labels["torch"][p] == v for p, v in plain.items()) / len(plain)
    result["labels_agree_onnx"] = sum(labels["onnx"][p] == v for p, v in plain.items()) / len(plain)
    return result


def write_results(r: dict) -> None:
    c, p = r["cli"], r["in_process"]
    lines = [
        f"Run on {os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}, `python benchmarks/predict.py "
        f"--images {r['images']} --size {r['size']}`: {r['images']} generated phone-camera JPEGs "
        f"({r['size']}), a model searched on 10 of them per class ({r['model']}).",
        "",
        "| way | images/s | wall (s) | peak RSS (GB) | vs the plain loop |",
        "|---|---|---|---|---|",
        f"| `autotl predict --model DIR FOLDER --out p.csv` | {c['torch']['images_per_s']} | "
        f"{c['torch']['seconds']} | {c['torch']['rss_gb']} | **{c['speedup_torch']}x** |",
        f"| same, `--runtime onnx` | {c['onnx']['images_per_s']} | {c['onnx']['seconds']} | "
        f"{c['onnx']['rss_gb']} | **{c['speedup_onnx']}x** |",
        f"| plain loop, `load_model(DIR).predict([path])` per file (a script) | "
        f"{c['plain_loop']['images_per_s']} | {c['plain_loop']['seconds']} | {c['plain_loop']['rss_gb']} | 1x |",
        "",
        f"In one process, same model object, best of {p['rounds']} alternating rounds: batched "
        f"`predict_files` {p['batched_images_per_s']} images/s, one image at a time {p['plain_images_per_s']} "
        f"images/s: **{p['speedup']}x**. Labels agree with the plain loop on "
        f"{c['labels_agree_torch']:.1%} (torch) and {c['labels_agree_onnx']:.1%} (ONNX) of the files.",
        "",
    ]
    write_section("Prediction at scale (predict.py)", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", default="4000x3000", help="photo width x height (default 4000x3000)")
    parser.add_argument("--rounds", type=int, default=2, help="in-process rounds of each way (default 2)")
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one, deleted at the end)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="autotl-predict-"))
    env = {**os.environ, "AUTOTL_CACHE": str(work / "cache")}
    os.environ.update(env)
    try:
        folder = phone_photos(work / "photos", n_images=args.images, size=(width, height))
        search = timed(
            [
                *AUTOTL,
                "search",
                "--dataset",
                str(folder),
                "--space",
                "quick",
                "--n-trials",
                "1",
                "--max-epochs",
                "1",
                "--max-per-class",
                "10",
                "--out",
                str(work / "run"),
            ],
            env=env,
        )
        assert search["code"] == 0, search["stderr"][-2000:]
        model_dir = work / "run" / "best_model"
        config = json.loads((model_dir / "config.json").read_text())
        result = dict(
            images=args.images,
            size=args.size,
            model=f"{config['architecture']} at {config['pretrained_cfg']['input_size'][-1]} px",
            in_process=in_process(model_dir, folder, args.rounds),
            cli=cli(model_dir, folder, work),
        )
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    (HERE / "predict.json").write_text(json.dumps(result, indent=1) + "\n")
    write_results(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
