"""Plotly figures drawn from the records in ``_records``.

Each function takes DataFrames (or the dict of ``best_model_records``), not the
study, and returns None when there is nothing to draw, so the page can say so in
one line instead of showing an empty plot. Plotly.js reads most labels (trace
names, hover text, category ticks, axis titles, annotations) as a small subset of
HTML (``<b>``, ``<br>``, entities), so every such label that comes from data goes
through ``_label`` and shows up literally. Everything is SVG (no WebGL traces), so
the page draws quickly in any browser, with or without a GPU.
"""

from __future__ import annotations

import html
import math
from dataclasses import fields
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from ..space import TrialConfig
from ._records import metric_title

_STATE_COLORS = {"complete": "#1f77b4", "pruned": "#999999", "fail": "#d62728", "running": "#2ca02c"}
_STATE_DASH = {"complete": "solid", "pruned": "dash", "fail": "dot", "running": "solid"}
_BEST_COLOR = "#ff7f0e"
_HEIGHT = 420
_TEMPLATE = "plotly_white"
_NA = -0.12  # where a trial without a value of a (conditional) param sits on its axis
_MARGIN = {"t": 30, "b": 50, "l": 60, "r": 20}
# How the report names each recipe setting; a param that is no setting keeps its own name.
_TITLES = {f.name: f.metadata["title"] for f in fields(TrialConfig)}


def history_figure(trials: pd.DataFrame, direction: str = "maximize") -> go.Figure | None:
    """Each trial's score as a marker, plus the best-so-far over complete trials as a step line."""
    scored = trials[trials["value"].notna()]
    if scored.empty:
        return None
    fig = go.Figure()
    for state, group in scored.groupby("state", sort=False):
        fig.add_trace(
            go.Scatter(
                x=group["number"].astype(int).tolist(),
                y=group["value"].tolist(),
                mode="markers",
                name=_label(state if state != "pruned" else "pruned (last reported)"),
                marker={
                    "color": _STATE_COLORS.get(state, "#7f7f7f"),
                    "symbol": "x" if state == "pruned" else "circle",
                    "size": 9,
                },
                hovertemplate="trial %{x}<br>score %{y:.4f}<extra></extra>",
            )
        )
    complete = scored[scored["state"] == "complete"].sort_values("number")
    if not complete.empty:
        values = complete["value"]
        best = values.cummin() if direction == "minimize" else values.cummax()
        fig.add_trace(
            go.Scatter(
                x=complete["number"].astype(int).tolist(),
                y=best.tolist(),
                mode="lines",
                line={"shape": "hv", "color": _BEST_COLOR, "width": 2},
                name="best so far",
                hovertemplate="after trial %{x}<br>best %{y:.4f}<extra></extra>",
            )
        )
    _layout(fig, xaxis_title="trial", yaxis_title="score")
    if scored["number"].max() < 20:
        fig.update_xaxes(dtick=1)  # whole trial numbers only
    return fig


def time_figure(times: pd.DataFrame) -> go.Figure | None:
    """Best score so far against wall time since the first trial began (minutes or hours), and each trial's end:
    those that ended before the first complete one too (in a sliced search, every trial but the last leader)."""
    best = times[times["best_so_far"].notna()]
    if best.empty:
        return None
    hours = times["elapsed_seconds"].max() / 3600 > 2
    scale, unit = (3600.0, "hours") if hours else (60.0, "minutes")
    x = (best["elapsed_seconds"] / scale).round(4).tolist()
    fig = go.Figure(
        go.Scatter(
            x=[0.0] + x,
            y=[None] + best["best_so_far"].tolist(),
            mode="lines",
            line={"shape": "hv", "color": _BEST_COLOR, "width": 2},
            name="best so far",
            hovertemplate=f"%{{x:.2f}} {unit}<br>best %{{y:.4f}}<extra></extra>",
        )
    )
    for state, group in times.groupby("state", sort=False):
        scored = group[group["value"].notna()]
        if scored.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=(scored["elapsed_seconds"] / scale).round(4).tolist(),
                y=scored["value"].tolist(),
                mode="markers",
                name=_label(state) + " trial ends",
                marker={
                    "color": _STATE_COLORS.get(state, "#7f7f7f"),
                    "symbol": "x" if state == "pruned" else "circle",
                    "size": 7,
                    "opacity": 0.6,
                },
                customdata=scored["number"].astype(int).tolist(),
                hovertemplate=f"trial %{{customdata}} ended at %{{x:.2f}} {unit}<br>score %{{y:.4f}}<extra></extra>",
            )
        )
    _layout(fig, xaxis_title=f"wall time since the first trial began ({unit})", yaxis_title="score")
    fig.update_xaxes(rangemode="tozero")
    return fig


