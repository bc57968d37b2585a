"""The learning-curve model: a power law is extrapolated, an empty curve gets its strategy's prior, forecasts stay
between the best so far and 1, and the prior ships inside the package."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
from pathlib import Path

import numpy as np
import pytest

from autotl.search._curves import (
    ALL,
    PRIOR_FILE,
    Forecast,
    Prior,
    StrategyPrior,
    fit_prior,
    forecast,
    load_prior,
)

STRATEGIES = ("full", "frozen_prefix", "linear_probe", "lp_ft", "surgical", "lora", "bitfit", "norm_only")


def power_law(err1: float, beta: float, epochs) -> list[tuple[float, float]]:
    return [(t, 1.0 - err1 * t**-beta) for t in epochs]


def a_prior(beta: float, spread: float = 0.1, drift: float = 0.5) -> Prior:
    """A prior whose curves all reach 50% at one epoch, their betas spread about ``beta``."""
    params = tuple((math.log(0.5), beta + d) for d in (-spread, 0.0, spread))
    return Prior({ALL: StrategyPrior(params), "full": StrategyPrior(params)}, noise=0.1, drift=drift)


@pytest.mark.parametrize(
    "beta, prior",
    [(0.45, None), (0.5, a_prior(0.15, drift=1e-4))],
    ids=["shipped prior", "prior beta far off, curves known to follow the law"],
)
def test_an_exact_power_law_is_extrapolated(beta, prior):
    curve = power_law(0.4, beta, [0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    found = forecast(curve, 8.0, "full", prior)
    assert found.mean == pytest.approx(1.0 - 0.4 * 8.0**-beta, abs=0.01)


def test_a_curve_flattening_towards_an_error_floor_is_forecast_near_it():
    """A curve whose error falls towards 0.15 (a probe on a hard task) is forecast where it ends (0.763 after 12
    epochs), where a power law with no floor forecast 0.794."""
    epochs, horizon = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0], 12.0
    curve = [(t, 1.0 - (0.15 + 0.3 * t**-0.5)) for t in epochs]
    found = forecast(curve, horizon, "full", a_prior(0.5, drift=1e-4))
    assert found.mean == pytest.approx(1.0 - (0.15 + 0.3 * horizon**-0.5), abs=0.005)
    assert forecast(curve, horizon, "full", a_prior(0.5, drift=1e-4), with_floor=False).mean > found.mean + 0.02


def test_more_points_weigh_more_against_the_prior():
    truth = 1.0 - 0.4 * 8.0**-0.6
    few = forecast(power_law(0.4, 0.6, [1.0, 1.5]), 8.0, "full", a_prior(0.1))
    many = forecast(power_law(0.4, 0.6, [1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0]), 8.0, "full", a_prior(0.1))
    assert abs(many.mean - truth) < abs(few.mean - truth)


def test_a_trial_checked_on_more_images_trusts_its_own_slope_sooner():
    """The drift scales with the binomial variance of log err: a curve scored on 1,000 images follows its own power
    law (beta 0.6) more closely than the same curve scored on 50, against a prior that says beta 0.1."""
    prior = dataclasses.replace(a_prior(0.1), drift_per_noise=20.0)
    curve, truth = power_law(0.4, 0.6, [1.0, 1.5, 2.0, 2.5]), 1.0 - 0.4 * 8.0**-0.6
    many, few = (forecast(curve, 8.0, "full", prior, check_images=n) for n in (1000, 50))
    assert abs(many.mean - truth) < abs(few.mean - truth)
    assert forecast(curve, 8.0, "full", prior) == forecast(curve, 8.0, "full", a_prior(0.1))  # no count: as before
    assert prior.drift_for(0.2, 1000) == pytest.approx(20.0 * 0.8 / (1000 * 0.2))


def test_one_point_extrapolates_with_the_prior_beta():
    found = forecast([(1.0, 0.6)], 4.0, "full", a_prior(0.5, spread=0.0))
    assert found.mean == pytest.approx(1.0 - 0.4 * 4.0**-0.5)


def test_an_empty_curve_gets_its_strategy_prior():
    early, late = forecast([], 1.0, "full"), forecast([], 8.0, "full")
    assert 0.0 <= early.mean < late.mean <= 1.0 and early.std > 0.005
    # The shipped curves: a full fine-tune starts below a linear probe and climbs more, but does not overtake it
    # within 8 epochs (lite0 at scale 0.25 on a few hundred images), so no "high end" is asserted.
    probe_early, probe_late = forecast([], 1.0, "linear_probe"), forecast([], 8.0, "linear_probe")
    assert early.mean < probe_early.mean
    assert late.mean - early.mean > probe_late.mean - probe_early.mean


def test_an_unknown_strategy_gets_the_prior_of_all():
    assert forecast([], 4.0, "no_such_strategy") == forecast([], 4.0, ALL)
    assert forecast([(1.0, 0.5)], 4.0, "no_such_strategy") == forecast([(1.0, 0.5)], 4.0, ALL)


def test_forecasts_stay_between_the_best_so_far_and_one():
    rng = np.random.default_rng(0)
    prior = load_prior()
    for _ in range(300):
        n = int(rng.integers(1, 12))
        epochs = np.cumsum(rng.uniform(0.1, 1.0, n))
        accuracies = rng.choice([rng.uniform(0, 1, n), np.ones(n), np.zeros(n), np.linspace(0.9, 0.1, n)])
        curve = list(zip(epochs.tolist(), accuracies.tolist()))
        horizon = float(epochs[-1] * rng.choice([1.0, 0.5, 1.5, 10.0]))  # before the last point too
        found = forecast(curve, horizon, str(rng.choice([*STRATEGIES, "unknown"])), prior)
        assert max(accuracies) - 1e-12 <= found.mean <= 1.0
        assert found.std >= 0.005 and math.isfinite(found.std)


def test_the_std_grows_with_the_horizon():
    curve = [(0.5, 0.5), (1.0, 0.62), (1.5, 0.66), (2.0, 0.71)]
    stds = [forecast(curve, h, "full").std for h in (2.0, 4.0, 8.0, 16.0)]
    assert stds == sorted(stds) and stds[0] == 0.005


def test_a_curve_with_few_points_teaches_the_prior_nothing():
    rows = [dict(strategy="full", points=[[1, 0.5], [2, 0.6], [3, 0.65]]), dict(strategy="lora", points=[[1, 0.5]])]
    prior = fit_prior(rows)
    assert set(prior.strategies) == {"full", ALL} and len(prior.of("lora").params) == 1
    with pytest.raises(ValueError):
        fit_prior([dict(strategy="full", points=[[1, 0.5]])])


def test_load_prior_reads_the_shipped_curves():
    shipped = json.loads(PRIOR_FILE.read_text())
    prior = load_prior()
    assert load_prior() is prior  # read once
    assert len(prior.strategies[ALL].params) == sum(len(row["points"]) >= 3 for row in shipped["curves"])
    assert all(s in prior.strategies for s in STRATEGIES)
    assert isinstance(forecast([(1.0, 0.5)], 4.0, "lora"), Forecast)
    assert PRIOR_FILE.stat().st_size < 200_000


def test_the_prior_is_package_data():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"].get("autotl", [])
    assert any(fnmatch.fnmatch("search/prior_curves.json", p) for p in patterns), "add 'search/*.json' to package-data"


def test_the_prior_weighs_curves_of_datasets_near_the_trials_size():
    """Curves of a few hundred images fall steeply (beta 0.8), those of 48,000 slowly (beta 0.2): a trial's prior is
    the one of datasets its size, pooled when its size is not given."""
    rows = [
        dict(strategy="full", train_images=n, points=power_law(0.4, beta, [1.0, 2.0, 3.0, 4.0]))
        for n, beta in [(300, 0.8), (400, 0.8), (500, 0.8), (40_000, 0.2), (48_000, 0.2), (60_000, 0.2)]
    ]
    prior = fit_prior(rows)
    assert prior.of("full", 400).beta_mean == pytest.approx(0.8, abs=0.01)
    assert prior.of("full", 50_000).beta_mean == pytest.approx(0.2, abs=0.01)
    assert prior.of("full").beta_mean == pytest.approx(0.5, abs=0.01)
    small, large = (forecast([(1.0, 0.6)], 8.0, "full", prior, train_images=n).mean for n in (400, 50_000))
    assert small == pytest.approx(1.0 - 0.4 * 8.0**-0.8, abs=0.01) and large < small


def test_a_strategy_without_curves_near_the_size_gets_the_prior_of_all_there():
    rows = [dict(strategy="full", train_images=n, points=power_law(0.4, 0.8, [1.0, 2.0, 3.0])) for n in (300, 400, 500)]
    probes = power_law(0.4, 0.1, [1.0, 2.0, 3.0])
    rows += [dict(strategy="linear_probe", train_images=50_000, points=probes) for _ in range(3)]
    prior = fit_prior(rows)
    assert prior.of("full", 400).beta_mean == pytest.approx(0.8, abs=0.01)
    assert prior.of("full", 50_000).beta_mean == pytest.approx(0.1, abs=0.01)  # all strategies at 50,000: the probes
