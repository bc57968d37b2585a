"""Is the training loop as fast as an earlier commit's? The same trial, old and new code, taking turns.

    python benchmarks/old_new_loop.py --old fc20462 --rounds 3     # about 4 minutes on 2 cores

The trial is ``run.py --quick``'s step measure (a full fine-tune of lite0 at x0.5 with
augmentation, batch 32, on its natural-photo set): images per second of its second
epoch. Each arm runs in its own process with its checkout first on ``sys.path``
(a ``git worktree`` of ``--old``), alternating, so both see the same machine. Prints one
JSON object: each arm's rates, their medians, and new / old.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

ARM = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, os.environ["ROOT"] + "/benchmarks")
import autotl
from autotl import TrialConfig, load_dataset
from autotl.train import fit
from datasets import natural_photos
from run import split_folders

work = Path(sys.argv[1])
if not (work / "photos-split").exists():
    train_dir, _ = natural_photos(work / "photos", train_per_class=40, test_per_class=1)
    split_folders(train_dir, work / "photos-split")
data = load_dataset(str(work / "photos-split"))
config = TrialConfig(backbone="tf_efficientnet_lite0", lr=1e-3, warmup_epochs=0, regularizer="none",
                     lr_schedule="constant", resolution_scale=0.5, frozen_depth=0.0, augment_strength=0.3,
                     batch_size=32, max_epochs=2)
last = fit(config, data).history[-1]
seconds = last["train_seconds"] if isinstance(last, dict) else last.train_seconds
print(json.dumps(dict(code=autotl.__file__, images_per_s=data.count("train") / seconds)))
"""


def rate(checkout: Path, work: Path) -> float:
    env = dict(os.environ, ROOT=str(checkout), PYTHONPATH=str(checkout))
    done = subprocess.run(
        [sys.executable, "-c", ARM, str(work)], env=env, cwd=work, capture_output=True, text=True, check=True
    )
    out = json.loads(done.stdout.splitlines()[-1])
    assert Path(out["code"]).is_relative_to(checkout), out  # the arm ran the code it names
    return round(out["images_per_s"], 2)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the earlier commit")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="autotl-old-new-"))
    old = work / "old"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old), args.old], check=True)
    try:
        rates = {"old": [], "new": []}
        for _ in range(args.rounds):
            rates["old"].append(rate(old, work))
            rates["new"].append(rate(ROOT, work))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    medians = {arm: statistics.median(values) for arm, values in rates.items()}
    ratio = round(medians["new"] / medians["old"], 3)
    result = dict(old=args.old, images_per_s=rates, medians=medians, new_over_old=ratio)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
