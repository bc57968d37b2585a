"""AutoGluon's MultiModalPredictor on one task, in AutoGluon's own venv: the "autogluon" arm of anytime.py.

    benchmarks/.autogluon/venv/bin/python benchmarks/autogluon_arm.py TRAIN VAL TEST --budget 300 --seed 0 --out r.json

TRAIN, VAL and TEST are class folders (<class>/<image>) or CSVs with columns image,label (paths relative to
the CSV). Its default fit with the offline EfficientNet-Lite0 ImageNet weights (benchmarks/setup_autogluon.sh
puts them in a local hub cache) on one CPU thread, as the other arms get: torch at 1 thread and no data-loader
worker processes. The whole process gets ``--budget`` seconds from ``--started`` (default: this process's
start): the fit's time_limit is what imports and reading the tables left; AutoGluon runs past it by about
10 s to average its best checkpoints, which ``wall_s`` shows as it is. Writes {val, test, wall_s, ...} JSON.
"""

import time

STARTED = time.time()  # before the heavy imports, which count against the budget

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # benchmarks/datasets.py hides HF datasets
os.environ.setdefault("HF_HOME", str(HERE / ".autogluon" / "hf"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"  # before torch is imported

HYPERPARAMETERS = {
    "model.names": ["timm_image"],
    "model.timm_image.checkpoint_name": "tf_efficientnet_lite0",
    "env.num_workers": 0,  # one CPU thread in all, like the other arms: no data-loader worker processes
    "env.num_workers_inference": 0,
}


def table(path: str):
    """(image, label) rows of a class folder or a CSV, with absolute image paths."""
    import pandas as pd

    path = Path(path).resolve()
    if path.is_dir():
        rows = [(str(f), c.name) for c in sorted(path.iterdir()) if c.is_dir() for f in sorted(c.iterdir())]
        return pd.DataFrame(rows, columns=["image", "label"])
    frame = pd.read_csv(path, dtype=str)
    frame["image"] = [str(path.parent / p) for p in frame["image"]]
    return frame[["image", "label"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train")
    parser.add_argument("val")
    parser.add_argument("test")
    parser.add_argument("--budget", type=float, required=True, help="seconds for the whole process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--started", type=float, default=STARTED, help="when the budget began (epoch seconds)")
    args = parser.parse_args()

    import torch
    from autogluon.multimodal import MultiModalPredictor

    torch.set_num_threads(1)
    train, val, test = table(args.train), table(args.val), table(args.test)
    with tempfile.TemporaryDirectory(prefix="autogluon-") as folder:
        predictor = MultiModalPredictor(label="label", problem_type="multiclass", path=folder)
        time_limit = args.budget - (time.time() - args.started)
        predictor.fit(
            train, tuning_data=val, time_limit=max(1, time_limit), hyperparameters=HYPERPARAMETERS, seed=args.seed
        )
        wall = time.time() - args.started
        val_acc = predictor.evaluate(val, metrics=["accuracy"])["accuracy"]
        test_acc = predictor.evaluate(test, metrics=["accuracy"])["accuracy"]
    result = dict(
        val=float(val_acc),
        test=float(test_acc),
        wall_s=round(wall, 1),
        time_limit_s=round(time_limit, 1),
        eval_s=round(time.time() - args.started - wall, 1),
        test_images=len(test),
        train_images=len(train),
        val_images=len(val),
    )
    args.out.write_text(json.dumps(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