def curves_figure(curves: pd.DataFrame, best_trial: int | None = None, metric: str = "accuracy") -> go.Figure | None:
    """The validation score (by the study's ``metric``, what the search optimized) per report, one line per trial.

    Pruned trials are dashed grey with a red 'x' where they stopped; failed trials are
    dotted; the best trial is drawn thick and orange, on top. The legend has one entry
    per kind of trial (click it to hide that kind); hovering a point names its trial, its
    report and the epochs of training done by then.
    """
    curves = curves[curves["score"].notna()]
    if curves.empty:
        return None
    title = f"validation {metric_title(metric)}"
    fig = go.Figure()
    groups = list(curves.groupby("trial", sort=True))
    groups.sort(key=lambda item: best_trial is not None and int(item[0]) == best_trial)  # best last
    shown: set[str] = set()
    for trial, group in groups:
        trial = int(trial)
        state = str(group["state"].iloc[0])
        is_best = best_trial is not None and trial == best_trial
        kind = "best" if is_best else state
        name = f"trial {trial}" + (" (best)" if is_best else "" if state == "complete" else f" ({_label(state)})")
        color = _BEST_COLOR if is_best else _STATE_COLORS.get(state, "#7f7f7f")
        reports = group["report"].astype(int).tolist()
        scores = group["score"].tolist()
        fig.add_trace(
            go.Scatter(
                x=reports,
                y=scores,
                text=[_report_text(r, e) for r, e in zip(reports, group["epoch"])],
                mode="lines+markers",
                name=f"best trial ({trial})" if is_best else _label(f"{state} trials"),
                legendgroup=kind,
                showlegend=kind not in shown,
                line={"color": color, "width": 4 if is_best else 1.5, "dash": _STATE_DASH.get(state, "solid")},
                marker={"size": 4, "color": color},
                opacity=1.0 if is_best or state == "complete" else 0.7,
                hovertemplate=name + f"<br>%{{text}}<br>{title} %{{y:.4f}}<extra></extra>",
            )
        )
        shown.add(kind)
        if state == "pruned":
            fig.add_trace(
                go.Scatter(
                    x=reports[-1:],
                    y=scores[-1:],
                    mode="markers",
                    legendgroup=kind,
                    showlegend=False,
                    marker={"symbol": "x", "size": 11, "color": "#d62728"},
                    hovertemplate=name + "<br>pruned after report %{x}<extra></extra>",
                )
            )
    _layout(fig, xaxis_title="report", yaxis_title=title)
    if curves["report"].max() < 20:
        fig.update_xaxes(dtick=1)  # whole report numbers only
    return fig


_ACTION_COLORS = {"start": "#1f77b4", "continue": "#2ca02c", "finish": _BEST_COLOR, "end": _BEST_COLOR}


def slices_figure(slices: pd.DataFrame) -> go.Figure | None:
    """Which trial trained when: one bar per slice, on one row per trial, coloured by what the slice did;
    hovering a bar shows why the scheduler gave it."""
    if slices.empty:
        return None
    fig = go.Figure()
    rows = [f"trial {t} ({label})" for t, label in zip(slices["trial"], slices["label"].fillna("?"))]
    for action, color in _ACTION_COLORS.items():
        mask = (slices["action"] == action).to_numpy()
        if not mask.any():
            continue
        part = slices[mask]
        fig.add_trace(
            go.Bar(
                x=part["seconds"].fillna(0.0),
                base=part["start"],
                y=[row for row, keep in zip(rows, mask) if keep],
                orientation="h",
                name=action,
                marker={"color": color},
                text=part["why"].fillna(""),
                textposition="none",
                hovertemplate="%{y}<br>from %{base:.0f} s for %{x:.1f} s<br>%{text}<extra>" + action + "</extra>",
            )
        )
    _layout(fig, xaxis_title="seconds since the first slice", yaxis_title="")
    fig.update_layout(barmode="overlay", height=max(300, 28 * len(set(rows)) + 120))
    return fig


