"""benchmarks/RESULTS.md is made of sections; each benchmark script rewrites only its own."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(title: str, lines: list[str], path: Path = RESULTS) -> None:
    """Replace the ``## title`` section of RESULTS.md with ``lines`` (or append it), keeping the others."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    marker = f"## {title}\n"  # the whole heading line: "## run.py" is not "## run.py --quick"
    head, found, tail = (text + "\n").partition(marker)
    rest = tail.split("\n## ", 1)[1] if found and "\n## " in tail else ""
    body = "\n".join([marker.rstrip(), "", *lines]).rstrip() + "\n"
    path.write_text(head.rstrip() + "\n\n" + body + (f"\n## {rest.rstrip()}\n" if rest else ""))
