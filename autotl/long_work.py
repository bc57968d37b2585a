"""How long work over many images shows itself: a bar on a terminal, a start and an end line when it is large.

Shared by the cache build and batch prediction, so that both speak the same way.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

LOUD = 1000  # work over this many images or more says when it starts and ends, on stderr


def announcer(count: int, enabled: bool = True):
    """A ``say(text)`` that prints to stderr for work over ``LOUD`` images or more, else does nothing."""
    if enabled and count >= LOUD:
        return lambda text: print(text, file=sys.stderr, flush=True)
    return lambda text: None


def bar(total: int, desc: str, enabled: bool = True) -> tqdm:
    """A tqdm bar (images/s, time left) that shows only on a terminal."""
    return tqdm(
        total=total, desc=desc, unit="img", leave=False, mininterval=1.0, disable=not (enabled and sys.stderr.isatty())
    )