def _report_text(report: int, epoch: float | None) -> str:
    """'report 3 (epoch 1.50)', or 'report 3' when the epochs done are not known."""
    return f"report {report}" if _missing(epoch) else f"report {report} (epoch {epoch:.2f})"


def importance_figure(importances: pd.DataFrame) -> go.Figure | None:
    """Horizontal bars of param importance, most important on top."""
    if importances.empty:
        return None
    ordered = importances.iloc[::-1]
    fig = go.Figure(
        go.Bar(
            x=ordered["importance"].tolist(),
            y=[_label(name) for name in ordered["param"]],
            orientation="h",
            marker={"color": "#1f77b4"},
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    _layout(
        fig,
        xaxis_title="importance (share of explained score variation)",
        height=max(240, 80 + 28 * len(ordered)),
    )
    fig.update_layout(margin={"l": 180})
    fig.update_yaxes(type="category")
    return fig


def parallel_figure(settings: pd.DataFrame, best_trial: int | None = None) -> go.Figure | None:
    """Parallel coordinates over the settings and score of complete trials, drawn in SVG.

    ``settings`` is ``_records.parallel_records``: number, value, one column per axis,
    each axis titled as ``TrialConfig`` names its setting (a param by its name). One line
    per trial, coloured by score (the best trial thick and orange, on top). Each axis runs
    from the lowest to the highest value: categorical settings are spread evenly in sorted
    order, numeric ones spanning more than 100x are on a log scale, and a trial without a
    value (a conditional param) sits at "n/a" below the axis. Plain lines rather than
    Plotly's WebGL ``parcoords``, so the page draws fast anywhere.
    """
    if settings.empty:
        return None
    complete = settings.sort_values("value", kind="stable")  # best lines drawn last, on top
    axes = [_axis(_TITLES.get(column, column), complete[column]) for column in complete.columns[2:]]
    axes.append(_axis("score", complete["value"]))
    scores = complete["value"].astype(float)
    low, high = scores.min(), scores.max()
    shades = [0.5 if high == low else (v - low) / (high - low) for v in scores]
    fig = go.Figure()
    for row, (number, color) in enumerate(zip(complete["number"].astype(int), sample_colorscale("Viridis", shades))):
        is_best = best_trial is not None and number == best_trial
        fig.add_trace(
            go.Scatter(
                x=list(range(len(axes))),
                y=[axis["positions"][row] for axis in axes],
                text=[axis["texts"][row] for axis in axes],
                mode="lines+markers",
                line={"color": _BEST_COLOR if is_best else color, "width": 4 if is_best else 1.5},
                marker={"size": 5 if is_best else 3},
                opacity=1.0 if is_best else 0.75,
                name=f"trial {number}" + (" (best)" if is_best else ""),
                showlegend=is_best,
                hovertemplate=f"trial {number}<br>%{{text}}<extra></extra>",
            )
        )
    fig.add_trace(  # an invisible trace that only carries the colour bar for the score
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            showlegend=False,
            hoverinfo="skip",
            marker={
                "color": [low, high],
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": "score"}, "thickness": 12},
            },
        )
    )
    _draw_axes(fig, axes)
    return fig


def _draw_axes(fig: go.Figure, axes: list[dict[str, Any]]) -> None:
    """The vertical axes of parallel coordinates, their ticks, and titles on top (room made for long ones)."""
    lowest = -0.15 if any(axis["missing"] for axis in axes) else 0.0
    for index, axis in enumerate(axes):
        fig.add_shape(type="line", x0=index, x1=index, y0=lowest, y1=1, line={"color": "#444", "width": 1})
        for position, text in axis["ticks"]:
            fig.add_annotation(
                x=index,
                y=position,
                text=text,
                showarrow=False,
                xanchor="left",
                xshift=3,
                font={"size": 10, "color": "#333"},
                bgcolor="rgba(255,255,255,0.7)",
            )
    fig.update_xaxes(
        tickvals=list(range(len(axes))),
        ticktext=[axis["label"] for axis in axes],
        tickangle=0,
        side="top",
        showgrid=False,
        zeroline=False,
        range=[-0.3, len(axes) - 0.4],
    )
    fig.update_yaxes(visible=False, range=[lowest - 0.05, 1.05])
    lines = max(axis["label"].count("<br>") + 1 for axis in axes)
    _layout(fig, height=_HEIGHT + 40)
    fig.update_layout(
        margin={"t": 30 + 14 * lines, "l": 20, "r": 20, "b": 20},
        hovermode="closest",
        legend={"orientation": "h", "y": -0.02, "x": 1, "xanchor": "right"},
    )


def recipe_panels(configs: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(column, title, scale) of each recipe setting ``TrialConfig`` shows that took more than one value in
    ``configs``, in its order: the settings a search chose between (scale: number, log or category)."""
    return [
        (f.name, f.metadata["title"], f.metadata["scale"])
        for f in fields(TrialConfig)
        if f.metadata["shown"] and f.name in configs and configs[f.name].nunique() > 1
    ]


def recipe_figure(configs: pd.DataFrame, best_trial: int | None = None) -> go.Figure | None:
    """Score of complete trials against each recipe setting they chose between (strategy, learning rate, ...).

    ``configs`` is ``_records.config_records``, so a setting shows only for the trials
    that used it. One small panel per setting (``recipe_panels``); numeric settings are
    scatter plots (log x when ``TrialConfig`` says so and they span more than 20x),
    categorical ones show every trial as a point over a box. The best trial is an orange
    star.
    """
    complete = configs[(configs["state"] == "complete") & configs["value"].notna()]
    panels = recipe_panels(complete)
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=[_label(title) for _, title, _ in panels],
        shared_yaxes=True,
        horizontal_spacing=0.04,
        vertical_spacing=min(0.16, 0.5 / rows),  # at most 1 / (rows - 1)
    )
    for index, panel in enumerate(panels):
        _recipe_panel(fig, complete, panel, best_trial, index // columns + 1, index % columns + 1)
    fig.update_yaxes(title_text="score", col=1)
    _layout(fig, height=60 + 300 * rows)
    fig.update_layout(margin={"t": 50})
    return fig


def _recipe_panel(
    fig: go.Figure, complete: pd.DataFrame, panel: tuple[str, str, str], best_trial: int | None, row: int, col: int
) -> None:
    """One setting's panel of ``recipe_figure``: the trials that used it, and the best one as a star."""
    column, title, scale = panel
    frame = complete[complete[column].notna()]
    category = scale == "category"
    x = [_label(v) for v in frame[column]] if category else frame[column].tolist()
    common = {
        "y": frame["value"].tolist(),
        "customdata": frame["number"].astype(int).tolist(),
        "hovertemplate": f"trial %{{customdata}}<br>{_label(title)} %{{x{'' if category else ':.3g'}}}"
        "<br>score %{y:.4f}<extra></extra>",
        "showlegend": False,
    }
    if category:
        box = {"boxpoints": "all", "jitter": 0.4, "pointpos": 0, "fillcolor": "rgba(0,0,0,0)"}
        marker = {"color": "#1f77b4", "size": 6, "opacity": 0.7}
        fig.add_trace(go.Box(x=x, marker=marker, line={"color": "#c7d7e8"}, **box, **common), row=row, col=col)
        fig.update_xaxes(type="category", row=row, col=col)
    else:
        marker = {"color": "#1f77b4", "size": 7, "opacity": 0.7}
        fig.add_trace(go.Scatter(x=x, mode="markers", marker=marker, **common), row=row, col=col)
        low, high = frame[column].min(), frame[column].max()
        if scale == "log" and low > 0 and high / low > 20:
            fig.update_xaxes(type="log", row=row, col=col)
    best = frame[frame["number"] == best_trial] if best_trial is not None else frame.iloc[:0]
    if not best.empty:
        fig.add_trace(
            go.Scatter(
                x=[_label(v) for v in best[column]] if category else best[column].tolist(),
                y=best["value"].tolist(),
                mode="markers",
                marker={"color": _BEST_COLOR, "symbol": "star", "size": 14},
                name="best trial",
                showlegend=False,
                hovertemplate=f"best trial {best_trial}<br>score %{{y:.4f}}<extra></extra>",
            ),
            row=row,
            col=col,
        )


def backbone_figure(configs: pd.DataFrame, backbones: pd.DataFrame) -> go.Figure | None:
    """Per backbone: the scores of its complete trials (left) and mean seconds per trial (right)."""
    if backbones.empty:
        return None
    order = [_label(name) for name in backbones["backbone"]]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["score of complete trials", "seconds per trial (all trials)"],
        horizontal_spacing=0.12,
    )
    complete = configs[(configs["state"] == "complete") & configs["value"].notna()]
    fig.add_trace(
        go.Box(
            x=[_label(v) for v in complete["backbone"]],
            y=complete["value"].tolist(),
            boxpoints="all",
            jitter=0.4,
            pointpos=0,
            marker={"color": "#1f77b4", "size": 6},
            line={"color": "#9ab8d6"},
            customdata=complete["number"].astype(int).tolist(),
            hovertemplate="trial %{customdata}<br>%{x}<br>score %{y:.4f}<extra></extra>",
            showlegend=False,
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=order,
            y=backbones["seconds_per_trial"].tolist(),
            marker={"color": "#8c564b"},
            text=[f"{n} trial{'s' if n != 1 else ''}" for n in backbones["trials"]],
            textposition="auto",
            hovertemplate="%{x}<br>%{y:.1f} s per trial (%{text})<extra></extra>",
            showlegend=False,
        ),
        row=1,
        col=2,
    )
    for col in (1, 2):
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=order, row=1, col=col)
    fig.update_yaxes(title_text="score", row=1, col=1)
    fig.update_yaxes(title_text="seconds", row=1, col=2)
    _layout(fig, height=_HEIGHT)
    fig.update_layout(margin={"t": 50})
    return fig


