"""The HTML report of a search: what was tried, what worked, and where the model is.

Built from an ``optuna.Study`` alone (as read back from storage), so a report can
be written during a search, after it, for a search that crashed, or from another
machine that reaches the same storage. Data first, drawing second: ``_records``
turns the study into plain DataFrames (usable without the page, e.g. in a
notebook), ``_figures`` draws Plotly figures from them, ``_html`` assembles one
self-contained page.
"""

from autotl.report._html import render, write
from autotl.report._records import (
    backbone_records,
    best_model_records,
    config_records,
    curve_records,
    pareto_records,
    ranking_records,
    strategy_records,
    time_records,
    trial_records,
)

__all__ = [
    "write",
    "render",
    "trial_records",
    "config_records",
    "curve_records",
    "time_records",
    "backbone_records",
    "ranking_records",
    "pareto_records",
    "strategy_records",
    "best_model_records",
]
