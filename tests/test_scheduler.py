"""The scheduler: which trial gets the next slice, checked against hand computations with a made-up curve model."""

from __future__ import annotations

import math

import pytest
from scipy.stats import norm

from autotl.search._schedule import Candidate, Forecast, decide, expected_improvement, finish_seconds


def fake_forecast(table):
    """A curve model that predicts, for each strategy, what ``table`` says, whatever the curve and horizon."""
    return lambda curve, horizon, strategy: Forecast(*table[strategy])


def paused(number, strategy, best, seconds, reports=2, last_report=20):
    curve = [(0.1 * (i + 1), best - 0.01 * (reports - 1 - i)) for i in range(reports)]
    return Candidate(number, strategy, curve, seconds, 0.1, reports, last_report)


def hand_ei(mean, std, best):
    z = (mean - best) / std
    return (mean - best) * norm.cdf(z) + std * norm.pdf(z)


def test_expected_improvement_is_the_textbook_formula():
    for mean, std, best in [(0.9, 0.02, 0.85), (0.8, 0.05, 0.85), (0.85, 0.01, 0.85)]:
        assert expected_improvement(Forecast(mean, std), best) == pytest.approx(hand_ei(mean, std, best), rel=1e-9)


def test_the_next_slice_goes_to_the_best_predicted_gain_per_second():
    """A cheap trial that reaches its end (report 20) in 90 s, predicted a little lower, beats a costly one that
    needs 720 s to get there, per second of training; the decision carries the hand-computed gain."""
    cheap, costly = paused(0, "linear_probe", 0.80, 5.0), paused(1, "full", 0.85, 40.0)
    model = fake_forecast({"linear_probe": (0.87, 0.02), "full": (0.90, 0.02)})
    decision = decide([cheap, costly], 1000.0, None, model, can_start=False)
    incumbent = 0.85  # the best curve so far; no trial is complete
    gains = {0: hand_ei(0.87, 0.02, incumbent) / (18 * 5.0), 1: hand_ei(0.90, 0.02, incumbent) / (18 * 40.0)}
    assert decision.candidate.number == max(gains, key=gains.get) == 0
    assert decision.action == "continue" and decision.horizon == 20
    assert decision.gain == pytest.approx(hand_ei(0.87, 0.02, incumbent), rel=1e-9)
    assert decision.gain_per_second == pytest.approx(gains[0], rel=1e-9)
    # at the same cost the higher prediction wins
    costly.seconds_per_report = 5.0
    assert decide([cheap, costly], 1000.0, None, model, can_start=False).candidate.number == 1


