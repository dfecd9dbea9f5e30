"""Local worker processes that end with the step that started them.

`worker_pool` is the one process pool of CASS (ingestion, the raw index, the generator): its
workers are spawned, ask the kernel to end them when their parent dies (Linux
`PR_SET_PDEATHSIG`; a `kill -9` of the step included), and are terminated when the block is
left by an exception or a signal turned into one.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Worker initialiser: SIGTERM when the parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):  # libc is loaded already: no library search
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def terminate(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's workers now, the patients they hold unfinished."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)


@contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """`workers` spawned processes, ended with the block (at once when it fails)."""
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        yield pool
    except BaseException:
        terminate(pool)
        raise
    pool.shutdown()