def strategy_figure(strategies: pd.DataFrame, metric: str = "accuracy") -> go.Figure | None:
    """Best score (y, by the study's ``metric``) against median training seconds per trial (x), one labelled
    marker per strategy.

    ``strategies`` is ``_records.strategy_records``; hovering a marker shows the share of
    parameters the strategy trains, the light ones (LoRA, BitFit) being the point of them.
    Seconds are on a log axis when they span more than 20x. None when no strategy has a
    complete trial with its training time.
    """
    shown = strategies[strategies["best"].notna() & strategies["median_train_seconds"].notna()]
    if shown.empty:
        return None
    title = metric_title(metric)
    fig = go.Figure(
        go.Scatter(
            x=shown["median_train_seconds"].tolist(),
            y=shown["best"].tolist(),
            mode="markers+text",
            text=[_label(name) for name in shown["strategy"]],
            textposition="top center",
            marker={"color": "#1f77b4", "size": 11},
            customdata=[
                [share_text(share), int(best), int(trials)]
                for share, best, trials in zip(shown["share_trained"], shown["best_trial"], shown["trials"])
            ],
            hovertemplate=f"%{{text}}<br>best {title} %{{y:.4f}} (trial %{{customdata[1]}})<br>"
            "median %{x:.3g} s of training per trial (%{customdata[2]} trials)<br>"
            "%{customdata[0]} of parameters trained<extra></extra>",
        )
    )
    _layout(fig, xaxis_title="median training seconds per trial", yaxis_title=f"best validation {title}")
    low, high = shown["median_train_seconds"].min(), shown["median_train_seconds"].max()
    if low > 0 and high / low > 20:
        fig.update_xaxes(type="log")
    return fig


