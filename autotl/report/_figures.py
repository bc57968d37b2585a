"""Plotly figures (and the trials table) drawn from the records in ``_records``.

Each function takes DataFrames, not the study, and returns None when there is
nothing to draw, so the page can say so in one line instead of showing an empty
plot. Plotly.js reads most labels (trace names, hover text, axis ticks and titles) as
a small subset of HTML (``<b>``, ``<br>``, entities), so every such label that comes
from data goes through ``_label`` and shows up literally; parcoords tick text is the
exception (plotly.js 4.1 sets it as plain text), so it is passed through unchanged.
"""

from __future__ import annotations

import html
import math
import numbers
from typing import Any

import pandas as pd
import plotly.graph_objects as go

_STATE_COLORS = {"complete": "#1f77b4", "pruned": "#999999", "fail": "#d62728", "running": "#2ca02c"}
_STATE_DASH = {"complete": "solid", "pruned": "dash", "fail": "dot", "running": "solid"}
_HEIGHT = 420
_TEMPLATE = "plotly_white"


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
                line={"shape": "hv", "color": "#ff7f0e", "width": 2},
                name="best so far",
                hovertemplate="after trial %{x}<br>best %{y:.4f}<extra></extra>",
            )
        )
    fig.update_layout(
        xaxis_title="trial",
        yaxis_title="score",
        height=_HEIGHT,
        margin={"t": 30},
        template=_TEMPLATE,
    )
    return fig


def curves_figure(curves: pd.DataFrame, best_trial: int | None = None) -> go.Figure | None:
    """Validation accuracy per epoch, one line per trial.

    Pruned trials are dashed with an 'x' where they stopped; failed trials are
    dotted; the best trial is drawn thick.
    """
    curves = curves[curves["val_accuracy"].notna()]
    if curves.empty:
        return None
    fig = go.Figure()
    for trial, group in curves.groupby("trial", sort=True):
        trial = int(trial)
        state = str(group["state"].iloc[0])
        is_best = best_trial is not None and trial == best_trial
        name = f"trial {trial}"
        if is_best or state != "complete":
            name += " (best)" if is_best else f" ({state})"
        color = "#ff7f0e" if is_best else _STATE_COLORS.get(state, "#7f7f7f")
        epochs = group["epoch"].astype(int).tolist()
        accuracy = group["val_accuracy"].tolist()
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=accuracy,
                mode="lines+markers",
                name=name,
                legendgroup=str(trial),
                line={
                    "color": color,
                    "width": 4 if is_best else 1.5,
                    "dash": _STATE_DASH.get(state, "solid"),
                },
                marker={"size": 4, "color": color},
                opacity=1.0 if is_best or state == "complete" else 0.7,
                hovertemplate=name + "<br>epoch %{x}<br>val accuracy %{y:.4f}<extra></extra>",
            )
        )
        if state == "pruned":
            fig.add_trace(
                go.Scatter(
                    x=epochs[-1:],
                    y=accuracy[-1:],
                    mode="markers",
                    legendgroup=str(trial),
                    showlegend=False,
                    marker={"symbol": "x", "size": 11, "color": color},
                    hovertemplate=name + "<br>pruned after epoch %{x}<extra></extra>",
                )
            )
    fig.update_layout(
        xaxis_title="epoch",
        yaxis_title="validation accuracy",
        height=_HEIGHT,
        margin={"t": 30},
        template=_TEMPLATE,
    )
    return fig


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
    fig.update_layout(
        xaxis_title="importance (share of explained score variation)",
        height=max(240, 40 + 28 * len(ordered)),
        margin={"t": 30, "l": 160},
        template=_TEMPLATE,
    )
    return fig


