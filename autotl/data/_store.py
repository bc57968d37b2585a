"""The decoded-image cache: each image decoded once, at the size training needs, in a file on disk.

FFCV's idea. A dataset's images become rows of ``S x S x 3`` uint8 in one file per
(dataset fingerprint, size) under the cache folder. Every process and every later run
(search, evaluate, export, refit, workers) reads rows from that file, through the OS
page cache, instead of decoding again and holding its own copy; memory stays flat in the
dataset's size. The fingerprint covers each file's path, size and modification time, so
a changed, added or removed file makes a new cache. A cache is built under a temporary
name and renamed when complete, one process at a time; each row's CRC32 is checked when
a cache is opened, so a damaged cache is rebuilt, never trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..long_work import announcer, bar
from . import _decode
from ._sources import Sample

VERSION = 2  # 2: resize rounds as torchvision does (caches of 1 are rebuilt)
META, ROWS = "meta.json", "images.u8"
HEADER_SAMPLE = 200  # files whose header is read first: if one reaches the size asked for, the rest need not be


def cache_root(cache_dir=None) -> Path:
    """Where decoded images are cached: ``cache_dir``, else $AUTOTL_CACHE/images, else ~/.cache/autotl/images."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("AUTOTL_CACHE") or Path.home() / ".cache" / "autotl") / "images"


class ImageStore:
    """``count`` square uint8 images of ``size`` px in a file, read by row on demand."""

    def __init__(self, folder: Path, size: int, count: int, failed: dict[int, str]):
        self.folder, self.size, self.count, self.failed = Path(folder), size, count, failed
        self._fd = None

    @property
    def row_bytes(self) -> int:
        return self.size * self.size * 3

    def read(self, rows) -> np.ndarray:
        """The images at ``rows`` (any order) as an N x size x size x 3 uint8 array."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.size, self.size, 3), dtype=np.uint8)
        if self._fd is None:
            self._fd = os.open(self.folder / ROWS, os.O_RDONLY)
        flat, n = out.reshape(len(rows), -1), self.row_bytes
        start = 0
        while start < len(rows):  # consecutive rows are read in one call
            end = start + 1
            while end < len(rows) and rows[end] == rows[end - 1] + 1:
                end += 1
            chunk = os.preadv(self._fd, [memoryview(flat[start:end]).cast("B")], int(rows[start]) * n)
            if chunk != (end - start) * n:
                raise OSError(f"the image cache {self.folder} is shorter than it should be: delete it to rebuild it")
            start = end
        return out

    def __getstate__(self):
        return dict(self.__dict__, _fd=None)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def fingerprint(samples: list[Sample]) -> str:
    """A digest of where each image comes from: a file's path, size and modification time, or its pixels."""
    digest = hashlib.blake2b(f"autotl-images-{VERSION}".encode(), digest_size=16)
    for sample in samples:
        if sample.path is not None:
            stat = sample.path.stat()
            # os.fsencode, not str.encode: a name that is not valid UTF-8 arrives with surrogate escapes
            digest.update(os.fsencode(sample.path.resolve()) + f"\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        else:
            digest.update(repr(sample.pixels.shape).encode())
            digest.update(np.ascontiguousarray(sample.pixels).tobytes())
    return digest.hexdigest()


def open_store(
    samples: list[Sample], size: int, *, cache_dir=None, progress: bool = False, interpolation: str = "bicubic"
) -> ImageStore:
    """The cache of ``samples`` at ``size`` px (or their largest shorter side, if smaller): found, or built.

    A valid cache of a larger size serves too (batches are resized down from it).
    """
    folder = cache_root(cache_dir)
    root = folder / fingerprint(samples)
    found = _find(root, size, len(samples))
    if found is not None:
        return found
    largest = _recorded_side(root)  # a cache of smaller images says how small they are: no header to read
    if largest is None:
        largest = _largest_side(samples, size)
    target = max(1, min(size, largest))
    found = _find(root, target, len(samples))
    if found is not None:
        return found
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / ".lock").touch()
    except OSError as error:
        raise DatasetError(
            f"cannot write the image cache in {folder} ({error.strerror or error}): pass --cache-dir "
            f"with a writable folder"
        ) from error
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds what the first one built
        found = _find(root, target, len(samples))
        if found is not None:
            return found
        return _build(samples, root, target, largest, progress, interpolation)


