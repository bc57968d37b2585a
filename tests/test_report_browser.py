"""The report in a real browser: headless Chromium (Debian's ``chromium``) opens the page offline.

Checks what only a browser can: every plot div has drawn, nothing is logged as an error,
a class named ``<script>alert(1)</script>`` shows as text and runs nothing, the trials
table sorts on a click, and a 50-trial page draws in under 5 seconds. Skipped only
outside CI when there is no ``chromium`` on PATH; in CI (``CI`` set) it always runs.
"""

import html
import json
import os
import re
import shutil
import subprocess

import pytest
from test_report import EVIL, EVIL_TEXT, RANKING, make_pareto_study, make_study

from autotl import report

pytestmark = pytest.mark.slow  # every test here trains, searches or runs a subprocess

# A hook put first in <head> of a copy of the page: it records console errors, uncaught
# errors, failed resource loads and any alert() call, clicks the "score" header of the
# trials table once the page has loaded, and leaves all of it in attributes of <html>.
HOOK = """<script>(function () {
  var root = document.documentElement, errors = [];
  function note(text) { errors.push(String(text)); root.setAttribute('data-errors', JSON.stringify(errors)); }
  var error = console.error;
  console.error = function () { note(Array.prototype.join.call(arguments, ' ')); return error.apply(console, arguments); };
  window.addEventListener('error', function (event) {
    note(event.message || ('could not load ' + (event.target && (event.target.src || event.target.href))));
  }, true);
  window.addEventListener('unhandledrejection', function (event) { note('unhandled rejection: ' + event.reason); });
  window.alert = function (text) { note('alert(' + text + ') ran'); };
  window.addEventListener('load', function () {
    setTimeout(function () {
      var table = document.querySelector('#trials table.sortable'), th = null;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) { if (cell.textContent === 'score') { th = cell; } });
      th.click();
      var column = th.cellIndex, order = Array.prototype.map.call(table.tBodies[0].rows, function (row) { return row.cells[column].textContent; });
      root.setAttribute('data-sorted', JSON.stringify(order));
    }, 0);
  });
})();</script>"""
# Chromium's own notices about software WebGL, not the page's doing.
BROWSER_NOTICES = ("GL Driver Message", "Automatic fallback to software WebGL")


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium for the report's browser test (.ci/run installs it)")
        pytest.skip("no chromium on PATH (apt-get install chromium); CI always runs this test")
    return path


def _open(page_path, tmp_path, virtual_time=True):
    """Load the page in headless Chromium; return (dumped DOM, console lines from its log)."""
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,2000",
        "--dump-dom",
        page_path.resolve().as_uri(),
    ]
    if virtual_time:
        command.insert(-2, "--virtual-time-budget=15000")
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def _attr(dom: str, name: str) -> str | None:
    found = re.search(rf'\s{name}="([^"]*)"', dom)
    return html.unescape(found.group(1)) if found else None


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("browser")
    page = report.write(make_study(n_complete=6), tmp_path / "report.html").read_text(encoding="utf-8")
    hooked = tmp_path / "hooked.html"
    hooked.write_text(page.replace("<head>", "<head>\n" + HOOK, 1), encoding="utf-8")
    dom, console = _open(hooked, tmp_path)
    return page, dom, console


def test_every_plot_draws_without_errors(opened):
    page, dom, console = opened
    expected = page.count('class="plotly-graph-div"')
    assert expected >= 8
    assert _attr(dom, "data-plots") == str(expected)
    assert _attr(dom, "data-plots-drawn") == str(expected)
    assert json.loads(_attr(dom, "data-errors") or "[]") == []
    assert [line for line in console if not any(n in line for n in BROWSER_NOTICES)] == []


def test_a_script_in_a_class_name_shows_as_text_and_runs_nothing(opened):
    page, dom, _ = opened
    assert EVIL not in dom  # no such element was ever parsed into the page
    assert dom.count(EVIL_TEXT) >= 4  # summary, confusion matrix ticks, table, gallery, ...
    scripts = len(re.findall(r"<script\b", page)) + 1  # + the test's hook
    assert len(re.findall(r"<script\b", dom)) == scripts
    assert "alert(1) ran" not in (_attr(dom, "data-errors") or "")
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    assert html.unescape(title).endswith(f"/data/{EVIL}")  # the path, as text


def test_clicking_a_header_sorts_the_trials_table(opened):
    _, dom, _ = opened
    order = json.loads(_attr(dom, "data-sorted"))
    scores = [float(text) for text in order if text]
    assert scores == sorted(scores) and len(scores) >= 6
    assert all(text == "" for text in order[len(scores) :])  # blanks (the failed trial) last


def test_a_two_objective_page_with_a_backbone_ranking_draws_without_errors(tmp_path):
    """The Pareto front and the ranking figure draw too, and a ranked ``<script>`` backbone stays text."""
    study = make_pareto_study()
    study.set_user_attr("backbone_ranking", RANKING)
    page = report.write(study, tmp_path / "report.html").read_text(encoding="utf-8")
    hooked = tmp_path / "hooked.html"
    hooked.write_text(page.replace("<head>", "<head>\n" + HOOK, 1), encoding="utf-8")
    dom, console = _open(hooked, tmp_path)
    expected = page.count('class="plotly-graph-div"')
    assert 'id="figure-pareto"' in page and 'id="figure-ranking"' in page
    assert _attr(dom, "data-plots") == str(expected)
    assert _attr(dom, "data-plots-drawn") == str(expected)
    assert json.loads(_attr(dom, "data-errors") or "[]") == []
    assert [line for line in console if not any(n in line for n in BROWSER_NOTICES)] == []
    assert EVIL not in dom and EVIL_TEXT in dom


def test_a_50_trial_page_is_small_and_draws_in_under_5_seconds(tmp_path):
    classes = [f"class {i}" for i in range(10)]
    study = make_study(n_complete=40, n_pruned=9, classes=classes, n_wrong=24)
    assert len(study.trials) == 50
    path = report.write(study, tmp_path / "report.html")
    assert path.stat().st_size < 10_000_000
    dom, _ = _open(path, tmp_path, virtual_time=False)  # real time, so the clock means seconds
    drawn = _attr(dom, "data-drawn-ms")
    assert drawn is not None, "the page had not drawn every plot when Chromium dumped it"
    assert int(drawn) < 5000
