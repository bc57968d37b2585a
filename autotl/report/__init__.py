"""The HTML report of a search: what was tried, what worked, and where the model is.

Built from an ``optuna.Study`` alone (as read back from storage), so a report can
be written during a search, after it, or for a search that crashed. The records
are plain DataFrames so they can also be inspected without the page.
"""

from autotl.report._html import write
from autotl.report._records import curve_records, trial_records

__all__ = ["write", "trial_records", "curve_records"]