def _largest_side(samples: list[Sample], size: int) -> int:
    """The largest shorter side among the images, read from headers; stops early once one reaches ``size``."""

    def one(sample):
        if sample.pixels is not None:
            return min(sample.pixels.shape[:2])
        try:
            return _decode.side(sample.path)
        except Exception:  # noqa: BLE001 - an unreadable file is skipped when decoded
            return 0

    with ThreadPoolExecutor(max_workers=8) as pool:
        first = max(pool.map(one, samples[:HEADER_SAMPLE]), default=0)
        if first >= size or len(samples) <= HEADER_SAMPLE:
            return first
        return max(first, max(pool.map(one, samples[HEADER_SAMPLE:], chunksize=64), default=0))


def _recorded_side(root: Path) -> int | None:
    """The images' largest shorter side, as a cache at that size recorded it (None when none did)."""
    for meta in sorted(root.glob("*/" + META)) if root.is_dir() else []:
        try:
            return int(json.loads(meta.read_text())["largest_side"])
        except (OSError, ValueError, KeyError, TypeError):  # not recorded (images larger than the cache), or damaged
            continue
    return None


def _find(root: Path, target: int, count: int) -> ImageStore | None:
    """The smallest valid cache of at least ``target`` px under ``root``; damaged ones are deleted."""
    if not root.is_dir():
        return None
    sizes = sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) >= target)
    for size in sizes:
        store = _check(root / str(size), size, count)
        if store is not None:
            return store
        shutil.rmtree(root / str(size), ignore_errors=True)
    return None


def _check(folder: Path, size: int, count: int) -> ImageStore | None:
    """The cache in ``folder`` if its metadata, length and every row's CRC32 are as written, else None."""
    try:
        meta = json.loads((folder / META).read_text())
        if (meta["version"], meta["size"], meta["count"]) != (VERSION, size, count):
            return None
        store = ImageStore(folder, size, count, {int(k): v for k, v in meta["failed"].items()})
        if (folder / ROWS).stat().st_size != count * store.row_bytes:
            return None
        crcs = meta["crc32"]
        step = max(1, (64 << 20) // store.row_bytes)  # check in chunks of about 64 MB
        for start in range(0, count, step):
            rows = store.read(np.arange(start, min(start + step, count))).reshape(-1, store.row_bytes)
            if any(zlib.crc32(row) != crc for row, crc in zip(rows, crcs[start : start + step])):
                return None
        return store
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _build(
    samples: list[Sample], root: Path, size: int, largest_side: int, progress: bool, interpolation: str
) -> ImageStore:
    """Decode every image once (JPEGs at a reduced DCT scale), square it at ``size`` and write its row."""
    staging = root / f".building-{size}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        row_bytes = size * size * 3
        crcs, failed = [0] * len(samples), {}
        with open(staging / ROWS, "wb") as handle:
            handle.truncate(len(samples) * row_bytes)
            fd = handle.fileno()

            def one(i):
                try:
                    row = _decode.resize(_pixels(samples[i], size), size, interpolation)
                except Exception as error:  # noqa: BLE001 - any failure on one file skips that file alone
                    failed[i] = _decode.unreadable_because(error)
                    row = np.zeros((size, size, 3), np.uint8)
                data = np.ascontiguousarray(row).tobytes()
                os.pwrite(fd, data, i * row_bytes)
                crcs[i] = zlib.crc32(data)

            workers = max(2, min(8, os.cpu_count() or 1))
            started = time.time()
            say = announcer(len(samples), progress)
            say(f"decoding {len(samples)} images once into the cache at {size} px ({root})")
            with (
                ThreadPoolExecutor(max_workers=workers) as pool,
                bar(len(samples), "decoding images", progress) as shown,
            ):
                for _ in pool.map(one, range(len(samples)), chunksize=16):
                    shown.update()
            os.fsync(fd)
            seconds = time.time() - started
            say(f"decoded {len(samples)} images in {seconds:.1f} s ({len(samples) / max(seconds, 1e-9):.0f} img/s)")
        meta = dict(
            version=VERSION,
            size=size,
            count=len(samples),
            failed={str(k): v for k, v in failed.items()},
            largest_side=largest_side if largest_side <= size else None,
            crc32=crcs,
        )
        (staging / META).write_text(json.dumps(meta))
        final = root / str(size)
        with contextlib.suppress(OSError):  # another machine sharing the folder may have renamed its copy first
            os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ImageStore(final, size, len(samples), failed)


def _pixels(sample: Sample, size: int) -> np.ndarray:
    return sample.pixels if sample.pixels is not None else _decode.decode(sample.path, size)
