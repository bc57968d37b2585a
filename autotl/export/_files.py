"""Predict many files with an exported model: gather them, decode in threads, predict in batches, write CSV rows.

One unreadable file is a warning, never the end of the job; rows are written as batches
finish, so memory stays flat on a hundred thousand images.
"""

from __future__ import annotations

import csv
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..data import printable, unreadable_because
from ..errors import AutoTLError
from ..long_work import announcer, bar
from ._loaded import DECODE_THREADS, LoadedModel


def image_paths(arguments: list[str]) -> list[Path]:
    """The files named by ``arguments``: files, folders (every visible file below, sorted) and .csv lists."""
    paths = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_dir():
            paths += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file() and path.suffix.lower() == ".csv":
            paths += _listed(path)
        elif path.is_file():
            paths.append(path)
        else:
            raise AutoTLError(f"{argument} does not exist: pass image files, folders or a .csv list with a path column")
    return paths


def _listed(path: Path) -> list[Path]:
    """The ``path`` column of a CSV, relative to the CSV's folder; rows naming no file are warned about and left out."""
    # surrogateescape: a path that is not valid UTF-8 (as predict_files writes one) names its file's bytes
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "path" not in columns:
            raise AutoTLError(f"CSV {path} has no path column: its header must name path (it has {columns})")
        reader.fieldnames = columns
        files = [path.parent / row["path"].strip() for row in reader if (row.get("path") or "").strip()]
    missing = [f for f in files if not f.is_file()]
    if missing:
        warnings.warn(
            f"{len(missing)} file(s) listed in {path} do not exist and are skipped: "
            f"{', '.join(printable(f) for f in missing[:5])}{' ...' if len(missing) > 5 else ''}",
            stacklevel=2,
        )
    return [f for f in files if f.is_file()]


def header(model: LoadedModel, top_k: int) -> list[str]:
    extra = [f"{name}_{k}" for k in range(2, min(top_k, len(model.classes)) + 1) for name in ("label", "probability")]
    return ["path", "label", "probability", *extra]


def predict_files(
    model: LoadedModel, paths: list[Path], out, *, top_k: int = 1, batch_size: int = 64, progress: bool = False
) -> int:
    """Write one CSV row per readable file to ``out`` (a text stream); returns how many were predicted.

    The next batch is decoded while the model runs on this one. Open ``out`` with errors="surrogateescape":
    a path that is not valid UTF-8 is then written as its own bytes, where a strict stream stops the job.
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header(model, top_k))
    k = min(top_k, len(model.classes))
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    say = announcer(len(paths))
    say(f"predicting {len(paths)} files with {model.runtime}")
    started, done, skipped = time.time(), 0, []
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool, bar(len(paths), "predicting", progress) as shown:
        submit = lambda chunk: [pool.submit(_read, model, p) for p in chunk]  # noqa: E731
        upcoming = submit(chunks[0]) if chunks else []
        for index, chunk in enumerate(chunks):
            current, upcoming = upcoming, submit(chunks[index + 1]) if index + 1 < len(chunks) else []
            read = [(path, future.result()) for path, future in zip(chunk, current)]
            skipped += [(path, why) for path, (_, why) in read if why]
            good = [(path, pixels) for path, (pixels, _) in read if pixels is not None]
            if good:
                probabilities = model.probabilities(torch.stack([pixels for _, pixels in good]))
                for (path, _), row in zip(good, probabilities):
                    best = row.argsort()[::-1][:k]
                    writer.writerow([str(path), *[v for i in best for v in (model.classes[i], f"{row[i]:.6f}")]])
                done += len(good)
            shown.update(len(chunk))
    seconds = time.time() - started
    say(f"predicted {done} files in {seconds:.1f} s ({done / max(seconds, 1e-9):.0f} img/s)")
    if skipped:
        shown = ", ".join(f"{printable(p)} ({why})" for p, why in skipped[:5]) + (
            f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        )
        warnings.warn(f"skipped {len(skipped)} file(s) that are not readable images: {shown}", stacklevel=2)
    return done


def _read(model: LoadedModel, path: Path):
    """(pixels, None), or (None, why) for a file that cannot be read as an image."""
    try:
        return model.one_image(path), None
    except AutoTLError as error:
        return None, unreadable_because(error.__cause__) if error.__cause__ is not None else str(error)
