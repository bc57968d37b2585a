"""Assemble the records and figures into one self-contained HTML page.

The page works offline: plotly.js is embedded once in <head> and every figure is
a <div> plus a small script that draws into it. Strings that come from the user
or the data (paths, class names, params, errors) are escaped with ``html.escape``
before they go into markup. Figure data is safe inside its <script> because
Plotly's JSON encoder (plotly/io/_json.py, ``_safe``) writes ``<``, ``>`` and ``/``
as ``\\u003c``, ``\\u003e`` and ``\\u002f``, so no ``</script>`` can appear in it;
``tests/test_report.py`` checks this still holds.
"""

from __future__ import annotations

import html
import os
import pathlib
from typing import Any

import optuna
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from autotl.report import _figures, _records

_CONFIG = {"displaylogo": False, "responsive": True}
_MAX_CLASSES_SHOWN = 40
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
p.caption { color: #555; margin-top: 0; } p.note { font-style: italic; color: #777; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top; }
table.summary th { background: #f5f5f5; white-space: nowrap; }
table.trials { display: block; overflow-x: auto; }
table.trials th { background: #f5f5f5; position: sticky; top: 0; }
tr.pruned { color: #777; } tr.fail { color: #b00; }
"""


def write(study: optuna.Study, path: str | os.PathLike[str]) -> pathlib.Path:
    """Write the report for ``study`` to ``path`` (atomically) and return the path."""
    path = pathlib.Path(path)
    page = render(study)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists() and tmp != path:
            tmp.unlink()
    return path


def render(study: optuna.Study) -> str:
    """The whole report page as one HTML string."""
    info = _records.summary(study)
    trials = _records.trial_records(study)
    curves = _records.curve_records(study)
    importances, why_no_importances = _records.param_importances(study)
    title = f"autotl report: {info['study_name']}"

    sections = [
        _section(
            "history",
            "Optimization history",
            "Each marker is one trial's score (x = pruned, at its last reported value); the "
            "step line is the best so far, and a line that stays flat means later trials "
            "stopped improving.",
            _figure_or_note(
                _figures.history_figure(trials, info["direction"]),
                "history",
                "No trial has a score yet.",
            ),
        ),
        _section(
            "curves",
            "Learning curves",
            "Validation accuracy after each epoch: dashed lines were pruned (x marks where), "
            "dotted lines failed, the thick line is the best trial; curves still rising at "
            "the end suggest more epochs would help.",
            _figure_or_note(
                _figures.curves_figure(curves, info["best_trial"]),
                "curves",
                "No trial has reported a validation accuracy yet.",
            ),
        ),
        _section(
            "importance",
            "Parameter importances",
            "How much of the variation in score across complete trials each parameter "
            "explains (Optuna's default importance evaluator); the longest bar is the "
            "choice that mattered most.",
            _figure_or_note(
                _figures.importance_figure(importances),
                "importance",
                f"No parameter importances: {why_no_importances}",
            ),
        ),
        _section(
            "parallel",
            "Parameters of complete trials",
            "One line per complete trial, coloured by score; follow the bright lines to see "
            "which values the best trials share (drag along an axis to filter).",
            _figure_or_note(
                _figures.parallel_figure(trials),
                "parallel",
                "No trial has completed yet.",
            ),
        ),
        _section(
            "trials",
            "All trials",
            "Every trial with its state, score, cost and why it ended; failed trials show "
            "their error.",
            _figures.trials_table(trials),
        ),
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_STYLE}</style>",
            "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>",
            f'<script charset="utf-8">{get_plotlyjs()}</script>',
            "</head>",
            "<body>",
            f"<h1>{html.escape(title)}</h1>",
            _summary_section(info),
            *sections,
            "</body>",
            "</html>",
            "",
        ]
    )


def figure_html(fig: go.Figure, div_id: str) -> str:
    """One figure as a <div> and its drawing script, without plotly.js itself."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=_CONFIG)


def _figure_or_note(fig: go.Figure | None, div_id: str, note: str) -> str:
    if fig is None:
        return f'<p class="note">{html.escape(note)}</p>'
    return figure_html(fig, "figure-" + div_id)


def _section(section_id: str, title: str, caption: str, body: str) -> str:
    return (
        f'<section id="{section_id}">\n<h2>{html.escape(title)}</h2>\n'
        f'<p class="caption">{html.escape(caption)}</p>\n{body}\n</section>'
    )


def _summary_section(info: dict[str, Any]) -> str:
    """Dataset, run settings, outcome and where the model is, as a two-column table."""
    attrs = info["user_attrs"]
    dataset = attrs.get("dataset") if isinstance(attrs.get("dataset"), dict) else {}
    classes = dataset.get("classes")
    rows = [
        ("Dataset", _text(dataset.get("path"))),
        ("Classes", _classes(classes)),
        (
            "Images",
            ", ".join(
                f"{split} {_text(dataset.get('n_' + split))}" for split in ("train", "val", "test")
            ),
        ),
        (
            "Validation fraction / seed",
            f"{_text(dataset.get('val_fraction'))} / {_text(dataset.get('seed'))}",
        ),
        ("Device", _text(attrs.get("device"))),
        ("Search space", _text(attrs.get("space"))),
        (
            "Budget",
            f"{_text(attrs.get('n_trials'))} trials, timeout {_timeout(attrs.get('timeout'))}, "
            f"up to {_text(attrs.get('max_epochs'))} epochs per trial",
        ),
        ("Started", _text(attrs.get("started_at"))),
        (
            "Trials",
            f"{info['n_trials']} in total: {info['complete']} completed, {info['pruned']} pruned, "
            f"{info['failed']} failed, {info['running']} running",
        ),
        (
            "Best score",
            "no trial completed"
            if info["best_trial"] is None
            else f"{_text(info['best_value'])} (trial {info['best_trial']}, {info['direction']})",
        ),
        ("Exported model", _text(attrs.get("model_dir"), missing="not exported")),
    ]
    body = "\n".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>" for name, value in rows
    )
    best_params = info["best_params"]
    if best_params:
        params = "\n".join(
            f"<tr><th>{html.escape(str(name))}</th><td>{html.escape(_text(value))}</td></tr>"
            for name, value in best_params.items()
        )
        config = f"<h3>Best configuration</h3>\n<table class=\"summary\">\n{params}\n</table>"
    else:
        config = ""
    return (
        '<section id="summary">\n<h2>Summary</h2>\n'
        f'<table class="summary">\n{body}\n</table>\n{config}\n</section>'
    )


def _classes(classes: Any) -> str:
    if not isinstance(classes, (list, tuple)):
        return "unknown"
    names = [str(name) for name in classes]
    shown = ", ".join(names[:_MAX_CLASSES_SHOWN])
    more = len(names) - _MAX_CLASSES_SHOWN
    return f"{len(names)}: {shown}" + (f", ... and {more} more" if more > 0 else "")


def _timeout(timeout: Any) -> str:
    if timeout is None:
        return "none"
    try:
        return f"{float(timeout):g} s"
    except (TypeError, ValueError):
        return str(timeout)


def _text(value: Any, missing: str = "unknown") -> str:
    """Plain text for a summary value; floats to 4 significant digits."""
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
