"""bayesmer.psis: arviz_stats' PSIS-LOO, vectorised over the observations, gives its values."""

from __future__ import annotations

import numpy as np
import pytest
from arviz_stats.base import array_stats

from bayesmer import psis


def _arviz(ll: np.ndarray, chains: int, r_eff: float) -> tuple[np.ndarray, ...]:
    with np.errstate(all="ignore"):  # arviz_stats warns about its failed Pareto fits
        return array_stats.loo(
            ll.reshape(len(ll), chains, -1), chain_axis=-2, draw_axis=-1, r_eff=r_eff
        )


@pytest.mark.parametrize(("draws", "chains", "r_eff"), [(2000, 4, 0.8), (100, 2, 0.5)])
def test_psis_loo_equals_arviz_stats(draws: int, chains: int, r_eff: float) -> None:
    rng = np.random.default_rng(7)
    m = 60
    ll = np.concatenate(
        [
            rng.normal(-1.0, 0.3, (m, draws)),  # well behaved: k small
            -3.0 * np.abs(rng.standard_cauchy((m, draws))),  # heavy tails: k large
            -(rng.exponential(5.0, (m, draws)) ** 2),  # failed fits: k nan
        ]
    )
    got = psis.loo(ll, r_eff)
    expected = _arviz(ll, chains, r_eff)
    k = expected[1]
    assert (k > 0.7).any() and (k < 0.5).any() and np.isnan(k).any()
    for name, a, b in zip(("elpd", "k", "p_loo"), got, expected, strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11, err_msg=name)


def test_psis_refuses_a_constant_tail() -> None:
    ll = np.zeros((2, 400))
    with pytest.raises(ValueError, match="All tail values are the same"):
        psis.loo(ll, 1.0)
