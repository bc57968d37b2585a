"""Record real learning curves, rebuild the learning-curve prior, and measure how well the model forecasts.

    python benchmarks/curves.py --studies /tmp/fresh/reports/digits/study.db   # ~20 min on 1 thread
    python benchmarks/curves.py --quick            # a couple of minutes; the shipped prior is left alone
    python benchmarks/curves.py --from-json        # the error table again from the shipped curves, no training
    python benchmarks/curves.py --from-json --check STUDY.db   # also: forecast a search's curves, not learnt
    python benchmarks/curves.py --from-json --studies 'runs/*/study.db' --large 300   # add large-dataset curves

Curves come from two sources: the trials of Optuna study databases of real searches
(``--studies``, paths or globs; each trial's stored history), and fine-tuning runs made
here with ``autotl.train.fit``: every strategy on three small datasets (64 digits per
class, 40 Fashion-MNIST images per class, the 12-class natural-photo crops of
benchmarks/anytime.py), tf_efficientnet_lite0 at resolution scale 0.25, recipes sampled
at random from the default space, two or three reports an epoch for 4 or 6 epochs.
Every curve (strategy, backbone, dataset, resolution, [epochs, validation accuracy] per
report) is written to autotl/search/prior_curves.json, which ``load_prior`` fits. ``--large SECONDS``
adds full fine-tunes of all of Fashion-MNIST (48,000 training images; the warm start's recipe and
recipes at random, each trained for SECONDS): with the searches' studies on it, the prior's curves of a
large dataset, which a search weighs by its dataset's size.

The error table: from the first k reports of each curve with more than k + 2, the forecast
of its final best-so-far accuracy (at its last report's epochs) with the prior fitted
without the curve's dataset, against "the last value stays" and two halves of the model
(the prior's beta alone, the curve's own beta alone). Writes the "Learning-curve model"
section of benchmarks/RESULTS.md; prints one JSON object last.
"""

from __future__ import annotations

import argparse
import glob
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from datasets import natural_photos  # noqa: E402
from results_md import write_section  # noqa: E402

from autotl.search import _curves  # noqa: E402
from autotl.search._curves import PRIOR_FILE, best_so_far, fit_prior, forecast, loglog_fit  # noqa: E402
from autotl.train import VAL_CHECK_IMAGES  # noqa: E402

STRATEGIES = ("full", "frozen_prefix", "linear_probe", "lp_ft", "surgical", "lora", "bitfit", "norm_only")
KS = (1, 2, 3, 5)
SCOPE = (
    "Scope: the runs are tf_efficientnet_lite0 at resolution scale 0.25 (the study curves: 0.75) on 288-512 "
    "training images for 4-8 epochs, recipes drawn at random from the default space (bad ones included); the "
    "large curves are all of Fashion-MNIST (48,000 training images), a twelfth of an epoch to 8 epochs: one "
    "large dataset, so a search on Fashion-MNIST is forecast with its own curves, and a large dataset of another "
    "kind with those of Fashion-MNIST. The prior knows nothing of other backbones or longer schedules."
)
BACKBONE = "tf_efficientnet_lite0"
MODEL = "model (power law to an error floor, shrunk beta)"
LARGE = 48_000  # all of Fashion-MNIST's training images: the prior a large dataset gets is shown for this size


def study_curves(paths: list[str]) -> list[dict]:
    """The curves of every trial (with a strategy and at least 3 reports) in the study databases at ``paths``."""
    import optuna

    from autotl.records import StudyRecord, TrialRecord

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for path in sorted({p for pattern in paths for p in glob.glob(pattern)}):
        study = optuna.load_study(study_name="autotl", storage=f"sqlite:///{path}")
        dataset = StudyRecord.of(study).dataset
        for trial in study.trials:
            record = TrialRecord.of(trial)
            points = [[r.epoch, r.val_accuracy] for r in record.history if None not in (r.epoch, r.val_accuracy)]
            if record.strategy is None or len(points) < 3:
                continue
            config = record.config or {}
            rows.append(
                dict(
                    source=f"study {path} trial {trial.number}",
                    dataset=dataset.path if dataset else path,
                    train_images=dataset.n_train if dataset else None,
                    check_images=min(VAL_CHECK_IMAGES, dataset.n_val) if dataset and dataset.n_val else None,
                    strategy=record.strategy,
                    backbone=record.backbone,
                    resolution_scale=config.get("resolution_scale"),
                    max_epochs=config.get("max_epochs"),
                    points=_rounded(points),
                )
            )
    return rows