def parallel_figure(trials: pd.DataFrame) -> go.Figure | None:
    """Parallel coordinates over the params and score of complete trials.

    Categorical params become integer codes labelled with their values; numeric
    params spanning more than two decades are drawn as log10; a param missing from
    some trials (conditional) gets an "n/a" position below its range.
    """
    complete = trials[(trials["state"] == "complete") & trials["value"].notna()]
    if complete.empty:
        return None
    dimensions = []
    for column in [c for c in complete.columns if c.startswith("param_")]:
        values = complete[column]
        if values.isna().all():
            continue
        dimensions.append(_dimension(column[len("param_"):], values))
    scores = complete["value"].astype(float)
    dimensions.append({"label": "score", "values": scores.tolist()})
    fig = go.Figure(
        go.Parcoords(
            line={"color": scores.tolist(), "colorscale": "Viridis", "showscale": True},
            dimensions=dimensions,
        )
    )
    fig.update_layout(height=_HEIGHT + 40, margin={"t": 60, "l": 60, "r": 60}, template=_TEMPLATE)
    return fig


def trials_table(trials: pd.DataFrame) -> str:
    """All trials as a small HTML <table>; every cell is escaped."""
    if trials.empty:
        return "<p>No trials.</p>"
    columns = [c for c in trials.columns if trials[c].notna().any()]
    if "param_backbone" in columns and trials["param_backbone"].equals(trials["backbone"]):
        columns.remove("param_backbone")  # the trainer copies it into the backbone column
    head = "".join(f"<th>{html.escape(_header(c))}</th>" for c in columns)
    body = []
    for _, row in trials.iterrows():
        cells = "".join(f"<td>{html.escape(_cell(row[c]))}</td>" for c in columns)
        state = html.escape(str(row["state"]), quote=True)
        body.append(f'<tr class="{state}">{cells}</tr>')
    return (
        '<table class="trials">\n<thead><tr>'
        + head
        + "</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + "\n</tbody>\n</table>"
    )


def _dimension(name: str, values: pd.Series) -> dict[str, Any]:
    """One Parcoords axis for a param column."""
    present = values.dropna()
    numeric = pd.to_numeric(present, errors="coerce")
    is_numeric = numeric.notna().all() and not any(isinstance(v, bool) for v in present)
    if not is_numeric:
        codes = sorted({str(v) for v in present})
        lookup = {text: code for code, text in enumerate(codes)}
        mapped = [lookup[str(v)] if not _missing(v) else -1 for v in values]
        ticktext = list(codes)  # parcoords tick text is drawn literally, not as markup
        tickvals = list(range(len(codes)))
        if any(_missing(v) for v in values):
            tickvals, ticktext = [-1] + tickvals, ["n/a"] + ticktext
        return {"label": _label(name), "values": mapped, "tickvals": tickvals, "ticktext": ticktext}

    axis_values = pd.to_numeric(values, errors="coerce").astype(float)
    label = name
    low, high = numeric.min(), numeric.max()
    if low > 0 and high / low > 100:
        axis_values = axis_values.map(math.log10)
        label = f"log10({name})"
    dimension: dict[str, Any] = {"label": _label(label)}
    if axis_values.isna().any():
        low, high = axis_values.min(), axis_values.max()
        spread = (high - low) or 1.0
        missing_at = low - 0.2 * spread
        axis_values = axis_values.fillna(missing_at)
        dimension["tickvals"] = [missing_at, low, high] if high != low else [missing_at, low]
        dimension["ticktext"] = ["n/a"] + [f"{v:.3g}" for v in dimension["tickvals"][1:]]
    dimension["values"] = axis_values.tolist()
    return dimension


def _missing(value: Any) -> bool:
    return value is None or bool(pd.isna(value))


def _label(text: Any) -> str:
    """Escape a data string so plotly.js shows it literally instead of as markup."""
    return html.escape(str(text), quote=False)


def _header(column: str) -> str:
    return column[len("param_"):] if column.startswith("param_") else column.replace("_", " ")


def _cell(value: Any) -> str:
    """Short text for one table cell: blanks for missing, 4 significant digits for floats."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, numbers.Real):
        return "" if math.isnan(value) else f"{float(value):.4g}"
    return str(value)
