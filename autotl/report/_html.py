"""Assemble the records and figures into one self-contained HTML page.

The page works offline: plotly.js is embedded once in <head> and every figure is
a <div> plus a small script that draws into it; tables and the image gallery are
plain HTML, and a few lines of vanilla JS sort a table when a header is clicked.
Strings that come from the user or the data (paths, class names, params, errors)
are escaped with ``html.escape`` before they go into markup. Figure data is safe
inside its <script> because Plotly's JSON encoder (plotly/io/_json.py, ``_safe``)
writes ``<``, ``>`` and ``/`` as ``\\u003c``, ``\\u003e`` and ``\\u002f``, so no
``</script>`` can appear in it; ``tests/test_report.py`` checks this still holds.
The page is a function of the storage alone: no clock, no file system, no randomness.
"""

from __future__ import annotations

import html
import math
import numbers
import os
import pathlib
import tempfile
from dataclasses import fields
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from autotl.records import METRICS, DatasetInfo, TrialRecord
from autotl.report import _figures, _records

_CONFIG = {"displaylogo": False, "responsive": True}
_MAX_CLASSES_SHOWN = 40
_MAX_RECALLS_SHOWN = 10  # the summary's per-class recall: the lowest ones beyond this many classes
# What each metric a search can score by (--metric) measures, for the summary's first line.
_METRIC_MEANINGS = {
    "accuracy": "the share of validation images classified right",
    "macro_f1": "the mean F1 score over the classes, so every class counts the same however many images it has",
    "balanced_accuracy": "the mean recall over the classes, so every class counts the same however many images it has",
}
_MAX_ERROR_IN_TABLE = 120
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.3rem; margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05rem; margin: 1.6rem 0 0.2rem; }
p.caption { color: #444; margin-top: 0; } p.sub { color: #666; margin: 0 0 0.3rem; font-size: 0.9rem; }
p.note { font-style: italic; color: #777; } p.lead { color: #666; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top; }
table.summary th { background: #f5f5f5; white-space: nowrap; }
table.sortable { display: block; overflow: auto; max-height: 40rem; }
table.sortable th { background: #f5f5f5; position: sticky; top: 0; cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
strong.never { color: #b00; }
tr.pruned { color: #777; } tr.fail { color: #b00; } tr.best { background: #fff3e0; font-weight: 600; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.6rem; }
.gallery figure { margin: 0; width: 104px; font-size: 0.75rem; text-align: center; overflow-wrap: anywhere; }
.gallery img, .gallery .missing { width: 96px; height: 96px; image-rendering: pixelated; border: 1px solid #ccc; }
.gallery .missing { display: inline-block; background: #eee; }
ul.errors pre { white-space: pre-wrap; margin: 0.2rem 0 0.8rem; background: #fbeaea; padding: 0.4rem; }
.plotly-graph-div { margin-bottom: 0.5rem; }
"""
# Click a header of a table.sortable to sort by it (again to reverse); blanks stay last.
_SORT_JS = """
(function () {
  function key(cell) { var v = cell.getAttribute('data-v'); return v === null ? cell.textContent.trim() : v; }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.title = 'click to sort';
      th.addEventListener('click', function () {
        var col = th.cellIndex, body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
        Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (x === '' || y === '') { return (x === '') - (y === ''); }
          var nx = Number(x), ny = Number(y);
          return dir * (isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
"""
# Marks <body data-plots="N" data-plots-drawn="M" data-drawn-ms="T"> once Plotly has drawn (T ms
# after navigation began), for the browser test and anyone curious.
_DRAWN_JS = """
window.addEventListener('load', function () {
  var divs = document.querySelectorAll('.plotly-graph-div'), tries = 0;
  document.body.dataset.plots = divs.length;
  (function check() {
    var drawn = 0;
    divs.forEach(function (div) { if (div.querySelector('svg.main-svg')) { drawn += 1; } });
    document.body.dataset.plotsDrawn = drawn;
    if (drawn === divs.length) { document.body.dataset.drawnMs = Math.round(performance.now()); }
    else if (++tries < 100) { setTimeout(check, 100); }
  })();
});
"""


def write(study: optuna.Study, path: str | os.PathLike[str]) -> pathlib.Path:
    """Write the report for ``study`` to ``path`` and return the path.

    Atomic, and safe when several workers of one study write it at once: each writes
    its own temporary file and renames it over the page, so a reader (or a browser
    reloading it) only ever sees a whole page.
    """
    path = pathlib.Path(path)
    page = render(study)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # a path from a file system that is not UTF-8 (surrogate escapes) shows as \udcXX, never a crash
        with os.fdopen(handle, "w", encoding="utf-8", errors="backslashreplace") as file:
            file.write(page)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def render(study: optuna.Study) -> str:
    """The whole report page as one HTML string."""
    info = _records.summary(study)
    trials = _records.trial_records(study)
    configs = _records.config_records(study)
    pareto = _records.pareto_records(study)
    best = _records.best_model_records(study)
    metric = info["metric"]
    title = f"autotl report: {(info['record'].dataset or DatasetInfo()).path or info['study_name']}"
    sections = [
        _summary_section(info, pareto, best),
        _pareto_section(pareto, metric) if info["objectives"] else None,
        _history_section(trials, _records.time_records(study), info),
        _curves_section(_records.curve_records(study), info),
        _slices_section(_records.slice_records(study), metric),
        _mattered_section(study, trials, configs, info),
        _strategies_section(_records.strategy_records(study), info["best_trial"], metric),
        _best_model_section(best, info),
        _ensemble_section(info["record"].ensemble),
        _section(
            "trials",
            "All trials",
            f"Every trial with its state, score (validation {_records.metric_title(metric)}), validation loss "
            "(it breaks near-ties for the best), cost and parameters; click a column header to sort, and see the "
            "errors of failed trials below the table.",
            _trials_table(trials, info["best_trial"], _front(pareto) if info["objectives"] else None),
            _errors(trials),
        ),
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_STYLE}</style>",
            "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>",
            f'<script charset="utf-8">{get_plotlyjs()}</script>',
            "</head>",
            "<body>",
            f"<h1>{html.escape(title)}</h1>",
            f'<p class="lead">Study {html.escape(info["study_name"])!s}; built from its storage alone '
            "(rebuild it with <code>autotl report RUN_DIR</code>).</p>",
            *_numbered(sections),
            f"<script>{_SORT_JS}</script>",
            f"<script>{_DRAWN_JS}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )


def _history_section(trials: pd.DataFrame, times: pd.DataFrame, info: dict[str, Any]) -> tuple[str, str, str, str]:
    """Each trial's score in order, and the best score against wall time."""
    return _section(
        "history",
        "Optimization history",
        "Is the search still finding better recipes? A best-so-far line that has gone flat "
        "says more trials (or another hour) would likely buy little.",
        _figure_block(
            "Score of each trial, in the order they ran",
            "Markers are trials (x = pruned, at its last reported score); the orange step "
            "line is the best complete score so far.",
            _figures.history_figure(trials, info["direction"]),
            "history",
            "No trial has a score yet.",
        ),
        _figure_block(
            "Best score against wall time",
            _time_note(times),
            _figures.time_figure(times),
            "time",
            "No trial has completed yet.",
        ),
    )


def _curves_section(curves: pd.DataFrame, info: dict[str, Any]) -> tuple[str, str, str, str]:
    """Every trial's validation score (the study's metric) per report."""
    title = _records.metric_title(info["metric"])
    return _section(
        "curves",
        "Learning curves",
        f"Validation {title} at each report of every trial (a report every few thousand training images, or "
        "each epoch): dashed grey lines were pruned (red x where they stopped), dotted lines failed, the thick "
        "orange line is the best trial; curves still rising at the end suggest more epochs would help.",
        _figure_or_note(
            _figures.curves_figure(curves, info["best_trial"], info["metric"]),
            "curves",
            f"No trial has reported a validation {title} yet.",
        ),
    )


def _slices_section(slices: pd.DataFrame, metric: str) -> tuple[str, str, str, str] | None:
    """How the scheduler spent the time: each slice, why it went where it did, and each recipe's share."""
    if slices.empty:
        return None
    seconds = slices.groupby("label", dropna=False)["seconds"].sum().sort_values(ascending=False)
    total = max(float(seconds.sum()), 1e-9)
    shares = "; ".join(
        f"{label if isinstance(label, str) else '?'} {100 * v / total:.0f}%" for label, v in seconds.items()
    )
    columns = [
        ("start", "start (s)"),
        ("trial", "trial"),
        ("label", "recipe"),
        ("action", "slice"),
        ("after_report", "after report"),
        ("predicted", "predicted best"),
        ("predicted_std", "±"),
        ("horizon", "by report"),
        ("reached", "reached"),
        ("gain_per_second", "gain per s"),
        ("seconds", "time (s)"),
        ("why", "why"),
    ]
    rows = [[_cell(row[c]) for c, _ in columns] for _, row in slices.iterrows()]
    keys = [
        [_sort_key(row[c]) if c not in ("label", "action", "why") else None for c, _ in columns]
        for _, row in slices.iterrows()
    ]
    return _section(
        "slices",
        "How the time was spent",
        "Trials train a slice (one report) at a time and wait in between; after each slice the scheduler gives "
        f"the next to the trial whose predicted best validation {_records.metric_title(metric)} (with the time "
        "left) improves most on the best so far per second of training, or starts a new recipe, and ends the best "
        "trial with a short cool-down of its learning rate before the time is up (where no cool-down fits, at its "
        "best report). 'Predicted best' is what the "
        "learning-curve model expected when the slice began; 'reached' is the trial's best by the end.",
        f'<p class="sub">Share of the slices\' time by recipe: {html.escape(shares)}.</p>',
        _figure_block(
            "Slices over time",
            "One bar per slice; hover for the scheduler's reason.",
            _figures.slices_figure(slices),
            "slices",
            "No slice has run yet.",
        ),
        _table([h for _, h in columns], rows, sort_keys=keys),
    )


def _mattered_section(
    study: optuna.Study, trials: pd.DataFrame, configs: pd.DataFrame, info: dict[str, Any]
) -> tuple[str, str, str, str]:
    """Importances, parallel coordinates, score against each recipe setting, backbones and their ranking."""
    importances, why_no_importances = _records.param_importances(study)
    return _section(
        "mattered",
        "What mattered",
        "Which choices moved the score: the longest importance bar first, then how the score "
        "changes with each setting and with each backbone (complete trials only).",
        _figure_block(
            "Parameter importances",
            "Share of the score's variation across complete trials that each sampled "
            "parameter explains (fANOVA); conditional parameters are left out.",
            _figures.importance_figure(importances),
            "importance",
            f"No parameter importances: {why_no_importances}",
        ),
        _figure_block(
            "Parallel coordinates",
            "One line per complete trial, coloured by score (the best one orange); follow the "
            "bright lines to see which values the best trials share.",
            _figures.parallel_figure(_records.parallel_records(trials, configs), info["best_trial"]),
            "parallel",
            "No trial has completed yet.",
        ),
        _figure_block(
            "Score against the recipe",
            "Each point is a complete trial; the orange star is the best one. A cloud that "
            "rises to one side shows the direction to search next. Settings a trial's strategy "
            "does not use are left out, as are settings every complete trial shares.",
            _figures.recipe_figure(configs, info["best_trial"]),
            "recipe",
            "No two complete trials that stored their recipe differ in a setting yet.",
        ),
        _figure_block(
            "Backbones",
            "Score and cost of each backbone: a slightly lower score at a fraction of the "
            "seconds per trial may be the better deal.",
            _figures.backbone_figure(configs, _records.backbone_records(configs)),
            "backbones",
            "No trial stored its backbone.",
        ),
        _ranking_block(_records.ranking_settings(study), _records.ranking_records(study), info["metric"]),
    )


def figure_html(fig: go.Figure, div_id: str) -> str:
    """One figure as a <div> and its drawing script, without plotly.js itself."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=_CONFIG)


def _figure_or_note(fig: go.Figure | None, div_id: str, note: str) -> str:
    if fig is None:
        return f'<p class="note">{html.escape(note)}</p>'
    return figure_html(fig, "figure-" + div_id)


def _figure_block(title: str, caption: str, fig: go.Figure | None, div_id: str, note: str) -> str:
    """A titled sub-part of a section: heading, one-line caption, then the figure or a note."""
    return f'<h3>{html.escape(title)}</h3>\n<p class="sub">{html.escape(caption)}</p>\n' + _figure_or_note(
        fig, div_id, note
    )


def _section(section_id: str, title: str, caption: str, *body: str | None) -> tuple[str, str, str, str]:
    """One section's id, title, caption and body, for ``_numbered``; body parts that do not apply are None."""
    return section_id, title, caption, "\n".join(part for part in body if part is not None)


def _numbered(sections: list[tuple[str, str, str, str] | None]) -> list[str]:
    """The sections as HTML, numbered in order (a section that does not apply is None)."""
    shown = [section for section in sections if section is not None]
    return [
        f'<section id="{section_id}">\n<h2>{html.escape(f"{number}. {title}")}</h2>\n'
        f'<p class="caption">{html.escape(caption)}</p>\n{body}\n</section>'
        for number, (section_id, title, caption, body) in enumerate(shown, start=1)
    ]


class _Html(str):
    """Markup built from escaped parts, which a summary row puts in as it is."""


def _summary_section(
    info: dict[str, Any], pareto: pd.DataFrame, best: dict[str, Any] | None
) -> tuple[str, str, str, str]:
    """What the search scored by, the best score and the exported model's recall per class first; then
    dataset, run settings, the best recipe in words and where the model is."""
    record = info["record"]
    dataset = record.dataset or DatasetInfo()
    counts = (("train", dataset.n_train), ("validation", dataset.n_val), ("test", dataset.n_test))
    images = ", ".join(f"{split} {_text(count)}" for split, count in counts)
    if dataset.skipped:
        images += f" ({dataset.skipped} unreadable files skipped)"
    timeout = _duration(record.timeout) if record.timeout is not None else "none"
    best_score = _best_score(info)
    if info["best_trial"] is None:
        recipe = "none yet"
    elif info["best_words"]:
        recipe = info["best_words"]
    else:
        recipe = ", ".join(f"{name} {_text(value)}" for name, value in info["best_params"].items())
    model = info["model_dir"]
    if model is None:
        where = "not exported yet"
    else:
        where = f"{model}/ in the run directory"
        if info["model_trial"] is not None:
            where += f' (trial {info["model_trial"]}); load it with autotl.load_model("RUN_DIR/{model}")'
    metric = info["metric"]
    recalls = best["per_class"].dropna(subset=["cls", "recall"]) if best is not None else pd.DataFrame()
    rows = [
        ("Scored by", f"{_records.metric_title(metric)} (--metric {metric}): {_METRIC_MEANINGS.get(metric, '')}"),
        ("Best score", best_score),
        *([("Objectives", _objectives_text(info, pareto))] if info["objectives"] else []),
        *([("Per-class recall", _recalls(recalls, best["confusion"]))] if not recalls.empty else []),
        ("Dataset", _text(dataset.path)),
        ("Classes", _classes(dataset.classes)),
        ("Images per split", images),
        ("Device", _text(record.device)),
        (
            "Budget",
            f"{_text(record.n_trials)} trials, timeout {timeout}, "
            f"up to {_text(record.max_epochs)} epochs per trial; search space {_text(record.space)}",
        ),
        ("Wall time", _wall_time(info)),
        (
            "Trials",
            f"{info['complete']} completed, {info['pruned']} pruned, {info['failed']} failed"
            + (f", {info['running']} running" if info["running"] else "")
            + (f", {info['waiting']} queued and not started" if info["waiting"] else "")
            + f" ({info['n_trials']} in total)",
        ),
        ("Best configuration", recipe),
        ("Exported model", where),
        *([("Ensemble", _ensemble_verdict(record.ensemble))] if record.ensemble else []),
    ]
    body = "\n".join(
        f"<tr><th>{html.escape(name)}</th><td>{value if isinstance(value, _Html) else html.escape(value)}</td></tr>"
        for name, value in rows
    )
    params = ""
    if info["best_params"]:
        cells = "\n".join(
            f"<tr><th>{html.escape(str(name))}</th><td>{html.escape(_text(value))}</td></tr>"
            for name, value in info["best_params"].items()
        )
        params = (
            "<details><summary>Optuna parameters of the best trial</summary>\n"
            f'<table class="summary">\n{cells}\n</table>\n</details>'
        )
    return _section(
        "summary",
        "Summary",
        "What the search scored its trials by and what won, with the exported model's recall per class "
        "(a class it never gets right stands out); then what was searched, on which data and hardware, "
        "the best recipe in words and where its exported model is.",
        f'<table class="summary">\n{body}\n</table>',
        params,
    )


def _recalls(per_class: pd.DataFrame, confusion: pd.DataFrame | None) -> _Html:
    """'cat 0.91, dog 0.00 (never predicted), ...': each class's recall, a class never right in bold red.

    'never predicted' when the confusion matrix shows no image predicted as it, else
    'never right'. Beyond ``_MAX_RECALLS_SHOWN`` classes, only the lowest, saying so.
    """
    shown = per_class
    if len(per_class) > _MAX_RECALLS_SHOWN:
        shown = per_class.sort_values("recall", kind="stable").head(_MAX_RECALLS_SHOWN)
    predicted = confusion.sum(axis=0) if confusion is not None else pd.Series(dtype="int64")
    parts = []
    for name, recall in zip(shown["cls"], shown["recall"]):
        text = html.escape(f"{name} {recall:.2f}")
        if recall == 0:
            why = "never predicted" if predicted.get(name) == 0 else "never right"
            text = f'<strong class="never">{text} ({why})</strong>'
        parts.append(text)
    if len(shown) == len(per_class):
        return _Html(", ".join(parts))
    never = int((per_class["recall"] == 0).sum())
    also = f"; {never} classes are never right" if never > len(shown) else ""
    return _Html(f"lowest {len(shown)} of {len(per_class)} classes: " + ", ".join(parts) + also)


def _ensemble_verdict(chosen) -> str:
    """The summary's line on the ensemble: which is better, by how much on the held-back images, at what latency."""
    where = "written to ensemble_model/" if chosen.written else "not written (it does not beat the best model)"
    latency = (
        f"; {chosen.latency_ms:.3g} ms an image against {chosen.single_latency_ms:.3g}"
        if chosen.latency_ms is not None and chosen.single_latency_ms is not None
        else ""
    )
    return (
        f"{len(chosen.members)} models, {where}: {_records.metric_title(chosen.metric)} "
        f"{_text(chosen.ensemble_held_back)} against {_text(chosen.single_held_back)} for trial {chosen.single_trial} alone on {_text(chosen.held_back)} "
        f"held-back validation images{latency}"
    )


def _ensemble_section(chosen) -> tuple[str, str, str, str] | None:
    """The greedy ensemble: members and weights, the selection curve, and the check against the best model."""
    if chosen is None:
        return None
    rows = "\n".join(
        f"<tr><td>{trial}</td><td>{weight:.3g}</td></tr>" for trial, weight in zip(chosen.members, chosen.weights)
    )
    fig = go.Figure(
        go.Scatter(
            x=list(range(1, len(chosen.selection_curve) + 1)),
            y=chosen.selection_curve,
            mode="lines+markers",
            name="ensemble",
        )
    )
    fig.update_layout(
        xaxis_title="members added (with replacement)",
        yaxis_title=f"{_records.metric_title(chosen.metric)} on the {chosen.selected_on} selection images",
        height=320,
        margin=dict(l=60, r=20, t=20, b=50),
    )
    return _section(
        "ensemble",
        "Ensemble of the best trials",
        "Greedy ensemble selection with replacement (Caruana et al., 2004) over the kept trials' validation "
        "probabilities, on one half of the validation images; the other half decides whether the ensemble is "
        "written. Its latency is the sum of its members'.",
        f"<p>{html.escape(_ensemble_verdict(chosen))}.</p>",
        f'<table class="summary">\n<tr><th>trial</th><th>weight</th></tr>\n{rows}\n</table>',
        _figure_block(
            "Selection curve",
            f"The {_records.metric_title(chosen.metric)} on the selection half as members are added; the ensemble "
            "is taken at its best round.",
            fig,
            "ensemble-curve",
            "",
        ),
    )


def _best_score(info: dict[str, Any]) -> str:
    """'0.93 validation macro-F1 (trial 7; accuracy 0.95, val-loss 0.21, at report 3)': the score by the
    study's metric, then the kept weights' other metrics."""
    if info["best_trial"] is None:
        return "no trial completed yet"
    value, metrics, metric = info["best_value"], info["best_metrics"], info["metric"]
    title = _records.metric_title(metric)
    others = [(_records.metric_title(name), getattr(metrics, name)) for name in METRICS if name != metric]
    details = [
        f"{name} {_text(number)}"
        for name, number in (*others, ("val-loss", metrics.loss), ("at report", info["best_report"]))
        if number is not None
    ]
    stored = getattr(metrics, metric)
    scored = stored is not None and value is not None and abs(stored - value) < 1e-9
    what = f" validation {title}" if scored or info["objectives"] else ""
    if info["objectives"]:  # several objectives: the best is the best-scoring trial
        details = [
            f"{objective['name']} {_text(objective['best_value'])}{_unit(objective['name'])}"
            for objective in info["objectives"]
            if not objective["score"]
        ] + details
    detail = "; " + ", ".join(details) if details else ""
    best = f"{_text(value)}{what} (trial {info['best_trial']}{detail})"
    if not info["objectives"]:
        return best
    return best + (
        ", the most accurate complete trial" if metric == "accuracy" else f", the best {title} of the complete trials"
    )


def _objectives_text(info: dict[str, Any], pareto: pd.DataFrame) -> str:
    """'maximize accuracy, minimize latency; 3 of 7 complete trials on the Pareto front'."""
    goals = ", ".join(f"{objective['direction']} {objective['name']}" for objective in info["objectives"])
    front = int(pareto["on_front"].sum())
    return (
        f"{goals}; {front} of {len(pareto)} complete trial{'s' if len(pareto) != 1 else ''} on the "
        "Pareto front (section 2)"
    )


def _unit(name: str) -> str:
    return " ms" if name == "latency" else ""


def _front(pareto: pd.DataFrame) -> set[int]:
    """The numbers of the trials on the Pareto front."""
    return {int(number) for number in pareto.loc[pareto["on_front"], "number"]}


def _pareto_section(pareto: pd.DataFrame, metric: str) -> tuple[str, str, str, str]:
    """Score (the study's metric) against latency of every complete trial, the front drawn and listed (two
    objectives only)."""
    title = _records.metric_title(metric)
    front = pareto[pareto["on_front"]].sort_values(["latency_ms", "score", "number"], kind="stable")
    if front.empty:
        table = '<p class="note">No trial has completed yet.</p>'
    else:
        columns = [
            ("number", "trial"),
            ("backbone", "backbone"),
            ("score", f"validation {title}"),
            ("latency_ms", "PyTorch latency (ms, batch 1)"),
            ("train_seconds", "train time (s)"),
            ("model_mb", "size (MB)"),
            ("warm_start", "warm start"),
        ]
        always = ("number", "score", "latency_ms")
        columns = [(c, h) for c, h in columns if c in always or front[c].notna().any()]
        table = _table(
            [h for _, h in columns],
            [[_cell(row[c]) for c, _ in columns] for _, row in front.iterrows()],
            sort_keys=[[_sort_key(row[c]) for c, _ in columns] for _, row in front.iterrows()],
        )
    return _section(
        "pareto",
        f"Pareto front: {title} against latency",
        f"This search weighed validation {title} against inference latency, so there is no single "
        f"winner: each orange trial has the best {title} at its latency (no other trial both scores "
        "higher and is faster). Pick the fastest one that scores well enough.",
        _figure_block(
            f"Validation {title} against latency",
            "Every complete trial; the front trials are orange, labelled with their number and joined "
            "by a step line, and everything below and right of that line is beaten by one of them.",
            _figures.pareto_figure(pareto, metric),
            "pareto",
            "No trial has completed yet.",
        ),
        "<h3>Trials on the front</h3>\n"
        '<p class="sub">Fastest first; each scores higher than every faster trial.</p>\n' + table,
    )


def _strategies_section(
    strategies: pd.DataFrame, best_trial: int | None, metric: str
) -> tuple[str, str, str, str] | None:
    """Per fine-tuning strategy: trials, best score, training cost and share of parameters trained.

    The figure only when there are several strategies to compare; one strategy is one row.
    None when no trial says what it trained (a study from before strategies, without recipes).
    """
    if strategies.empty:
        return None
    caption = (
        "A strategy is which parameters a trial trains (all, a frozen prefix, the head alone, "
        "LoRA adapters, ...); cost is training seconds, and the share trained shows how light each is."
    )
    columns = [
        ("strategy", "strategy"),
        ("trials", "trials"),
        ("complete", "complete"),
        ("pruned", "pruned"),
        ("failed", "failed"),
        ("best", f"best {_records.metric_title(metric)}"),
        ("best_trial", "best trial"),
        ("median_train_seconds", "median train time (s)"),
        ("train_seconds", "total train time (s)"),
        ("share_trained", "share of params trained"),
    ]
    rows, keys, classes = [], [], []
    for _, row in strategies.iterrows():
        cells = [_cell(row[c]) for c, _ in columns]
        cells[-1] = "" if pd.isna(row["share_trained"]) else _figures.share_text(row["share_trained"])
        rows.append(cells)
        keys.append([_sort_key(row[c]) for c, _ in columns])
        best = best_trial is not None and not pd.isna(row["best_trial"]) and int(row["best_trial"]) == best_trial
        classes.append("best" if best else "")
    table = _table([h for _, h in columns], rows, sort_keys=keys, row_classes=classes)
    if len(strategies) == 1:
        only = f"Every trial used one strategy, {strategies['strategy'].iloc[0]}."
        return _section("strategies", "Strategies", caption, f'<p class="sub">{html.escape(only)}</p>', table)
    return _section(
        "strategies",
        "Strategies",
        caption,
        table,
        _figure_block(
            "Best score against training cost",
            "One marker per strategy: higher scores better, further left is cheaper to train; "
            "hover for the share of parameters it trains.",
            _figures.strategy_figure(strategies, metric),
            "strategies",
            "No strategy has a complete trial with its training time yet.",
        ),
    )


def _ranking_block(settings: dict[str, Any] | None, ranking: pd.DataFrame, metric: str) -> str | None:
    """The LogME ranking made before training, next to each backbone's result in the search.

    None when the search did not rank its backbones (older searches, or ranking turned off).
    """
    if settings is None:
        return None
    method, title = settings["method"], _records.metric_title(metric)
    scale = settings["resolution_scale"]
    at = f" at {_text(scale)} of their resolution" if scale is not None else ""
    took = (
        f"The ranking took {_duration(settings['seconds'])}"
        if settings["seconds"] is not None
        else "The ranking took an unrecorded time"
    )
    caption = (
        f"{took} on {_text(settings['images'])} training images{at}, before any training: "
        f"{method} scores how well each pretrained backbone's frozen features separate the classes "
        "(higher = predicted to fine-tune better). Rank 1 is the predicted best; the last three "
        "columns are what the search then found."
    )
    if settings["dropped"]:
        margin = settings["margin"]
        below = f" (more than {_text(margin)} below the best score)" if margin is not None else ""
        were = "s were" if settings["dropped"] != 1 else " was"
        caption += f" {settings['dropped']} backbone{were} dropped from the search{below}."
    if ranking.empty:
        return (
            f"<h3>{html.escape(f'Backbone ranking before training ({method})')}</h3>\n"
            f'<p class="sub">{html.escape(caption)}</p>\n<p class="note">No backbone scores stored.</p>'
        )
    best = ranking[ranking["best"].notna()]
    winner = best.loc[best["best"].idxmax(), "backbone"] if not best.empty else None
    rows, classes, keys = [], [], []
    for _, row in ranking.iterrows():
        values = [
            row["rank"],
            row["backbone"],
            row["logme"],
            row["seconds"],
            "yes" if row["dropped"] else "no",
            row["trials"],
            row["complete"],
            row["best"],
        ]
        rows.append([_cell(v) for v in values])
        keys.append([_sort_key(v) for v in values])
        classes.append("best" if row["backbone"] == winner else "")
    table = _table(
        ["rank", "backbone", f"{method} score", "seconds to score", "dropped", "trials", "complete", f"best {title}"],
        rows,
        sort_keys=keys,
        row_classes=classes,
    )
    return "\n".join(
        [
            f"<h3>{html.escape(f'Backbone ranking before training ({method})')}</h3>",
            f'<p class="sub">{html.escape(caption)}</p>',
            table,
            f'<p class="sub">{html.escape(_ranking_verdict(ranking, winner, title))}</p>',
            _figure_or_note(
                _figures.ranking_figure(ranking, metric),
                "ranking",
                "No ranked backbone has a complete trial yet, so the ranking cannot be checked.",
            ),
        ]
    )


def _ranking_verdict(ranking: pd.DataFrame, winner: str | None, title: str) -> str:
    """Whether the ranking predicted the search: where the winner was ranked, and the rank correlation."""
    if winner is None:
        return "No ranked backbone has completed a trial yet."
    top = ranking.iloc[0]
    rank = int(ranking.loc[ranking["backbone"] == winner, "rank"].iloc[0])
    if top["backbone"] == winner:
        text = f"The top-ranked backbone, {winner}, was also the best in the search."
    else:
        text = f"The best backbone in the search, {winner}, was ranked {rank} of {len(ranking)}."
    both = ranking[ranking["best"].notna() & ranking["logme"].notna()]
    if len(both) >= 3:
        rho = both["logme"].astype(float).corr(both["best"].astype(float), method="spearman")
        if not math.isnan(rho):
            text += (
                f" Over the {len(both)} backbones with a complete trial, the rank correlation between "
                f"score and best {title} is {rho:.2f} (1 = the ranking ordered them exactly)."
            )
    return text


def _best_model_section(best: dict[str, Any] | None, info: dict[str, Any]) -> tuple[str, str, str, str]:
    """Confusion matrix, per-class metrics and misclassified thumbnails of the exported model."""
    caption = (
        "Where the exported model still errs on validation images: the off-diagonal cells of the "
        "confusion matrix, the classes with the lowest F1, and the images it got wrong."
    )
    if best is None:
        return _section(
            "best-model",
            "The best model up close",
            caption,
            '<p class="note">No analysis of the best model is stored yet (no trial completed, '
            "or the search did not export one).</p>",
        )
    trial = best["trial"] if best["trial"] is not None else info["best_trial"]
    lead = f"Exported model of trial {_text(trial)}, on {_text(best['n_val'])} validation images."
    per_class = best["per_class"]
    if per_class.empty:
        table = '<p class="note">No per-class metrics stored.</p>'
    else:
        table = _table(
            ["class", "precision", "recall", "F1", "validation images"],
            [[_cell(row[c]) for c in _records.PER_CLASS_COLUMNS] for _, row in per_class.iterrows()],
        )
    return _section(
        "best-model",
        "The best model up close",
        caption,
        f'<p class="sub">{html.escape(lead)}</p>',
        _figure_block(
            "Confusion matrix",
            "Rows are the true class, columns the predicted one; counts in the cells, colour is "
            "the share of the true class, so a perfect model is a dark diagonal.",
            _figures.confusion_figure(best),
            "confusion",
            "No confusion matrix stored.",
        ),
        "<h3>Per-class precision, recall and F1</h3>\n"
        '<p class="sub">Sort by F1 to find the classes that need more (or cleaner) images.</p>\n' + table,
        "<h3>Misclassified validation images</h3>\n"
        '<p class="sub">The most confident mistakes first: look for mislabelled images and '
        "look-alike classes.</p>\n" + _gallery(best["misclassified"]),
    )


def _gallery(items: list[dict[str, Any]]) -> str:
    """Thumbnails with true and predicted labels; only base64 PNG data URIs become images."""
    if not items:
        return '<p class="note">No validation image was misclassified.</p>'
    figures = []
    for item in items:
        thumbnail = item["thumbnail"]
        if thumbnail is not None and _records.safe_thumbnail(thumbnail):
            image = f'<img src="{html.escape(thumbnail, quote=True)}" alt="misclassified image">'
        else:
            image = '<span class="missing" title="no thumbnail stored"></span>'
        probability = item["probability"]
        sure = f" ({probability:.0%})" if probability is not None else ""
        figures.append(
            f"<figure>{image}<figcaption>true: {html.escape(_text(item['true']))}<br>"
            f"predicted: {html.escape(_text(item['predicted']))}{html.escape(sure)}</figcaption></figure>"
        )
    return '<div class="gallery">\n' + "\n".join(figures) + "\n</div>"


def _trials_table(trials: pd.DataFrame, best_trial: int | None, front: set[int] | None = None) -> str:
    """Every trial, sortable: state, score, validation loss, then its record's fields that have a title (best
    report, time, cost, backbone, strategy, end reason, ...), its params and its error.

    A column shows only when some trial has a value in it, so the cost columns of an older
    search stay out; ``front`` (the Pareto front of a multi-objective study) adds a column.
    """
    if trials.empty:
        return '<p class="note">No trials yet.</p>'
    columns = [("number", "trial"), ("state", "state"), ("value", "score"), ("val_loss", "val loss")]
    columns += [(f.name, f.metadata["title"]) for f in fields(TrialRecord) if "title" in f.metadata]
    params = [c for c in trials.columns if c.startswith("param_")]
    if "param_backbone" in params and trials["param_backbone"].astype("string").equals(
        trials["backbone"].astype("string")
    ):
        params.remove("param_backbone")  # the trainer copies it into the backbone column
    if "param_strategy" in params:
        params.remove("param_strategy")  # the strategy column is this param, normalised
    columns += [(c, c[len("param_") :]) for c in params] + [("error", "error")]
    if front is not None:
        trials = trials.assign(front=["yes" if int(n) in front else None for n in trials["number"]])
        columns.insert(3, ("front", "Pareto front"))
    columns = [(c, h) for c, h in columns if trials[c].notna().any()]
    trials = trials.assign(error=trials["error"].map(_shorten, na_action="ignore"))  # whole below the table
    rows, sort_keys, classes = [], [], []
    for _, row in trials.iterrows():
        rows.append([_cell(row[column]) for column, _ in columns])
        sort_keys.append([_sort_key(row[column]) for column, _ in columns])
        best = best_trial is not None and int(row["number"]) == best_trial
        classes.append(str(row["state"]) + (" best" if best else ""))
    return _table([h for _, h in columns], rows, sort_keys=sort_keys, row_classes=classes)


def _shorten(text: str) -> str:
    """Long text (an error) cut to its first characters, to keep the table's rows short."""
    return text if len(text) <= _MAX_ERROR_IN_TABLE else text[: _MAX_ERROR_IN_TABLE - 1] + "\u2026"


def _errors(trials: pd.DataFrame) -> str:
    failed = trials[trials["error"].notna()]
    if failed.empty:
        return ""
    items = "\n".join(
        f"<li>trial {int(row['number'])} ({html.escape(str(row['state']))}):"
        f"<pre>{html.escape(str(row['error']))}</pre></li>"
        for _, row in failed.iterrows()
    )
    return f'<h3>Errors of failed trials</h3>\n<ul class="errors">\n{items}\n</ul>'


def _table(
    headers: list[str],
    rows: list[list[str]],
    sort_keys: list[list[str | None]] | None = None,
    row_classes: list[str] | None = None,
) -> str:
    """A sortable <table>; every header, cell, sort key and row class is escaped here."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for index, cells in enumerate(rows):
        keys = sort_keys[index] if sort_keys else [None] * len(cells)
        tds = []
        for text, key in zip(cells, keys):
            numeric = key is not None or _looks_numeric(text)
            attrs = ' class="num"' if numeric and text else ""
            if key:  # a blank cell sorts by its (empty) text
                attrs += f' data-v="{html.escape(key, quote=True)}"'
            tds.append(f"<td{attrs}>{html.escape(text)}</td>")
        css = row_classes[index] if row_classes else ""
        css = f' class="{html.escape(css, quote=True)}"' if css else ""
        body.append(f"<tr{css}>{''.join(tds)}</tr>")
    return (
        f'<table class="sortable">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(body)
        + "\n</tbody>\n</table>"
    )


def _sort_key(value: Any) -> str | None:
    """A numeric cell's exact value for sorting ('' when missing); None for text cells."""
    if value is None or value is pd.NA or isinstance(value, bool):
        return "" if value is None or value is pd.NA else None
    if isinstance(value, numbers.Real):
        return "" if math.isnan(float(value)) else repr(float(value))
    return None


def _looks_numeric(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def _time_note(times: pd.DataFrame) -> str:
    """The caption of the wall-time plot, with how the best score moved in the run's second half."""
    note = (
        "The step line is the best complete score against wall time; a line still climbing at the "
        "right means more time would likely buy more, a flat one that it would buy little."
    )
    scored = times[times["best_so_far"].notna()]
    if scored.empty:
        return note
    total = float(times["elapsed_seconds"].max())
    final = float(scored["best_so_far"].iloc[-1])
    improved = scored[scored["best_so_far"] != scored["best_so_far"].shift()]
    last = float(improved["elapsed_seconds"].iloc[-1])
    note += f" The best score last improved {_duration(last)} in, of {_duration(total)};"
    before = scored[scored["elapsed_seconds"] <= total / 2]["best_so_far"]
    if before.empty:
        return note + " no trial had completed by half time."
    return note + f" over the second half it went from {float(before.iloc[-1]):.4f} to {final:.4f}."


def _wall_time(info: dict[str, Any]) -> str:
    if info["wall_seconds"] is None:
        return "no trial has finished yet"
    text = f"{_duration(info['wall_seconds'])} from the first trial's start to the last trial's end"
    if info["trial_seconds"] is not None:
        text += f" ({_duration(info['trial_seconds'])} inside trials)"
    if info["first_start"]:
        text += f"; first trial started {info['first_start']}"
    return text


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _classes(classes: list[str]) -> str:
    if not classes:
        return "unknown"
    shown = ", ".join(classes[:_MAX_CLASSES_SHOWN])
    more = len(classes) - _MAX_CLASSES_SHOWN
    return f"{len(classes)}: {shown}" + (f", ... and {more} more" if more > 0 else "")


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


def _text(value: Any, missing: str = "unknown") -> str:
    """Plain text for a summary value; floats to 4 significant digits."""
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
