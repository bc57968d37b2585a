"""How far a sliced search's own forecasts were from what its trials then reached, read from its study databases.

    python benchmarks/forecasts.py /tmp/f600/fashion-freeze-thaw-*/study.db   # studies kept by anytime.py --keep

Each slice stores the forecast it was given on (``predicted`` ± ``predicted_std`` by report ``horizon``; the report's
"How the time was spent" table). For every forecast whose trial got to that report: forecast minus the best
validation score the trial had by then (bias, MAE, the share within one stated std); and for all, per strategy,
forecast minus the trial's final best (the report's "reached"). This is the curve model as the scheduler used it,
where curves.py's table checks it on recorded curves.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import optuna

from autotl.records import TrialRecord, report_score
from autotl.report._records import slice_records


def forecasts(db: str) -> list[dict]:
    """One row per slice given on a forecast: strategy, forecast, std, best by its report (None if not reached),
    and the trial's final best."""
    try:
        study = optuna.load_study(study_name="autotl", storage=f"sqlite:///{db}")
    except KeyError:
        sys.exit(f"{db} holds no autotl study: name the study.db of an autotl search")
    slices = slice_records(study)
    rows = []
    for trial in study.trials:
        record = TrialRecord.of(trial, "history", "strategy")
        best, so_far = {}, 0.0
        for report in record.history:
            so_far = max(so_far, report_score(report, "accuracy") or 0.0)
            best[report.report] = so_far
        for _, s in slices[(slices["trial"] == trial.number) & slices["predicted"].notna()].iterrows():
            reached = best.get(int(s["horizon"]))
            rows.append(
                dict(
                    strategy=record.strategy,
                    mean=s["predicted"],
                    std=s["predicted_std"],
                    reached=reached,
                    final=s["reached"],
                )
            )
    return rows


def main() -> None:
    if sys.argv[1:] in (["-h"], ["--help"]):
        sys.exit(__doc__)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    missing = [db for db in sys.argv[1:] if not Path(db).is_file()]
    if not sys.argv[1:] or missing:
        sys.exit(f"no study database at {missing[0]!r}" if missing else "name one or more study.db files (see --help)")
    rows = [row for db in sys.argv[1:] for row in forecasts(db)]
    reached = [r for r in rows if r["reached"] is not None]
    print(f"{len(rows)} forecasts in {len(sys.argv) - 1} studies, {len(reached)} of them at a report the trial reached")
    if reached:
        errors = [r["mean"] - r["reached"] for r in reached]
        within = sum(abs(e) <= r["std"] for e, r in zip(errors, reached)) / len(reached)
        mae = statistics.mean(abs(e) for e in errors)
        print(f"forecast - reached: bias {statistics.mean(errors):+.4f}, MAE {mae:.4f}, within 1 std {within:.0%}")
    for strategy in sorted({r["strategy"] for r in rows}):
        median = statistics.median(r["mean"] - r["final"] for r in rows if r["strategy"] == strategy)
        print(f"{strategy}: forecast - the trial's final best: median {median:+.3f}")


if __name__ == "__main__":
    main()