def share_text(share: float | None) -> str:
    """A share as a short percentage with two significant digits: '0.8%', '12%', '100%'; 'unknown' when missing."""
    if _missing(share):
        return "unknown"
    percent = 100 * float(share)
    if 0 < percent < 0.01:
        return "<0.01%"
    return f"{percent:.0f}%" if percent >= 10 else f"{percent:.2g}%"


def ranking_figure(ranking: pd.DataFrame, metric: str = "accuracy") -> go.Figure | None:
    """LogME score (x) against the best score (by the study's ``metric``) each backbone then reached (y), one
    labelled marker each.

    ``ranking`` is ``_records.ranking_records``. Backbones without a complete trial
    (dropped, or every trial pruned or failed) have no y: they sit in a thin strip
    below, at their score, so the figure still shows what the ranking left out. None
    when no ranked backbone has both a score and a complete trial.
    """
    scored = ranking[ranking["logme"].notna()]
    trained = scored[scored["best"].notna()]
    if trained.empty:
        return None
    untrained = scored[scored["best"].isna()]
    title = metric_title(metric)
    rows = 2 if not untrained.empty else 1
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04,
        row_heights=[0.82, 0.18] if rows == 2 else [1.0],
    )
    fig.add_trace(
        go.Scatter(
            x=trained["logme"].tolist(),
            y=trained["best"].tolist(),
            mode="markers+text",
            text=[_label(name) for name in trained["backbone"]],
            textposition="top center",
            marker={"color": "#1f77b4", "size": 10},
            name=f"searched: best validation {title}",
            customdata=[[int(r), int(c)] for r, c in zip(trained["rank"], trained["complete"])],
            hovertemplate=f"%{{text}}<br>rank %{{customdata[0]}}, LogME %{{x:.4g}}<br>best {title} "
            "%{y:.4f} (%{customdata[1]} complete trials)<extra></extra>",
        ),
        row=1,
        col=1,
    )
    if rows == 2:
        fig.add_trace(
            go.Scatter(
                x=untrained["logme"].tolist(),
                y=[0.0] * len(untrained),
                mode="markers+text",
                text=[_label(name) for name in untrained["backbone"]],
                textposition="top center",
                marker={"color": "#999999", "size": 9, "symbol": "circle-open"},
                name="dropped or no complete trial",
                customdata=[
                    [int(r), "dropped before the search" if d else f"{int(n)} trials, none complete"]
                    for r, d, n in zip(untrained["rank"], untrained["dropped"], untrained["trials"])
                ],
                hovertemplate="%{text}<br>rank %{customdata[0]}, LogME %{x:.4g}<br>%{customdata[1]}<extra></extra>",
            ),
            row=2,
            col=1,
        )
        fig.update_yaxes(
            range=[-0.5, 1.5], tickvals=[0], ticktext=["not<br>trained"], showgrid=False, zeroline=False, row=2, col=1
        )
    low, high = float(scored["logme"].min()), float(scored["logme"].max())
    pad = 0.15 * (high - low) if high > low else max(0.5, abs(low) * 0.1)  # room for the labels
    fig.update_xaxes(range=[low - pad, high + pad])
    fig.update_xaxes(title_text="LogME score before training (higher = predicted better)", row=rows, col=1)
    fig.update_yaxes(title_text=f"best validation {title}", row=1, col=1)
    _layout(fig, height=_HEIGHT)
    fig.update_layout(legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0})
    return fig


