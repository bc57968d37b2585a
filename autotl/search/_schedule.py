"""Where the next slice of training goes: the search's scheduler, as pure functions of the trials' curves.

A trial advances a slice (a report, or as many as take SLICE_S or a third of its training so far) at a time and
waits in between; only a slice's last report is checked. After every slice the scheduler looks at every trial that
waits and at a new configuration from the sampler, predicts for each the best validation accuracy it would reach if
it got the time that is left (``_curves.forecast``: its curve so far, extrapolated), and gives the next slice to the
one whose expected improvement over the best so far, per second of the training it takes to get there, is largest:
freeze-thaw Bayesian optimization (Swersky et al., 2014) as DyHPO and Quick-Tune use it. Gain and cost are over the
same stretch of training (to the report the prediction is for): a slow trial is already predicted lower for the
fewer reports it has time for, and is not charged its cost a second time. The warm-start recipes each get one slice
first, as long as that slice ends within the first quarter of the time (WARM_START_SHARE); a recipe still queued
after that stands for the next new configuration, or when nothing else is worth a slice, so that on a short budget
the time goes to the recipes that started. Before the time runs out, the best trial gets its cool-down
(``Budget.end_soon``) and is exported, or, when its cool-down would not end in time, ends at its best report
(``Budget.end_now``); the others end where they are ("not worth another slice").

``top-k`` is the simple baseline any smarter policy must beat: every candidate one
slice while a third of the time lasts, then only the best ``TOP_K``, in turn.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..train import COOL_DOWN_SHARE

POLICIES = ("freeze-thaw", "top-k", "off")
MIN_GAIN = 0.0005  # an expected improvement of validation accuracy below this is not worth a slice
NEW_SPREAD = 0.02  # a new configuration's score spreads at least this much around the trials seen (its std)
TOP_K = 2
SLICE_S = 15.0  # a slice is as many reports as take about this long (at least one): cheap reports are not each
# paid for with a model build and a state load
SLICE_SHARE = 1 / 3  # ... or this share of the trial's training so far, when longer (and of the time left, at most)
WARM_START_SHARE = 0.25  # the warm start's first slices come first, within this share of the search's time
EXPLORE_SHARE = 1 / 3  # top-k: the share of the time in which every candidate gets a slice


@dataclass(frozen=True)
class Forecast:
    mean: float
    std: float


@dataclass
class Candidate:
    """A trial that waits for a slice (or, with ``number`` None, a configuration the sampler would propose)."""

    number: int | None
    strategy: str | None = None
    curve: list = field(default_factory=list)  # (epochs trained, validation accuracy) of its reports
    seconds_per_report: float | None = None  # a report's training and checking, as measured (None: not yet)
    epochs_per_report: float = 1.0
    reports: int = 0
    last_report: int = 1  # where its schedule ends
    score_seconds: float = 0.0  # scoring its kept weights on all of val when it ends (its checks' time, scaled)
    queued: bool = False  # waits for its first slice in this run: a warm-start recipe, or a retry
    retry: bool = False  # queued to continue a trial that failed or was lost: it runs whatever --n-trials says
    label: str = ""

    @property
    def best(self) -> float | None:
        return max((y for _, y in self.curve), default=None)

    @property
    def name(self) -> str:
        """What the terminal and the report call it: its recipe, or "queued"."""
        return self.label or "queued"

    @property
    def epochs(self) -> float:
        return self.curve[-1][0] if self.curve else 0.0


@dataclass
class Decision:
    """One slice: which candidate, what to do with it, and why (stored with the trial, shown in the report)."""

    candidate: Candidate
    action: str  # "start" (a first slice), "continue", "finish" (its cool-down, then the export), "end" (no cool-down)
    why: str
    predicted: Forecast | None = None
    horizon: int | None = None  # the report the prediction is for
    gain: float | None = None  # the expected improvement over the best so far by that report
    gain_per_second: float | None = None  # ... over the seconds of training to get there
    reports: int = 1  # the reports the slice trains (a first slice: one)


def expected_improvement(forecast: Forecast, best: float) -> float:
    """E[max(score - best, 0)] for a normally distributed score."""
    std = max(forecast.std, 1e-9)
    z = (forecast.mean - best) / std
    return std * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) + (forecast.mean - best) * 0.5 * math.erfc(
        -z / math.sqrt(2)
    )


def finish_seconds(candidate: Candidate, more: int = 0) -> float:
    """The time to end ``candidate`` (after ``more`` reports): its cool-down's reports and the final scoring."""
    steps_share = COOL_DOWN_SHARE * max(candidate.reports + more, 1)
    return max(1, math.ceil(steps_share)) * (candidate.seconds_per_report or 0.0) + end_seconds(candidate)


