"""Worker processes on one study, and Ctrl-C: the first press ends the running trial, a second one stops at once."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading

import torch

from ..errors import AutoTLError


def run_workers(count: int, device, work, args: tuple) -> None:
    """Start ``count`` processes, each calling ``work(*args, index)``, and wait for them all.

    ``work`` is a module-level function: the processes are spawned, so it travels by name.
    """
    context = multiprocessing.get_context("spawn")
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    threads = max(1, (os.cpu_count() or 1) // count)
    processes, interrupt = [], threading.Event()
    for i in range(count):
        process = context.Process(target=_worker_main, args=(i, gpus, threads, work, args), name=f"autotl-worker-{i}")
        process.start()
        processes.append(process)
    with first_ctrl_c_sets(interrupt):  # each worker gets the Ctrl-C too and ends its own trial
        for process in processes:
            process.join()
    if interrupt.is_set():
        raise KeyboardInterrupt
    failed = [p.name for p in processes if p.exitcode not in (0, -signal.SIGKILL)]
    if failed:
        raise AutoTLError(
            f"worker(s) {', '.join(failed)} stopped with an error (see above); finished trials are "
            f"kept: rerun the same command to resume"
        )


@contextlib.contextmanager
def first_ctrl_c_sets(event: threading.Event, second_interrupts: bool = True):
    """Turn the first Ctrl-C into ``event`` (the trial stops at its next step); a second one interrupts at once.

    With ``second_interrupts=False`` every Ctrl-C only sets ``event``: a finished trial's model is exported
    whole (a KeyboardInterrupt between moving the old model aside and the new one in would leave none).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if event.is_set() and second_interrupts:
            raise KeyboardInterrupt
        event.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_main(index: int, gpus: int, threads: int, work, args: tuple) -> None:
    """One worker process: the GPUs are dealt out in turn, the CPU threads shared out evenly."""
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    torch.set_num_threads(threads)
    try:
        work(*args, index)
    except KeyboardInterrupt:
        sys.exit(130)
