"""Blocks of post-sampling work in threads: results in the blocks' order, small work at home."""

import threading

import numpy as np
import pytest

from bayesmer.parallel import map_blocks


def _where(block):
    """The block's own result and the thread that computed it."""
    return np.sort(block)[::-1].copy(), threading.get_ident()


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_results_come_back_in_the_blocks_order(threads):
    blocks = [np.random.default_rng(i).normal(size=1000 + i) for i in range(13)]
    out = map_blocks(_where, blocks, threads=threads)
    for block, (result, _) in zip(blocks, out, strict=True):
        np.testing.assert_array_equal(result, np.sort(block)[::-1])
    used = {ident for _, ident in out}
    assert (threading.get_ident() in used) == (threads == 1)


def test_little_work_runs_in_the_calling_thread(monkeypatch):
    monkeypatch.setattr("bayesmer.parallel.MIN_THREADED_VALUES", 10_000)
    blocks = [np.arange(3.0)] * 4
    small = map_blocks(_where, blocks, values=12, threads=2)
    assert {ident for _, ident in small} == {threading.get_ident()}
    large = map_blocks(_where, blocks, values=10_000, threads=2)
    assert threading.get_ident() not in {ident for _, ident in large}


def test_an_error_in_a_block_reaches_the_caller():
    def fail_on_three(i):
        if i == 3:
            raise ValueError("block 3 failed")
        return i

    with pytest.raises(ValueError, match="block 3 failed"):
        map_blocks(fail_on_three, range(6), threads=2)