def pareto_figure(pareto: pd.DataFrame, metric: str = "accuracy") -> go.Figure | None:
    """Score (by the study's ``metric``) against latency of every complete trial; the Pareto front highlighted
    and joined.

    ``pareto`` is ``_records.pareto_records``. Front trials are orange and labelled with
    their number, joined by a step line: everything below and to the right of it is
    beaten by some front trial. Latency is on a log axis when it spans more than 20x.
    Hovering a marker names its trial and backbone. None when there is no complete trial.
    """
    if pareto.empty:
        return None
    fig = go.Figure()
    title = metric_title(metric)
    hover = (
        f"trial %{{customdata[0]}} (%{{customdata[1]}})<br>latency %{{x:.3g}} ms<br>{title} %{{y:.4f}}<extra></extra>"
    )

    def customdata(frame: pd.DataFrame) -> list[list[Any]]:
        return [
            [int(n), "backbone unknown" if _missing(b) else _label(b)]
            for n, b in zip(frame["number"], frame["backbone"])
        ]

    others = pareto[~pareto["on_front"]]
    if not others.empty:
        fig.add_trace(
            go.Scatter(
                x=others["latency_ms"].tolist(),
                y=others["score"].tolist(),
                mode="markers",
                marker={"color": _STATE_COLORS["complete"], "size": 8, "opacity": 0.6},
                name="complete trials",
                customdata=customdata(others),
                hovertemplate=hover,
            )
        )
    front = pareto[pareto["on_front"]].sort_values(["latency_ms", "score", "number"], kind="stable")
    if not front.empty:
        fig.add_trace(
            go.Scatter(
                x=front["latency_ms"].tolist(),
                y=front["score"].tolist(),
                mode="lines",
                line={"shape": "hv", "color": _BEST_COLOR, "width": 2},
                name="Pareto front",
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=front["latency_ms"].tolist(),
                y=front["score"].tolist(),
                mode="markers+text",
                text=[str(int(n)) for n in front["number"]],
                textposition="top left",
                marker={"color": _BEST_COLOR, "size": 12, "line": {"color": "#333", "width": 1}},
                name="front trials",
                customdata=customdata(front),
                hovertemplate=hover,
            )
        )
    _layout(fig, xaxis_title="inference latency at batch 1 (ms)", yaxis_title=f"validation {title}")
    low, high = pareto["latency_ms"].min(), pareto["latency_ms"].max()
    if low > 0 and high / low > 20:
        fig.update_xaxes(type="log")
    return fig


