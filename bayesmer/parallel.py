"""Independent blocks of post-sampling work spread over the cores, in threads.

The numerical work after sampling (diagnostics of thousands of parameters, fitted values of
many cells) runs in blocks that NumPy and SciPy compute with the GIL released (sorting,
FFTs, ufuncs, gathers), so threads share the cores without copying the draws to other
processes. Each block's result depends only on the block, so the results are the same
whatever the number of threads; :func:`map_blocks` returns them in the blocks' order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

#: Most threads used, however many cores (each holds one block's buffers).
MAX_THREADS = 8

#: Work (values held by all the blocks) below which the blocks run in the calling thread:
#: starting threads and limiting BLAS to one thread cost milliseconds, more than they save.
MIN_THREADED_VALUES = 4_000_000


def n_threads() -> int:
    """Threads to use: the cores this process may run on, at most :data:`MAX_THREADS`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_THREADS, cores or 1))


def map_blocks[T, R](
    fn: Callable[[T], R],
    blocks: Iterable[T],
    values: int | None = None,
    threads: int | None = None,
) -> list[R]:
    """``[fn(block) for block in blocks]``, computed in threads.

    Parameters
    ----------
    fn : callable
        Computes one block; it must not depend on the others.
    blocks : iterable
    values : int, optional
        How many values the blocks hold in all; below :data:`MIN_THREADED_VALUES` they are
        computed in this thread. None: as many as needed to use threads.
    threads : int, optional
        Threads to use (default :func:`n_threads`); 1 computes in this thread.

    Returns
    -------
    list
        The results in the order of ``blocks``.
    """
    blocks = list(blocks)
    threads = min(n_threads() if threads is None else threads, len(blocks))
    if threads <= 1 or (values is not None and values < MIN_THREADED_VALUES):
        return [fn(block) for block in blocks]
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    # the cores are taken by the blocks: a BLAS call inside one runs on one thread (BLAS
    # threads on top of these contend for the same cores, twice as slow)
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, blocks))