def distinct(rows: list[dict]) -> list[dict]:
    """Each curve once: the same recipe and seed on the same data in two studies gives the same points."""
    seen, found = set(), []
    for row in rows:
        key = (row["strategy"], json.dumps(row["points"]))
        if key not in seen:
            seen.add(key)
            found.append(row)
    return found


def _rounded(points) -> list[list[float]]:
    return [[round(float(x), 4), round(float(y), 4)] for x, y in points]


def datasets(work: Path, quick: bool) -> dict:
    """Name -> (spec, load_dataset keywords) of the small datasets the runs fine-tune on."""
    sets = {"builtin:fashion-mnist": ("builtin:fashion-mnist", dict(max_per_class=40))}
    if not quick:
        train, _ = natural_photos(work / "photos", train_per_class=30, test_per_class=1, size=32, crop=(0.06, 0.12))
        sets["natural_photos"] = (str(train), {})
        sets["builtin:digits"] = ("builtin:digits", dict(max_per_class=64))
    return sets


def recipes(strategy: str, count: int, seed: int, quick: bool) -> list:
    """``count`` recipes of ``strategy``, sampled at random from the default space (bitfit and norm_only, which it
    leaves out, sample the other settings as a full fine-tune does), lite0 at scale 0.25, 4 or 6 epochs."""
    import dataclasses

    import optuna

    from autotl import load_space

    space = load_space("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    named = strategy if strategy in space.values("strategy") else "full"
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(count):
        study.enqueue_trial(dict(backbone=BACKBONE, resolution_scale=0.25, strategy=named))
        config = space.sample(study.ask())
        epochs = 3 if quick else int(rng.choice([4, 6]))
        found.append(dataclasses.replace(config, strategy=strategy, max_epochs=epochs))
    return found


def run_curves(args, work: Path) -> list[dict]:
    """Fine-tune every strategy's recipes on each dataset and keep each run's curve."""
    import torch

    from autotl import load_dataset
    from autotl.train import fit

    torch.set_num_threads(args.threads)
    rows = []
    for d, (name, (spec, kwargs)) in enumerate(datasets(work, args.quick).items()):
        data = load_dataset(spec, image_size=224, **kwargs)
        n_train = data.count("train")
        for s, strategy in enumerate(STRATEGIES):
            count = 1 if args.quick else args.recipes
            for r, config in enumerate(recipes(strategy, count, seed=100 * d + s, quick=args.quick)):
                config.report_every_images = max(1, n_train // 2)
                started = time.time()
                result = fit(config, data, seed=args.seed, number=r)
                points = [[h.epoch, h.val_accuracy] for h in result.history]
                rows.append(
                    dict(
                        source="benchmarks/curves.py",
                        dataset=name,
                        train_images=n_train,
                        check_images=min(VAL_CHECK_IMAGES, data.count("val")),
                        strategy=strategy,
                        backbone=config.backbone,
                        resolution_scale=config.resolution_scale,
                        max_epochs=config.max_epochs,
                        recipe=config.describe(),
                        seconds=round(time.time() - started, 1),
                        points=_rounded(points),
                    )
                )
                print(f"{name} {strategy} {r}: {rows[-1]['seconds']} s, {len(points)} reports", file=sys.stderr)
    return rows


def large_curves(seconds: float, count: int, seed: int) -> list[dict]:
    """Full fine-tunes on all of Fashion-MNIST (48,000 training images), each trained for ``seconds`` with its
    schedule fitted to them: the warm start's full fine-tune and ``count`` - 1 recipes at random (the rest of the
    large curves come from the searches' studies, ``--studies``, whose full fine-tunes seldom get 3 reports)."""
    import dataclasses

    import optuna

    from autotl import load_dataset, load_space
    from autotl.train import Budget, fit

    data = load_dataset("builtin:fashion-mnist", image_size=224)
    space = load_space("default")
    warm = dict(space.warm_start_params([BACKBONE]))[f"full_finetune on {BACKBONE}"]
    study = optuna.create_study()
    study.enqueue_trial({**warm, "resolution_scale": 0.25})
    first = space.sample(study.ask())
    rows = []
    for r, config in enumerate([first, *recipes("full", count - 1, seed + 1, quick=False)]):
        config = dataclasses.replace(config, max_epochs=2, report_every_images=4096)
        started = time.time()
        result = fit(config, data, budget=Budget(seconds=seconds), seed=seed, number=r)
        rows.append(
            dict(
                source=f"benchmarks/curves.py --large {seconds:g}",
                dataset="builtin:fashion-mnist",
                train_images=data.count("train"),
                check_images=min(VAL_CHECK_IMAGES, data.count("val")),
                strategy=config.strategy,
                backbone=config.backbone,
                resolution_scale=config.resolution_scale,
                max_epochs=config.max_epochs,
                recipe=config.describe(),
                seconds=round(time.time() - started, 1),
                points=_rounded([[h.epoch, h.val_accuracy] for h in result.history]),
            )
        )
        print(f"fashion-mnist (all) full {r}: {rows[-1]['seconds']} s, {rows[-1]['points']}", file=sys.stderr)
    return rows


def predictors(prior) -> dict:
    """Forecasters of a curve's final best-so-far from its first points: the model, its halves, the baseline."""

    def pow_with(beta_of):
        def predict(points, horizon, strategy, check_images, train_images):
            xs, best = best_so_far(points)
            beta = beta_of(xs, best, strategy, train_images)
            err = max(1.0 - best[-1], _curves.ERR_FLOOR) * (horizon / xs[-1]) ** -beta
            return min(1.0, max(best[-1], 1.0 - err))

        return predict

    def own_beta(xs, best, strategy, train_images):
        fitted = loglog_fit(xs, best)
        return fitted[1] if fitted is not None else prior.of(strategy, train_images).beta_mean

    return {
        MODEL: lambda p, h, s, n, size: forecast(p, h, s, prior, n, size).mean,
        "model without the error floor": lambda p, h, s, n, z: forecast(p, h, s, prior, n, z, with_floor=False).mean,
        "model, prior not weighed by size": lambda p, h, s, n, size: forecast(p, h, s, prior, n).mean,
        "prior beta alone": pow_with(lambda xs, best, s, size: prior.of(s, size).beta_mean),
        "own beta alone": pow_with(own_beta),
        "baseline: last value stays": lambda p, h, s, n, size: float(best_so_far(p)[1][-1]),
    }


def evaluate(rows: list[dict]) -> dict:
    """Per k: each predictor's mean absolute error and Spearman correlation (pooled, and within datasets), the
    model's calibration, on curves with more than k + 2 reports, the prior fitted without the curve's dataset."""
    groups = sorted({r["dataset"] for r in rows})
    by_curve = len(groups) < 2  # one dataset (--quick): leave one curve out instead
    table = {}
    for k in KS:
        cases = [r for r in rows if len(r["points"]) > k + 2]
        found = {"curves": len(cases)}
        predicted, stds, actual = {}, [], []
        for row in cases:
            held = [o for o in rows if (o is not row if by_curve else o["dataset"] != row["dataset"])]
            prior = fit_prior(held)
            horizon, final = row["points"][-1][0], float(best_so_far(row["points"])[1][-1])
            actual.append(final)
            n, size = row.get("check_images"), row.get("train_images")
            for name, predict in predictors(prior).items():
                predicted.setdefault(name, []).append(predict(row["points"][:k], horizon, row["strategy"], n, size))
            stds.append(forecast(row["points"][:k], horizon, row["strategy"], prior, n, size).std)
        for name, values in predicted.items():
            found[name] = _scores(values, actual, [r["dataset"] for r in cases])
        errors = np.abs(np.array(predicted[MODEL]) - actual)
        found["model within 1 std"] = round(float(np.mean(errors <= np.array(stds))), 3)
        found["model within 2 std"] = round(float(np.mean(errors <= 2 * np.array(stds))), 3)
        table[k] = found
    return table


def check(rows: list[dict], studies: list[str]) -> dict:
    """Per k: the predictors' error on the curves of ``studies`` (searches on a dataset the prior has no curve
    of), the prior fitted on all of ``rows``."""
    held_out = study_curves(studies)
    prior = fit_prior(rows)
    table = {}
    for k in KS:
        cases = [r for r in held_out if len(r["points"]) > k + 2]
        if cases:
            actual = [float(best_so_far(r["points"])[1][-1]) for r in cases]
            found = {"curves": len(cases)}
            for name, predict in predictors(prior).items():
                values = [
                    predict(r["points"][:k], r["points"][-1][0], r["strategy"], r["check_images"], r["train_images"])
                    for r in cases
                ]
                found[name] = _scores(values, actual, [r["dataset"] for r in cases])
            table[str(k)] = found
    return dict(studies=sorted({r["dataset"] for r in held_out}), train_images=held_out[0]["train_images"], **table)


def _scores(predicted: list[float], actual: list[float], groups: list[str]) -> dict:
    predicted, actual = np.array(predicted), np.array(actual)
    within = []
    for group in sorted(set(groups)):
        mask = np.array([g == group for g in groups])
        if mask.sum() >= 3 and np.ptp(predicted[mask]) > 0 and np.ptp(actual[mask]) > 0:
            within.append(spearmanr(predicted[mask], actual[mask]).statistic)
    pooled = spearmanr(predicted, actual).statistic if np.ptp(predicted) > 0 else float("nan")
    return dict(
        mae=round(float(np.mean(np.abs(predicted - actual))), 4),
        bias=round(float(np.mean(predicted - actual)), 4),
        spearman=round(float(pooled), 3),
        spearman_within_dataset=round(float(np.mean(within)), 3) if within else None,
    )


def prior_summary(rows: list[dict]) -> dict:
    """Per strategy: curves, prior beta (mean, std), and the accuracy a trial not started is forecast at 1 and
    6 epochs (the prior alone); and the curves (counted by weight) and beta of its prior for a dataset of LARGE
    training images."""
    prior = fit_prior(rows)
    out = {}
    for strategy in (*STRATEGIES, _curves.ALL):
        own = prior.strategies.get(strategy)
        if own is None:
            continue
        at = {h: forecast([], h, strategy, prior) for h in (1, 6)}
        large = own.for_size(LARGE)
        out[strategy] = dict(
            curves=len(own.params),
            beta_mean=round(own.beta_mean, 3),
            beta_std=round(own.beta_std, 3),
            **{f"empty_at_{h}": [round(f.mean, 3), round(f.std, 3)] for h, f in at.items()},
            large=dict(
                curves=round(large.count, 2), beta_mean=round(large.beta_mean, 3), beta_std=round(large.beta_std, 3)
            ),
        )
    per_noise = round(prior.drift_per_noise, 3) if prior.drift_per_noise is not None else None
    return dict(noise=round(prior.noise, 3), drift=round(prior.drift, 3), drift_per_noise=per_noise, strategies=out)


def write_results(payload: dict) -> None:
    """The "Learning-curve model" section of RESULTS.md: the command, the curves, the error table, the prior."""
    rows, table = payload["curves"], payload["errors"]
    names = [n for n in table[str(KS[0])] if isinstance(table[str(KS[0])][n], dict)]
    studied = sum(r["source"].startswith("study ") for r in rows)
    lengths = [len(r["points"]) for r in rows]
    reports = f"{min(lengths)}-{max(lengths)}, median {statistics.median(lengths):g}"
    lines = [
        f"`{payload['command']}` ({payload['seconds']:.0f} s, peak RSS {payload['peak_rss_kb'] / 1e6:.2f} GB, "
        f"{payload['machine']}): {len(rows)} curves, {studied} of them from study databases "
        f"({', '.join(f'{n} {d}' for d, n in payload['counts'].items())}; {reports} reports each), "
        "written to autotl/search/prior_curves.json.",
        "",
        "From the first k reports of each curve with more than k + 2, each predictor forecasts the curve's final "
        "best-so-far validation accuracy (at its last report's epochs); the prior is fitted without the curve's "
        "dataset (leave one dataset out). MAE: mean absolute error; Spearman: rank correlation of forecast and "
        "final over all the curves, and within a dataset (the mean over datasets: how a scheduler uses it).",
        "",
        "| k | curves | predictor | MAE | bias | Spearman | Spearman within dataset |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in KS:
        found = table[str(k)]
        for name in names:
            s = found[name]
            lines.append(
                f"| {k} | {found['curves']} | {name} | {s['mae']:.4f} | {s['bias']:+.4f} | {s['spearman']:.3f} | "
                f"{s['spearman_within_dataset']} |"
            )
    lines += [
        "",
        "The model's std (widened 1.5 times, `STD_WIDEN`: as first derived, only 45-59% of finals lay within 1 std "
        "and 85-87% within 2): the share of curves whose final lies within 1 and 2 std (normal: 68%, 95%):",
        "",
    ]
    for k in KS:
        lines.append(f"- k = {k}: {table[str(k)]['model within 1 std']:.0%}, {table[str(k)]['model within 2 std']:.0%}")
    prior = payload["prior"]
    lines += [
        "",
        f"The shipped prior (residual sd of log error: {prior['noise']}; drift: {prior['drift']}, or "
        f"{prior.get('drift_per_noise')} times the binomial variance of log err for a trial whose check size is "
        "known, as in a search). A trial not "
        "started is forecast from its strategy's curves alone, pooled over datasets (hence the wide std):",
        "",
    ]
    lines += [
        f"| strategy | curves | beta mean | beta std | empty curve at 1 epoch | at 6 epochs | for {LARGE:,} images: "
        "curves by weight | beta mean | beta std |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in prior["strategies"].items():
        large = s.get("large") or dict(curves="", beta_mean="", beta_std="")
        lines.append(
            f"| {name} | {s['curves']} | {s['beta_mean']} | {s['beta_std']} | "
            f"{s['empty_at_1'][0]} ± {s['empty_at_1'][1]} | {s['empty_at_6'][0]} ± {s['empty_at_6'][1]} | "
            f"{large['curves']} | {large['beta_mean']} | {large['beta_std']} |"
        )
    lines += ["", *findings(table), *checked(payload.get("check")), "", SCOPE]
    write_section("Learning-curve model", lines)


def checked(found: dict | None) -> list[str]:
    """The held-out check: forecasts of a search's curves on a dataset the prior has no curve of."""
    if not found:
        return []
    lines = [
        "",
        f"Held out (`{found['command']}`): the curves of a search on {', '.join(found['studies'])} "
        f"({found['train_images']} training images, a report a twelfth of an epoch; not in the prior), each "
        "forecast from its first k reports to its last with the prior of all the curves above:",
        "",
        "| k | curves | predictor | MAE | bias |",
        "|---|---|---|---|---|",
    ]
    for k in KS:
        row = found.get(str(k)) or {}
        for name, s in row.items():
            if isinstance(s, dict):
                lines.append(f"| {k} | {row['curves']} | {name} | {s['mae']:.4f} | {s['bias']:+.4f} |")
    return lines


def findings(table: dict) -> list[str]:
    """What the error table says, in words: where the model beats the baseline and its halves, and where not."""
    model, base, alone = MODEL, "baseline: last value stays", "prior beta alone"
    lines = []
    for metric, words, lower in (("mae", "MAE", True), ("spearman", "Spearman", False)):
        for scope in (metric, "spearman_within_dataset") if metric == "spearman" else (metric,):
            wins = [k for k in KS if _better(table[str(k)][model][scope], table[str(k)][base][scope], lower)]
            losses = [str(k) for k in KS if k not in wins]
            name = words + (" within datasets" if scope == "spearman_within_dataset" else "")
            lines.append(
                f"- {name}: the model beats the baseline at k = {', '.join(map(str, wins)) or 'none'}"
                + (f"; it does not at k = {', '.join(losses)}." if losses else ".")
            )
    gains = [table[str(k)][model]["mae"] - table[str(k)][alone]["mae"] for k in KS[1:]]
    own_worst = all(table[str(k)]["own beta alone"]["mae"] > table[str(k)][alone]["mae"] for k in KS[1:])
    lines.append(
        f"- For k >= 2 the model's MAE minus that of the prior's beta alone (no floor) is {min(gains):+.4f} to "
        f"{max(gains):+.4f} (k = 1: the same forecast); the curve's own beta alone is "
        + ("worse than the prior's at every k >= 2." if own_worst else "not always worse than the prior's.")
    )
    biases = [table[str(k)][model]["bias"] for k in KS]
    lines.append(f"- The model's bias (forecast - final) is {min(biases):+.4f} to {max(biases):+.4f} over k.")
    return lines


def _better(mine, theirs, lower: bool) -> bool:
    return mine is not None and theirs is not None and (mine < theirs if lower else mine > theirs)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="one dataset, one recipe a strategy, 3 epochs; the shipped prior is kept"
    )
    parser.add_argument("--from-json", action="store_true", help="no training: the shipped curves, evaluated again")
    parser.add_argument("--check", nargs="*", default=[], help="study.db paths whose curves are forecast, not learnt")
    parser.add_argument("--studies", nargs="*", default=[], help="study.db paths or globs whose trials add curves")
    parser.add_argument("--recipes", type=int, default=3, help="recipes per strategy and dataset")
    parser.add_argument(
        "--large", type=float, default=0, help="also: full fine-tunes of this many seconds on all of Fashion-MNIST"
    )
    parser.add_argument("--large-recipes", type=int, default=3, help="how many (the warm start's, then at random)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    started = time.time()
    shipped = json.loads(PRIOR_FILE.read_text()) if args.from_json else None
    if shipped is not None:  # with --studies or --large, the shipped curves and new ones beside them
        added = study_curves(args.studies)
        again = {r["source"] for r in added}
        kept = [r for r in shipped["curves"] if r["source"] not in again]
        rows = [r for r in kept if not (args.large and "--large" in r["source"])] + added
    else:
        rows = study_curves(args.studies) + run_curves(args, Path(tempfile.mkdtemp(prefix="autotl-curves-")))
    if args.large:
        rows += large_curves(args.large, args.large_recipes, args.seed)
    rows = distinct(rows)
    counts = {}
    for row in rows:
        counts[row["dataset"]] = counts.get(row["dataset"], 0) + 1
    ran = dict(
        command="python benchmarks/curves.py " + " ".join(sys.argv[1:]),
        seconds=round(time.time() - started, 1),
        machine=f"{platform.machine()}, {torch.get_num_threads()} thread(s)",
        peak_rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )
    if shipped and not (args.studies or args.large):  # the same curves: the run that recorded them
        ran = {k: shipped[k] for k in ran}
    elif shipped:  # curves added to the shipped ones: both runs
        ran = dict(
            command=f"{shipped['command']}, then {ran['command']}",
            seconds=round(shipped["seconds"] + ran["seconds"], 1),
            machine=f"{shipped['machine']}, then {ran['machine']}",
            peak_rss_kb=max(shipped["peak_rss_kb"], ran["peak_rss_kb"]),
        )
    payload = dict(
        **ran,
        counts=counts,
        curves=rows,
    )
    payload["errors"] = {str(k): v for k, v in evaluate(rows).items()}
    payload["prior"] = prior_summary(rows)
    if args.check:
        payload["check"] = dict(command=" ".join(["--check", *args.check]), **check(rows, args.check))
    elif shipped and "check" in shipped:
        payload["check"] = shipped["check"]
    if not args.quick:
        PRIOR_FILE.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
        write_results(payload)
    summary = {k: v for k, v in payload.items() if k != "curves"}
    summary["median_reports"] = statistics.median(len(r["points"]) for r in rows)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
