"""Where a trial's validation-accuracy curve will end: a power law in the error, down to an error floor, shrunk
towards its strategy's prior.

The model is the error power law of Hestness et al. (2017), the "pow" family of Domhan
et al. (2015), with a floor: the error of the best-so-far accuracy, err = 1 - best, falls as
``err(t) = floor + (err(t_k) - floor) * (t / t_k) ** -beta`` from the last report (t_k epochs) to the
horizon. The floor is where a curve that flattens is heading (a probe on a hard task stops well short of
1): with 3 or more points, least squares of err = floor + a * t ** -beta with the prior's beta, kept between
0 and the last error; with fewer, 0. A trial's own beta is the least-squares slope of log (err - floor) against
log epochs over its best-so-far points; it is shrunk towards its strategy's prior beta by precision. The own
estimate's variance is (drift + the trial's residual variance) over the spread of its log
epochs, so it weighs more as points accumulate and span more epochs; the drift, learned
from the recorded curves, is how far the beta of a curve's first points strayed from the
slope the curve then followed (residuals alone made the own estimate far too confident).
When the trial's check size is known, the drift is scaled by the binomial variance of its
log error (``measurement_var``) over that of the recorded curves: the prior's curves were
scored on 72 to 128 images, a large dataset's reports on 1,000, whose slope strays less.
Predictions are clipped to [best so far, 1]. The std adds beta's uncertainty, propagated
through the extrapolation, to the curve's noise, which grows from nothing at the last
report to the prior's residual spread far from it.

The prior is learned from recorded curves (``prior_curves.json``, rebuilt by
``benchmarks/curves.py``): each curve's fitted (log err at one epoch, beta), per strategy.
A trial not started (an empty curve) is predicted from those pairs alone: the accuracy each
recorded curve's power law reaches at the horizon, their mean and spread. It is absolute,
pooled over the recorded datasets, so it says how strategies compare (which starts slow,
which ends high), not what a new dataset will reach. Each recorded curve counts by how near its
dataset's training-set size is to the trial's (a Gaussian in log size): curves of a few hundred
images fall steeply in their first epochs, while a report a twelfth of an epoch into 48,000
images is past that, and a half-frozen run there flattens where a full fine-tune still climbs.
A strategy with too few recorded curves (by weight), or an unknown one, gets the prior of all
strategies together. Measured error: benchmarks/RESULTS.md, "Learning-curve model".
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PRIOR_FILE = Path(__file__).resolve().parent / "prior_curves.json"
ERR_FLOOR = 0.005  # the error a log is taken of never goes below this (a perfect score on a small check)
STD_FLOOR = 0.005  # the least uncertainty a forecast states
STD_WIDEN = 1.5  # the derived std held too few finals of recorded curves (RESULTS.md, "Learning-curve model")
BETA_STD_FLOOR = 0.05  # a prior beta's spread is never narrower (a strategy with few, similar curves)
MIN_CURVES = 3  # a strategy with fewer recorded curves (counted by weight) gets the prior of all strategies
SIZE_BANDWIDTH = math.log(4.0)  # sd of log size: a recorded curve counts half at 5x or 1/5 a dataset's size
MIN_POINTS = 3  # a recorded curve with fewer points teaches the prior nothing about its shape
ALL = "all"


@dataclass(frozen=True)
class Forecast:
    """The best validation accuracy predicted at the horizon, and its uncertainty (one standard deviation)."""

    mean: float
    std: float


@dataclass(frozen=True)
class StrategyPrior:
    """One strategy's recorded curves, as the curve model's parameters: (log err at one epoch, beta) per curve, and
    how much each counts (``weights``: all alike unless weighed for a dataset's size, ``for_size``)."""

    params: tuple[tuple[float, float], ...]
    train_images: tuple[float | None, ...] = ()  # per curve, its dataset's training images (None: not recorded)
    weights: tuple[float, ...] | None = None

    def curve_weights(self) -> np.ndarray:
        """How much each curve counts (all alike when not weighed, or when every weight vanishes)."""
        found = np.ones(len(self.params)) if self.weights is None else np.array(self.weights)
        return found if found.sum() > 1e-12 else np.ones(len(self.params))

    @property
    def count(self) -> float:
        """How many curves it holds, each counted by its weight."""
        return float(np.sum(self.weights)) if self.weights is not None else float(len(self.params))

    @property
    def beta_mean(self) -> float:
        return float(np.average([beta for _, beta in self.params], weights=self.curve_weights()))

    @property
    def beta_std(self) -> float:
        betas = np.array([beta for _, beta in self.params])
        spread = math.sqrt(float(np.average((betas - self.beta_mean) ** 2, weights=self.curve_weights())))
        return max(BETA_STD_FLOOR, spread)

    def for_size(self, train_images: int) -> StrategyPrior:
        """The same curves weighed for a dataset of ``train_images``: a curve counts less the further its dataset's
        size is from it (a Gaussian in log size; a curve of unrecorded size counts fully)."""
        weights = tuple(
            1.0 if n is None else math.exp(-0.5 * (math.log(train_images / n) / SIZE_BANDWIDTH) ** 2)
            for n in (self.train_images or (None,) * len(self.params))
        )
        return StrategyPrior(self.params, self.train_images, weights)


@dataclass(frozen=True)
class Prior:
    """Per strategy, the distribution of the curve model's parameters. ``noise``: the residual sd of log err about
    a curve's own power law; ``drift``: the variance of a trial's own beta estimate, times its log epochs' spread."""

    strategies: dict[str, StrategyPrior] = field(default_factory=dict)
    noise: float = 0.1
    drift: float = 0.5
    drift_per_noise: float | None = None  # the drift over the binomial variance of the curves' log err (below)

    def drift_for(self, err: float, check_images: int | None) -> float:
        """The drift of a trial whose reports score ``check_images`` images, at error ``err``: a trial measured on
        more images strays less (``drift_per_noise``); without a count, the recorded curves' own drift."""
        if check_images is None or self.drift_per_noise is None:
            return self.drift
        return self.drift_per_noise * measurement_var(err, check_images)

    def of(self, strategy: str, train_images: int | None = None) -> StrategyPrior:
        """The strategy's prior, or all strategies' when it has too few recorded curves; with ``train_images``, its
        curves weighed by how near their datasets' sizes are (``StrategyPrior.for_size``)."""
        own, everything = self.strategies.get(strategy), self.strategies[ALL]
        if train_images:
            own, everything = own and own.for_size(train_images), everything.for_size(train_images)
        return own if own is not None and own.count >= MIN_CURVES - 1e-9 else everything


def measurement_var(err: float, check_images: int) -> float:
    """The binomial variance of log err when the error rate ``err`` is measured on ``check_images`` images."""
    err = min(max(err, ERR_FLOOR), 1.0 - ERR_FLOOR)
    return (1.0 - err) / (check_images * err)


def best_so_far(curve) -> tuple[np.ndarray, np.ndarray]:
    """The curve's epochs (positive, in order) and its best accuracy up to each."""
    points = sorted((float(x), float(y)) for x, y in curve if x is not None and y is not None)
    points = [(x, y) for x, y in points if x > 0 and math.isfinite(x) and math.isfinite(y)]
    if not points:
        return np.zeros(0), np.zeros(0)
    xs, ys = np.array(points).T
    return xs, np.maximum.accumulate(np.clip(ys, 0.0, 1.0))


def loglog_fit(xs: np.ndarray, best: np.ndarray) -> tuple[float, float, float, float] | None:
    """Least squares of log err on log epochs: (log err at one epoch, beta, spread of log epochs, residual sum of
    squares); None when the epochs do not differ."""
    lx, ly = np.log(xs), np.log(np.maximum(1.0 - best, ERR_FLOOR))
    sxx = float(np.sum((lx - lx.mean()) ** 2))
    if len(xs) < 2 or sxx < 1e-12:
        return None
    slope = float(np.sum((lx - lx.mean()) * (ly - ly.mean())) / sxx)
    intercept = float(ly.mean() - slope * lx.mean())
    rss = float(np.sum((ly - intercept - slope * lx) ** 2))
    return intercept, -slope, sxx, rss


def fit_prior(curves: list[dict]) -> Prior:
    """The prior from recorded curves: rows with "strategy", "points" ([[epochs, accuracy], ...]) and, optionally,
    "check_images" (how many validation images each report scored) and "train_images" (its dataset's)."""
    per_strategy: dict[str, list[tuple[float, float]]] = {}
    sizes: dict[str, list[float | None]] = {}
    rss_total, dof_total, kept = 0.0, 0.0, []
    for row in curves:
        xs, best = best_so_far(row.get("points") or [])
        fitted = loglog_fit(xs, best) if len(xs) >= MIN_POINTS else None
        if fitted is None:
            continue
        intercept, beta, _, rss = fitted
        for key in (str(row.get("strategy")), ALL):
            per_strategy.setdefault(key, []).append((intercept, beta))
            sizes.setdefault(key, []).append(row.get("train_images"))
        rss_total, dof_total = rss_total + rss, dof_total + len(xs) - 2
        kept.append((xs, best, row.get("check_images")))
    if ALL not in per_strategy:
        raise ValueError("no recorded curve has enough points to fit a prior")
    noise = math.sqrt(rss_total / dof_total) if dof_total > 0 else Prior.noise
    strategies = {k: StrategyPrior(tuple(v), tuple(sizes[k])) for k, v in per_strategy.items()}
    drift, per_noise = _drift(kept)
    return Prior(strategies, noise=noise, drift=drift, drift_per_noise=per_noise)


def _drift(curves: list[tuple[np.ndarray, np.ndarray, int | None]]) -> tuple[float, float | None]:
    """How far a partial curve's own beta strays from the slope its curve then follows to its end: the mean of
    (beta of the first m points - realised slope from point m to the last) ** 2 * spread of their log epochs;
    and the mean of the same over the binomial variance of log err at point m, for curves whose check size is
    known (None if none is)."""
    found, per_noise = [], []
    for xs, best, check_images in curves:
        err_end = max(1.0 - best[-1], ERR_FLOOR)
        for m in range(2, len(xs)):
            fitted = loglog_fit(xs[:m], best[:m])
            if fitted is not None and xs[-1] > xs[m - 1]:
                realised = -math.log(err_end / max(1.0 - best[m - 1], ERR_FLOOR)) / math.log(xs[-1] / xs[m - 1])
                found.append((fitted[1] - realised) ** 2 * fitted[2])
                if check_images:
                    per_noise.append(found[-1] / measurement_var(1.0 - best[m - 1], check_images))
    return (float(np.mean(found)) if found else Prior.drift), (float(np.mean(per_noise)) if per_noise else None)


@functools.cache
def load_prior() -> Prior:
    """The prior shipped with autotl (package data, read once); nothing is downloaded."""
    return fit_prior(json.loads(PRIOR_FILE.read_text())["curves"])


def forecast(
    curve: list[tuple[float, float]],
    horizon: float,
    strategy: str,
    prior: Prior | None = None,
    check_images: int | None = None,
    train_images: int | None = None,
    with_floor: bool = True,
) -> Forecast:
    """The best validation accuracy a trial will have reached at ``horizon`` epochs, from its curve so far
    ([(epochs, accuracy)], possibly empty: then from its strategy's prior alone). A horizon before the
    curve's last point is taken as that point. ``check_images``: how many validation images its reports score
    (more: its own slope is trusted sooner); ``train_images``: its dataset's, to weigh the recorded curves by;
    ``with_floor=False``: no error floor, the error falls as a power law to zero (the benchmarks' ablation)."""
    prior = prior or load_prior()
    strategy_prior = prior.of(strategy, train_images)
    xs, best = best_so_far(curve)
    if len(xs) == 0:
        return _unstarted(strategy_prior, max(horizon, 1e-3))
    t_k, b_k = float(xs[-1]), float(best[-1])
    horizon = max(float(horizon), t_k)
    floor = error_floor(xs, best, strategy_prior.beta_mean) if with_floor and len(xs) >= MIN_POINTS else 0.0
    falling = np.minimum(best + floor, 1.0)  # the curve of the error above the floor, whose slope beta is
    beta, beta_var = _shrunk_beta(xs, falling, strategy_prior, prior.drift_for(1.0 - b_k, check_images))
    err_k = max(1.0 - b_k, ERR_FLOOR)
    stretch = math.log(horizon / t_k)
    err_h = floor + (err_k - floor) * math.exp(-beta * stretch)
    mean = min(1.0, max(b_k, 1.0 - err_h))
    noise_var = prior.noise**2 * (1.0 - t_k / horizon)
    std = STD_WIDEN * err_h * math.sqrt(stretch**2 * beta_var + noise_var)  # the floor is an estimate too
    return Forecast(mean, max(STD_FLOOR, min(std, 1.0 - b_k + STD_FLOOR)))


def error_floor(xs: np.ndarray, best: np.ndarray, beta: float) -> float:
    """The error the curve flattens towards: least squares of err = floor + a * epochs ** -beta over its best-so-far
    points, between 0 and its last error (a curve still falling as a power law has none)."""
    err = np.maximum(1.0 - best, ERR_FLOOR)
    design = np.stack([np.ones_like(xs), xs**-beta], axis=1)
    (floor, _), *_ = np.linalg.lstsq(design, err, rcond=None)
    return float(min(max(floor, 0.0), err[-1]))


def _shrunk_beta(xs, best, strategy_prior: StrategyPrior, drift: float) -> tuple[float, float]:
    """The trial's beta and its variance: its own least-squares estimate and the prior's, weighted by precision.

    The own estimate's variance is (the recorded curves' drift + the trial's residual variance) over the spread
    of its log epochs: residuals alone understate it, as a curve's slope changes along it."""
    prior_mean, prior_var = strategy_prior.beta_mean, strategy_prior.beta_std**2
    fitted = loglog_fit(xs, best)
    if fitted is None:
        return prior_mean, prior_var
    _, own, sxx, rss = fitted
    residual_var = rss / (len(xs) - 2) if len(xs) > 2 else 0.0
    own_precision, prior_precision = sxx / max(drift + residual_var, 1e-9), 1.0 / prior_var
    precision = own_precision + prior_precision
    return (own * own_precision + prior_mean * prior_precision) / precision, 1.0 / precision


def _unstarted(strategy_prior: StrategyPrior, horizon: float) -> Forecast:
    """A trial not started: the accuracy each recorded curve's power law reaches at the horizon, mean and spread."""
    reached = np.array([1.0 - min(1.0, math.exp(a - beta * math.log(horizon))) for a, beta in strategy_prior.params])
    weights = strategy_prior.curve_weights()
    mean = float(np.average(reached, weights=weights))
    return Forecast(mean, max(STD_FLOOR, math.sqrt(float(np.average((reached - mean) ** 2, weights=weights)))))