def confusion_figure(best: dict[str, Any] | None) -> go.Figure | None:
    """The best model's confusion matrix on validation images; colour is the share of each true class.

    Each true-class row is labelled with its validation images, e.g. 'cat (n=12)', so a
    share of a class with few images reads as the guess it is.
    """
    if not best or best.get("confusion") is None or best["confusion"].empty:
        return None
    counts = best["confusion"]
    names = [_label(name) for name in counts.index]
    totals = counts.sum(axis=1)
    rows = [f"{name} (n={int(total)})" for name, total in zip(names, totals)]
    shares = counts.div(totals.replace(0, 1), axis=0).round(4)
    n = len(names)
    fig = go.Figure(
        go.Heatmap(
            z=shares.values.tolist(),
            x=names,
            y=rows,
            customdata=counts.values.tolist(),
            text=counts.values.tolist(),
            texttemplate="%{text}" if n <= 20 else None,
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": {"text": "share of<br>true class"}},
            hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata} images "
            "(%{z:.0%} of the true class)<extra></extra>",
        )
    )
    side = min(900, max(380, 160 + 28 * n))
    _layout(fig, xaxis_title="predicted class", yaxis_title="true class", height=side)
    long_names = n > 6 and max(len(str(name)) for name in counts.index) > 3
    fig.update_layout(margin={"l": 140, "b": 120 if long_names else 60})
    fig.update_xaxes(type="category", tickangle=-45 if long_names else 0)
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def _layout(fig: go.Figure, *, height: int = _HEIGHT, **titles: str) -> None:
    fig.update_layout(height=height, margin=_MARGIN, template=_TEMPLATE, **titles)


def _axis(title: str, values: pd.Series, max_ticks: int = 12) -> dict[str, Any]:
    """One parallel-coordinates axis: each trial's position in [0, 1] (``_NA`` when it lacks
    the value), hover text per trial, and the tick labels to write along the axis.

    Numeric columns (by dtype; booleans are categories) are placed by value, others evenly in sorted order.
    """
    present = values.dropna()
    label = title
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        low, high = float(present.min()), float(present.max())
        log = low > 0 and high / low > 100
        scale = math.log10 if log else float
        span = scale(high) - scale(low)
        label = f"{title} (log)" if log else title

        def position(value: Any) -> float:
            return 0.5 if span == 0 else (scale(float(value)) - scale(low)) / span

        middle = 10 ** ((scale(low) + scale(high)) / 2) if log else (low + high) / 2
        ticks = [(position(v), f"{v:.3g}") for v in ([low, middle, high] if span else [low])]
        texts = [f"{float(v):.4g}" for v in values.fillna(0)]
    else:
        codes = sorted({str(v) for v in present})

        def position(value: Any) -> float:
            return 0.5 if len(codes) == 1 else codes.index(str(value)) / (len(codes) - 1)

        step = max(1, math.ceil(len(codes) / max_ticks))
        ticks = [(position(code), code) for code in codes[::step]]
        texts = [str(v) for v in values]
    missing = [_missing(v) for v in values]
    return {
        "label": _wrap(label.replace("_", " ")),
        "positions": [_NA if gone else round(position(v), 5) for v, gone in zip(values, missing)],
        "texts": [_label(f"{title} {'n/a' if gone else text}") for text, gone in zip(texts, missing)],
        "ticks": [(round(p, 5), _label(t)) for p, t in ticks] + ([(_NA, "n/a")] if any(missing) else []),
        "missing": any(missing),
    }


def _wrap(text: str, width: int = 12) -> str:
    """Escape ``text`` and break it into lines of about ``width`` characters at spaces."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(_label(line) for line in lines)


def _missing(value: Any) -> bool:
    return value is None or bool(pd.isna(value))


def _label(text: Any) -> str:
    """Escape a data string so plotly.js shows it literally instead of as markup."""
    return html.escape(str(text), quote=False)
