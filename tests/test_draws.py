"""bayesmer.draws.hdi is arviz_stats' highest-density interval, without importing it."""

import numpy as np
import pytest
from arviz_stats.base import array_stats

from bayesmer.draws import hdi


@pytest.mark.parametrize("shape", [(1000,), (4000, 3), (999, 2, 5), (10, 1)])
@pytest.mark.parametrize("prob", [0.5, 0.89, 0.95, 1.0])
def test_hdi_equals_arviz_stats(shape, prob):
    rng = np.random.default_rng(sum(shape))
    values = rng.gamma(2.0, size=shape)
    values[::7] = np.round(values[::7], 1)  # ties
    want = np.asarray(array_stats.hdi(np.moveaxis(values, 0, -1), prob, axis=-1))
    np.testing.assert_array_equal(hdi(values, prob), want)


def test_hdi_of_integers_equals_arviz_stats():
    values = np.random.default_rng(1).integers(0, 5, size=(500, 3))
    want = np.asarray(array_stats.hdi(np.moveaxis(values, 0, -1), 0.9, axis=-1))
    np.testing.assert_array_equal(hdi(values, 0.9), want)


def test_hdi_refuses_a_probability_outside_0_1():
    with pytest.raises(ValueError, match=r"must be in \(0, 1\], got 1.5"):
        hdi(np.zeros((10, 2)), 1.5)