def end_seconds(candidate: Candidate) -> float:
    """The time to score ``candidate``'s kept weights on all of val and end it: at least a report's (on a large
    validation set the checks score only part of it)."""
    return max(candidate.seconds_per_report or 0.0, candidate.score_seconds)


def _slice_reports(c: Candidate, seconds_left: float = math.inf, kept_back: float = 0.0) -> int:
    """How many reports the next slice of ``c`` trains: SLICE_S worth, or SLICE_SHARE of its training so far when
    that is longer (a trial that keeps winning slices pays a slice's start and check less often), at most SLICE_SHARE
    of the time left; at least one (one, while its cost is unknown). Fewer when that is all that fits: after the
    slice, both the leader's cool-down (``kept_back``) and ``c``'s own must still fit, as the slice may make ``c``
    the leader. 0: not even one report fits."""
    per = c.seconds_per_report or 0.0
    wanted = max(SLICE_S, SLICE_SHARE * min(c.reports * per, seconds_left))
    more = max(1, int(wanted / per)) if per else 1
    while more and more * per + max(kept_back, finish_seconds(c, more)) > seconds_left:
        more -= 1
    return more


def decide(
    candidates: list[Candidate],
    seconds_left: float,
    best: float | None,
    forecast,
    can_start: bool,
    start_seconds: float = 0.0,
    policy: str = "freeze-thaw",
    used_share: float = 0.0,
) -> Decision | None:
    """The next slice, or None when nothing is worth one. ``best``: the best complete trial's score;
    ``forecast(curve, horizon_epochs, strategy) -> Forecast``; ``can_start``: a new configuration may
    begin (``start_seconds``: the time to its first report); ``used_share``: of the search's time."""
    queued = [c for c in candidates if c.queued and (c.retry or can_start)]
    paused = [c for c in candidates if c.curve and c.reports < c.last_report]
    leader = max(paused, key=lambda c: c.best, default=None)
    ahead = leader is not None and (best is None or leader.best >= best)  # the leader would be the model
    if seconds_left <= 0:  # the time is up: a search without a complete trial ends its leader at its best report
        return Decision(leader, "end", "the time is up: it ends at its best report") if best is None and ahead else None
    usable = seconds_left - (finish_seconds(leader) if ahead else 0.0)  # the leader's cool-down is kept back
    warm_start = _within_warm_start(used_share, seconds_left, start_seconds)
    in_time = [c for c in queued if c.retry or warm_start]  # a retry comes first at any time
    first = next((c for c in in_time if c.retry), in_time[0] if in_time else None)
    if first is not None and start_seconds < usable:
        return Decision(first, "start", "a first slice: " + first.name)
    kept_back = finish_seconds(leader) if ahead else 0.0
    lengths = {c.number: _slice_reports(c, seconds_left, kept_back) for c in paused}
    fits = [c for c in paused if lengths[c.number]]
    new = can_start and start_seconds < usable
    if policy == "top-k":
        chosen = _top_k(paused, fits, new, used_share)
    else:
        incumbent = max([v for v in (best, leader.best if leader else None) if v is not None], default=0.0)
        options = [_value(c, seconds_left, incumbent, forecast) for c in fits]
        if new:
            options.append(_new_value(paused, seconds_left, incumbent, forecast, start_seconds, lengths))
        options = [o for o in options if o is not None]
        chosen = max(options, key=lambda o: o.gain_per_second, default=None)
        if chosen is not None and chosen.gain < MIN_GAIN:
            chosen = None
    if chosen is not None and chosen.candidate.number is None and queued:  # a queued recipe is the new configuration
        chosen = dataclasses.replace(chosen, candidate=queued[0], why=f"{chosen.why}: {queued[0].name}")
    if chosen is None and queued and start_seconds < usable:  # the time left is not given up while recipes wait
        chosen = Decision(queued[0], "start", "nothing else is worth a slice: " + queued[0].name)
    if chosen is None and ahead:
        return _ending(leader, seconds_left, best, "no trial is worth another slice" if fits or new else None)
    if chosen is not None and chosen.action == "continue":
        chosen.reports = lengths[chosen.candidate.number]
    return chosen