def test_a_slow_trial_is_charged_its_cost_once():
    """Two trials that would both train for all the time left: the slow one is already predicted for the fewer
    reports it has time for, so the higher prediction wins although its reports cost 8 times as much. (Dividing
    that prediction by the cost of one report, as before, chose the cheap one.)"""
    probe = paused(0, "linear_probe", 0.80, 5.0, last_report=1000)
    full = paused(1, "full", 0.80, 40.0, last_report=1000)
    model = fake_forecast({"linear_probe": (0.88, 0.02), "full": (0.92, 0.02)})
    decision = decide([probe, full], 1000.0, None, model, can_start=False)
    horizons = {0: 2 + (1000 - 10) // 5, 1: 2 + (1000 - 80) // 40}  # each one's cool-down is kept back
    gains = {
        0: hand_ei(0.88, 0.02, 0.80) / ((horizons[0] - 2) * 5.0),
        1: hand_ei(0.92, 0.02, 0.80) / ((horizons[1] - 2) * 40.0),
    }
    assert decision.candidate.number == max(gains, key=gains.get) == 1
    assert decision.horizon == horizons[1] and decision.gain_per_second == pytest.approx(gains[1], rel=1e-9)


def test_the_best_complete_trial_is_the_bar_to_beat():
    """Against a complete trial at 0.95, a trial predicted to end at 0.90 is not worth a slice: the leader ends."""
    waiting = paused(3, "full", 0.88, 10.0)
    model = fake_forecast({"full": (0.90, 0.005)})
    assert decide([waiting], 1000.0, 0.95, model, can_start=False) is None
    decision = decide([waiting], 1000.0, 0.80, model, can_start=False)
    assert decision.action == "continue" and decision.candidate.number == 3


def test_queued_recipes_get_their_first_slice_before_any_trial_continues():
    model = fake_forecast({"full": (0.99, 0.01)})
    queued = Candidate(5, "linear_probe", queued=True, label="linear_probe on lite0")
    decision = decide([paused(1, "full", 0.9, 1.0), queued], 1000.0, None, model, can_start=True)
    assert decision.candidate.number == 5 and decision.action == "start"


def test_after_a_quarter_of_the_time_a_queued_recipe_waits_to_stand_for_the_next_new_configuration():
    """Once a first slice would end after a quarter of the time, a trial that started goes first when its
    gain per second is higher; when a new configuration is chosen, the queued recipe is the one that starts."""
    model = fake_forecast({"full": (0.99, 0.01), "linear_probe": (0.80, 0.0001)})
    queued = Candidate(5, "full", queued=True, label="full_finetune on lite1")
    climbing = paused(1, "full", 0.9, 1.0)
    late = decide([climbing, queued], 1000.0, None, model, can_start=True, start_seconds=10.0, used_share=0.3)
    assert late.candidate.number == 1 and late.action == "continue"
    early = decide([climbing, queued], 1000.0, None, model, can_start=True, start_seconds=10.0, used_share=0.2)
    assert early.candidate.number == 5 and early.action == "start"
    # a first slice that would end after the quarter waits too: 0.2 + 100 s of the 1250 s is 0.28
    overrun = decide([climbing, queued], 1000.0, None, model, can_start=True, start_seconds=100.0, used_share=0.2)
    assert overrun.candidate.number == 1 and overrun.action == "continue"
    flat = paused(2, "linear_probe", 0.80, 5.0)
    stands = decide([flat, queued], 1000.0, None, model, can_start=True, start_seconds=10.0, used_share=0.3)
    assert stands.candidate.number == 5 and stands.action == "start" and stands.why.startswith("a new configuration")
    # nothing else is worth a slice (a flat trial far below the best complete one): the queued recipe starts, the
    # search does not end with time left
    stuck = paused(3, "linear_probe", 0.60, 5.0)
    waits = decide([stuck, queued], 1000.0, 0.94, model, can_start=True, start_seconds=10.0, used_share=0.5)
    assert waits.candidate.number == 5 and waits.action == "start"
    assert decide([stuck], 1000.0, 0.94, model, can_start=True, start_seconds=10.0, used_share=0.5) is None
    retry = Candidate(7, "full", queued=True, retry=True, label="retry")
    late_retry = decide([climbing, queued, retry], 1000.0, None, model, can_start=True, used_share=0.9)
    assert late_retry.candidate.number == 7 and late_retry.action == "start"


def test_the_leader_ends_with_its_cool_down_when_the_time_left_needs_it():
    leader, other = paused(0, "full", 0.90, 10.0, reports=10), paused(1, "lora", 0.85, 10.0)
    model = fake_forecast({"full": (0.95, 0.02), "lora": (0.97, 0.05)})
    needed = finish_seconds(leader)
    assert needed == (math.ceil(0.2 * 10) + 1) * 10.0  # its cool-down's two reports, and the final scoring
    decision = decide([leader, other], needed + 5.0, None, model, can_start=False)
    assert decision.candidate.number == 0 and decision.action == "finish"
    assert decide([leader, other], needed + 100.0, None, model, can_start=False).action == "continue"


def test_a_leader_whose_cool_down_does_not_fit_ends_at_its_best_report():
    """On a large validation set the final scoring takes more than a report: a leader with 10-s reports whose
    scoring of all of val takes 100 s needs 2 reports and that scoring to end with a cool-down (120 s). With less
    time left it ends at its best report (scoring only, 100 s), not with a cool-down that would overrun the time;
    with not even that left, a complete trial is exported instead, and without one the leader still ends."""
    leader = paused(0, "full", 0.90, 10.0, reports=10)
    leader.score_seconds = 100.0
    flat = fake_forecast({"full": (0.90, 0.0001)})  # nothing left to gain: the leader ends
    assert finish_seconds(leader) == 2 * 10.0 + 100.0
    assert decide([leader], 125.0, None, flat, can_start=False).action == "finish"
    ends = decide([leader], 110.0, None, flat, can_start=False)
    assert ends.candidate.number == 0 and ends.action == "end" and "best report" in ends.why
    assert decide([leader], 110.0, 0.85, flat, can_start=False).action == "end"  # ahead of the complete trial
    assert decide([leader], 50.0, 0.85, flat, can_start=False) is None  # the complete trial is the model
    assert decide([leader], 50.0, None, flat, can_start=False).action == "end"  # no other model: it still ends
    assert decide([leader], -1.0, None, flat, can_start=False).action == "end"  # the time is up


def test_a_slice_that_would_leave_no_time_for_its_own_cool_down_is_not_given():
    """A trial of 15 reports may become the leader with its next slice; its cool-down (4 reports, then the final
    scoring: 50 s) must then fit too, not only the present leader's (20 s)."""
    leader = paused(0, "full", 0.90, 10.0, reports=2)
    long_one = paused(1, "lora", 0.85, 10.0, reports=15, last_report=40)
    model = fake_forecast({"full": (0.90, 0.0001), "lora": (0.99, 0.01)})  # the leader has nothing to gain
    assert finish_seconds(leader) == 20.0 and finish_seconds(long_one, 1) == 50.0
    decision = decide([leader, long_one], 55.0, None, model, can_start=False)
    assert decision.candidate.number == 0 and decision.action == "finish"
    decision = decide([leader, long_one], 65.0, None, model, can_start=False)
    assert decision.candidate.number == 1 and decision.action == "continue"


def test_a_slice_grows_with_the_training_a_trial_has_had_and_shrinks_to_the_time_left():
    """A slice is SLICE_S (15 s) of reports, or a third of the trial's training so far (or of the time left) when
    longer; fewer reports when only those fit before its cool-down (its reports, then the final scoring)."""
    model = fake_forecast({"full": (0.99, 0.01)})
    young, old = paused(0, "full", 0.9, 2.0, reports=2, last_report=1000), paused(0, "full", 0.9, 2.0, reports=30)
    old.last_report = 1000
    assert decide([young], 1000.0, None, model, can_start=False).reports == 7  # 15 s of 2-s reports
    assert decide([old], 1000.0, None, model, can_start=False).reports == 10  # a third of its 60 s
    older = paused(0, "full", 0.9, 2.0, reports=60, last_report=1000)
    assert decide([older], 1000.0, None, model, can_start=False).reports == 20  # a third of its 120 s
    assert decide([older], 90.0, None, model, can_start=False).reports == 15  # a third of the 90 s left
    # 30 s left: 15 s wanted (7 reports) leave 16 s, its cool-down after 37 reports needs (8 + 1) * 2 = 18 s; 6 fit
    assert finish_seconds(old, 6) + 6 * 2.0 == 30.0
    assert decide([old], 30.0, None, model, can_start=False).reports == 6


def test_flat_curves_make_room_for_a_new_configuration():
    """Trials predicted to gain nothing lose to a new configuration, whose spread gives it a chance."""
    flat = [paused(0, "linear_probe", 0.80, 5.0), paused(1, "full", 0.82, 5.0)]
    model = fake_forecast({"linear_probe": (0.80, 0.0001), "full": (0.82, 0.0001)})
    decision = decide(flat, 1000.0, None, model, can_start=True, start_seconds=10.0)
    assert decision.candidate.number is None and decision.action == "start"
    # without room for another configuration, nothing is worth a slice: the leader ends
    decision = decide(flat, 1000.0, None, model, can_start=False)
    assert decision.candidate.number == 1 and decision.action == "finish"


def test_top_k_gives_every_candidate_a_slice_then_only_the_best_two():
    trials = [paused(0, "a", 0.70, 5.0, reports=1), paused(1, "b", 0.90, 5.0, reports=3), paused(2, "c", 0.80, 5.0)]
    model = fake_forecast({})
    exploring = decide(trials, 1000.0, None, model, True, policy="top-k", used_share=0.1)
    assert exploring.candidate.number is None
    decision = decide(trials, 1000.0, None, model, True, policy="top-k", used_share=0.5)
    assert decision.candidate.number == 2  # of the best two (1 and 2), the one with fewer reports
