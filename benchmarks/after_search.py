"""What follows a search's last trial, timed: model.onnx's export and check, as a search writes them.

    python benchmarks/after_search.py      # about 2 minutes on one CPU thread

A timed search keeps time back from ``--timeout`` for this (``REPORT_RESERVE_S`` in
autotl/search/_run.py). Each backbone of the default space is exported in a fresh process
with one thread (a search exports once, so the exporter's first call in a process is the
one that counts), at the warm start's 0.75 resolution scale, through the same function a
search calls (``export._onnx._written_and_checked``: export, then the check in ONNX
Runtime). Writes its section of benchmarks/RESULTS.md and prints one JSON object last.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_md import write_section  # noqa: E402

BACKBONES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
SCALE, CLASSES, CHECK_IMAGES = 0.75, 10, 16


def one(name: str) -> dict:
    """Export ``name`` (pretrained weights, a new head) as a search does; seconds and peak RSS of this process."""
    import torch

    torch.set_num_threads(1)
    from autotl import backbones
    from autotl.export._onnx import _written_and_checked

    model = backbones.create(name, CLASSES).eval()
    size = backbones.preprocessing(name, SCALE).size
    x = torch.rand(CHECK_IMAGES, 3, size, size)
    with tempfile.TemporaryDirectory() as folder:
        started = time.time()
        check = _written_and_checked(model, x, Path(folder) / "model.onnx")
        seconds = time.time() - started
    return dict(
        backbone=name,
        size=size,
        seconds=round(seconds, 1),
        checked=bool(check),
        peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
    )


def main() -> dict:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2])))
        return {}
    rows = []
    for name in BACKBONES:
        done = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr)
    import torch

    from autotl.search._run import REPORT_RESERVE_S

    lines = [
        f"Machine: {platform.machine()}, one CPU thread per export; torch {torch.__version__}.",
        "",
        "Each backbone in a fresh process, exported as a search exports its best model (PyTorch's exporter, "
        f"`dynamo=True`), then checked in ONNX Runtime on {CHECK_IMAGES} images:",
        "",
        "| backbone | input px | export + check (s) | peak RSS (GB) |",
        "| --- | --- | --- | --- |",
        *(f"| {r['backbone']} | {r['size']} | {r['seconds']} | {r['peak_rss_gb']} |" for r in rows),
        "",
        f"The report takes about a second more. A timed search keeps `REPORT_RESERVE_S` ({REPORT_RESERVE_S:g} s) "
        'of its `--timeout` for this (why 10 s was too few: "Search arms side by side: what the runs say").',
    ]
    write_section("Time after the search (after_search.py)", lines)
    found = dict(rows=rows)
    print(json.dumps(found))
    return found


if __name__ == "__main__":
    main()
