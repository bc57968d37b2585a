"""Warmup on a large dataset: the first reports of a full fine-tune, which the scheduler judges it by.

    python benchmarks/warmup.py          # all of Fashion-MNIST, 2 arms x 5 reports, about 6 min on 2 cores

A full fine-tune of lite0 (the warm start's recipe) on all of Fashion-MNIST (48,000 training
images, a report every 4,096: 12 reports an epoch) trains 5 reports with ``warmup_epochs`` 1
and with 0, one after the other in this process, and prints each report's validation accuracy
and the learning-curve model's forecast from the first k reports (the horizon: 2.5 epochs,
about what a 900 s search can give it). Prints one JSON object last; the numbers are read
into RESULTS.md's "Warmup on a large dataset" by hand.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from schedules import RECIPE as SCHEDULES_RECIPE  # noqa: E402  the warm start's full fine-tune of lite0

from autotl import load_dataset  # noqa: E402
from autotl.search import _curves  # noqa: E402
from autotl.space import TrialConfig  # noqa: E402
from autotl.train import Budget, fit  # noqa: E402

RECIPE = dict(SCHEDULES_RECIPE, lr_schedule="cosine", report_every_images=4096, max_epochs=8)  # 12 reports an epoch
HORIZON = 2.5  # epochs


def main() -> None:
    torch.set_num_threads(2)
    data = load_dataset("builtin:fashion-mnist", image_size=56)
    arms = []
    for warmup in (1, 0):
        started = time.time()
        result = fit(TrialConfig.from_dict(dict(RECIPE, warmup_epochs=warmup)), data, seed=0, budget=Budget(reports=5))
        curve = [(r.epoch, r.val_accuracy) for r in result.history]
        forecasts = [_curves.forecast(curve[:k], HORIZON, "full") for k in range(1, len(curve) + 1)]
        arms.append(
            dict(
                warmup_epochs=warmup,
                seconds=round(time.time() - started, 1),
                curve=[[e, round(a, 4)] for e, a in curve],
                forecast=[[round(f.mean, 3), round(f.std, 3)] for f in forecasts],
            )
        )
        print(json.dumps(arms[-1]), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps(dict(arms=arms, horizon_epochs=HORIZON, peak_rss_gb=round(peak, 2))))


if __name__ == "__main__":
    main()
