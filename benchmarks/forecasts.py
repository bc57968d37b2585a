"""How far a sliced search's own forecasts were from what its trials then reached, read from its study databases.

    python benchmarks/forecasts.py /tmp/f600/fashion-freeze-thaw-*/study.db   # studies kept by anytime.py --keep

Each slice decision states the forecast it was made on ("predicted 0.923 ± 0.178 at report 20"). For every forecast
whose trial got to that report: forecast minus the best validation accuracy the trial had by then (bias, MAE, the
share within one stated std); and for all, per strategy, forecast minus the trial's final best. This is the curve
model as the scheduler used it, where curves.py's table checks it on recorded curves.
"""

from __future__ import annotations

import re
import statistics
import sys

import optuna

from autotl.records import TrialRecord

FORECAST = re.compile(r"predicted ([0-9.]+) ± ([0-9.]+) at report (\d+)")


def forecasts(db: str) -> list[dict]:
    """One row per slice decision with a forecast: strategy, forecast, std, best by its report (None if not
    reached), and the trial's final best."""
    storage = f"sqlite:///{db}"
    rows = []
    for summary in optuna.get_all_study_summaries(storage):
        for trial in optuna.load_study(study_name=summary.study_name, storage=storage).trials:
            record = TrialRecord.of(trial, "history", "slices", "strategy")
            best, so_far = {}, 0.0
            for report in record.history:
                if report.val_accuracy is not None:
                    so_far = max(so_far, report.val_accuracy)
                best[report.report] = so_far
            final = best[max(best)] if best else None
            for decision in record.slices:
                found = FORECAST.search(decision.why or "")
                if found and final is not None:
                    mean, std, at = float(found[1]), float(found[2]), int(found[3])
                    rows.append(dict(strategy=record.strategy, mean=mean, std=std, reached=best.get(at), final=final))
    return rows


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = [row for db in sys.argv[1:] for row in forecasts(db)]
    reached = [r for r in rows if r["reached"] is not None]
    print(f"{len(rows)} forecasts in {len(sys.argv) - 1} studies, {len(reached)} of them at a report the trial reached")
    if reached:
        errors = [r["mean"] - r["reached"] for r in reached]
        within = sum(abs(e) <= r["std"] for e, r in zip(errors, reached)) / len(reached)
        mae = statistics.mean(abs(e) for e in errors)
        print(f"forecast - reached: bias {statistics.mean(errors):+.4f}, MAE {mae:.4f}, within 1 std {within:.0%}")
    for strategy in sorted({r["strategy"] for r in rows}):
        mine = [r["mean"] - r["final"] for r in rows if r["strategy"] == strategy]
        median = statistics.median(mine)
        print(f"{strategy}: {len(mine)} forecasts, forecast - the trial's final best: median {median:+.3f}")


if __name__ == "__main__":
    main()