def _ending(leader: Candidate, seconds_left: float, best: float | None, why: str | None) -> Decision | None:
    """The leader ends: with its cool-down when that fits in the time left, else at its best report (when that
    scoring fits, or when there is no complete trial to export instead)."""
    needed = finish_seconds(leader)
    if needed <= seconds_left:
        return Decision(
            leader, "finish", (why or f"only its cool-down fits in {seconds_left:.0f} s") + ": the best trial ends"
        )
    if best is None or end_seconds(leader) <= seconds_left:
        why = f"its cool-down ({needed:.0f} s) does not fit in {seconds_left:.0f} s: it ends at its best report"
        return Decision(leader, "end", why)
    return None


def _within_warm_start(used_share: float, seconds_left: float, start_seconds: float) -> bool:
    """A first slice started now (about ``start_seconds`` to its first report) ends within the warm start's share of
    the search's time: the share is what the warm start may spend, not a time after which none begins."""
    return used_share + start_seconds * (1.0 - used_share) / seconds_left <= WARM_START_SHARE  # seconds_left > 0


def _value(c: Candidate, seconds_left: float, incumbent: float, forecast) -> Decision | None:
    """A waiting trial's expected improvement by the report it has time for, per second of training to get there."""
    per = c.seconds_per_report or 1.0
    room = int((seconds_left - finish_seconds(c)) / per) if math.isfinite(seconds_left) else c.last_report
    horizon = min(c.last_report, c.reports + room)
    if horizon <= c.reports:
        return None
    predicted = forecast(c.curve, c.epochs + (horizon - c.reports) * c.epochs_per_report, c.strategy)
    gain = expected_improvement(predicted, incumbent)
    seconds = (horizon - c.reports) * per
    why = f"predicted {predicted.mean:.3f} ± {predicted.std:.3f} at report {horizon}, in {seconds:.0f} s"
    return Decision(c, "continue", why, predicted, horizon, gain, gain / seconds)


def _new_value(paused, seconds_left, incumbent, forecast, start_seconds, slices) -> Decision:
    """A new configuration, taken to be like the trials seen: what they reached (or are predicted to reach) after as
    many reports as it would have time for, with at least NEW_SPREAD of spread; per second of training to get there
    (to a typical trial's end at most; ``slices``: the waiting trials' next slices, in reports)."""
    costs = sorted(c.seconds_per_report for c in paused if c.seconds_per_report)
    per = costs[len(costs) // 2] if costs else 1.0
    reports = max(1, int((seconds_left - start_seconds) / per) + 1) if math.isfinite(seconds_left) else None
    means = [_reached(c, reports, forecast) for c in paused] or [incumbent]
    mean = sum(means) / len(means)
    spread = max(NEW_SPREAD, math.sqrt(sum((m - mean) ** 2 for m in means) / len(means)))
    predicted = Forecast(mean, spread)
    lengths = sorted(c.last_report for c in paused) or [1]
    to_end = min(reports or math.inf, lengths[len(lengths) // 2]) - 1  # its reports after the first, to its end
    seconds = max(start_seconds + to_end * per, _slice_seconds(paused, slices), 1e-3)
    gain = expected_improvement(predicted, incumbent)
    why = f"a new configuration: like the {len(means)} trial(s) seen, {mean:.3f} ± {spread:.3f}"
    return Decision(Candidate(None, label="new"), "start", why, predicted, reports, gain, gain / seconds)


def _reached(c: Candidate, reports: int | None, forecast) -> float:
    """``c``'s best after ``reports`` reports (None: its planned end): read off its curve, or predicted beyond it."""
    reports = c.last_report if reports is None else min(reports, c.last_report)
    if reports <= len(c.curve):
        return max(y for _, y in c.curve[:reports])
    return forecast(c.curve, c.epochs + (reports - len(c.curve)) * c.epochs_per_report, c.strategy).mean


def _top_k(paused, fits, new: bool, used_share: float) -> Decision | None:
    """Every candidate one slice while EXPLORE_SHARE of the time lasts; then the best TOP_K in turn."""
    if new and used_share < EXPLORE_SHARE:
        return Decision(Candidate(None, label="new"), "start", "top-k: every candidate gets one slice first")
    top = sorted(paused, key=lambda c: c.best, reverse=True)[:TOP_K]
    chosen = min([c for c in top if c in fits], key=lambda c: c.reports, default=None)
    why = f"top-k: one of the best {TOP_K}, the one with the fewest reports"
    return Decision(chosen, "continue", why) if chosen is not None else None


def _slice_seconds(paused: list[Candidate], slices: dict) -> float:
    """A slice's typical time: the median of the waiting trials' next (``slices``: their reports)."""
    known = sorted(slices[c.number] * c.seconds_per_report for c in paused if c.seconds_per_report and slices[c.number])
    return known[len(known) // 2] if known else 0.0
