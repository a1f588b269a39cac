"""Families: the binomial log(p) and log(1 - p) of each link are exact, in PyTensor (what the
sampled model uses, values and gradients) and in NumPy (what LOO uses), far into the tails."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy import special, stats

from bayesmer.families import get_family

ETA = np.concatenate([np.linspace(-30.0, 30.0, 1201), [-40.0, -25.0, -20.0, -1.0, 3.3, 7.0]])


def _reference(link: str, eta: np.ndarray) -> tuple[np.ndarray, ...]:
    """scipy's log(p), log(1 - p) and their derivatives in eta."""
    if link == "logit":
        return (
            special.log_expit(eta),
            special.log_expit(-eta),
            special.expit(-eta),
            -special.expit(eta),
        )
    if link == "probit":
        log_pdf = stats.norm.logpdf(eta)
        log_p, log_q = special.log_ndtr(eta), special.log_ndtr(-eta)
        return log_p, log_q, np.exp(log_pdf - log_p), -np.exp(log_pdf - log_q)
    # cloglog: p is the cdf of the Gumbel distribution of the minimum
    rate = np.exp(eta)
    with np.errstate(over="ignore"):
        d_log_p = rate / np.expm1(rate)
    return stats.gumbel_l.logcdf(eta), stats.gumbel_l.logsf(eta), d_log_p, -rate


def _close(actual: np.ndarray, expected: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Equal to 1e-12 relative, or to the rounding of eta (logit's eta - softplus(eta))."""
    return np.abs(actual - expected) <= 1e-12 * np.abs(expected) + 1e-15 * np.maximum(
        1.0, np.abs(eta)
    )


def _pytensor_pair(link: str):
    """Compiled (numba, as nutpie runs it) log(p), log(1 - p) and their gradients."""
    eta = pt.dvector("eta")
    log_p, log_q = get_family("binomial", link).log_probs_pt(eta)
    outputs = [log_p, log_q, pytensor.grad(log_p.sum(), eta), pytensor.grad(log_q.sum(), eta)]
    return pytensor.function([eta], outputs, mode="NUMBA")


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_log_probs_pt_values_and_gradients_equal_scipy(link):
    computed = _pytensor_pair(link)(ETA)
    names = ["log p", "log(1 - p)", "d log p", "d log(1 - p)"]
    for name, actual, expected in zip(names, computed, _reference(link, ETA), strict=True):
        bad = ~_close(actual, expected, ETA)
        assert not bad.any(), f"{link} {name} wrong at eta {ETA[bad][:5]}"


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_log_probs_numpy_equals_scipy_and_pytensor(link):
    family = get_family("binomial", link)
    log_p, log_q = family.log_probs(ETA)
    ref_p, ref_q = _reference(link, ETA)[:2]
    pt_p, pt_q = _pytensor_pair(link)(ETA)[:2]
    for actual, expected in ((log_p, ref_p), (log_q, ref_q), (log_p, pt_p), (log_q, pt_q)):
        assert _close(actual, expected, ETA).all()


def test_log_probs_pt_finite_far_out():
    """No NaN from the branch a switch does not take, well past where the tails underflow."""
    eta = np.array([-700.0, -300.0, -60.0, 60.0, 300.0])
    for actual, expected in zip(
        _pytensor_pair("probit")(eta), _reference("probit", eta), strict=True
    ):
        # (the reference derivative exp(log pdf - log cdf) loses 1e-11 at -700)
        assert np.allclose(actual, expected, rtol=1e-10, atol=0.0)
    # cloglog: log(p) = eta - exp(eta) / 2 + ... where exp(eta) underflows
    log_p, log_q, d_log_p, d_log_q = _pytensor_pair("cloglog")(eta)
    assert np.array_equal(log_p, [-700.0, -300.0, -60.0, 0.0, 0.0])
    assert np.array_equal(d_log_p, [1.0, 1.0, 1.0, 0.0, 0.0])
    assert np.allclose(log_q, -np.exp(eta), rtol=1e-15)
    assert np.allclose(d_log_q, -np.exp(eta), rtol=1e-15)


def test_log_probs_are_for_binomial_links():
    with pytest.raises(ValueError, match="binomial links, not 'log'"):
        get_family("poisson").log_probs(np.zeros(2))
