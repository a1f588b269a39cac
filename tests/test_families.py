"""Families: the binomial log(p) and log(1 - p) of each link are exact, in PyTensor (what the
sampled model uses, values and gradients) and in NumPy (what LOO uses), far into the tails;
every family's pointwise log-likelihood equals scipy's, and its replicated outcomes have the
family's mean and variance."""

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


# ---------------------------------------------------------------------------------------------
# Pointwise log-likelihoods (LOO) and replicated outcomes (ppc, simulate) of every family


def _families_cases():
    rng = np.random.default_rng(0)
    eta = rng.normal(size=(5, 4))
    y = np.array([0, 3, 7, 2])
    n = np.array([4, 3, 9, 5])
    e = np.array([1.0, 2.0, 0.5, 3.0])
    disp = np.array([0.5, 1.0, 2.0, 7.0, 30.0])
    for link, p in (
        ("logit", special.expit(eta)),
        ("probit", special.ndtr(eta)),
        ("cloglog", -np.expm1(-np.exp(eta))),
    ):
        yield ("binomial", link), eta, y, n, None, stats.binom.logpmf(y, n, p)
    mu = np.exp(eta) * e
    yield ("poisson", "log"), eta, y, e, None, stats.poisson.logpmf(y, mu)
    r = disp[:, None]
    nb = stats.nbinom.logpmf(y, r, r / (r + mu))
    yield ("negativebinomial", "log"), eta, y, e, disp, nb
    p = special.expit(eta)
    bb = stats.betabinom.logpmf(y, n, p * r, (1 - p) * r)
    yield ("betabinomial", "logit"), eta, y, n, disp, bb
    values = np.array([-1.5, 0.2, 3.0, 10.0])
    ones = np.ones(4)
    yield ("gaussian", "identity"), eta, values, ones, disp, stats.norm.logpdf(values, eta, r)
    normal = stats.norm.logpdf(values, np.exp(eta), r)
    yield ("gaussian", "log"), eta, values, ones, disp, normal


def test_log_likelihood_matches_scipy_for_every_family_and_link():
    for (name, link), eta, y, size, disp, expected in _families_cases():
        family = get_family(name, link)
        got = family.log_likelihood(eta, y, size, disp)
        np.testing.assert_allclose(got, expected, rtol=1e-10, err_msg=f"{name}/{link}")


@pytest.mark.parametrize(
    ("name", "size", "disp"),
    [("negativebinomial", 2.0, 1.5), ("betabinomial", 12.0, 3.0), ("gaussian", 1.0, 2.0)],
)
def test_replicates_have_the_family_mean_and_variance(name, size, disp):
    family = get_family(name)
    rng = np.random.default_rng(1)
    mean = np.full((200_000, 1), 0.3)
    draws = family.replicate(rng, mean, np.array([size]), np.full(200_000, disp))[:, 0]
    if name == "negativebinomial":
        mu = 0.3 * size
        expected = (mu, mu + mu**2 / disp)
    elif name == "betabinomial":
        expected = (0.3 * size, size * 0.3 * 0.7 * (1 + (size - 1) / (disp + 1)))
    else:
        expected = (0.3, disp**2)
    # 5 Monte Carlo standard errors (the variance's: sd * sqrt(2 / N) for light tails, more
    # for the negative binomial's skew, hence rel=0.03)
    assert draws.mean() == pytest.approx(expected[0], abs=5 * np.sqrt(expected[1] / len(draws)))
    assert draws.var() == pytest.approx(expected[1], rel=0.03)


def test_family_names_aliases_and_links():
    assert get_family("nbinom2") == get_family("negativebinomial")
    assert get_family("Normal").name == "gaussian"
    assert get_family("beta_binomial").link == "logit"
    assert get_family("gaussian").link == "identity"
    assert get_family("gaussian").response_label == "emmean"
    assert get_family("gaussian", "log").response_label == "response"
    assert get_family("negativebinomial").response_label == "rate"
    assert get_family("betabinomial").dispersion == "phi"
    with pytest.raises(ValueError, match="link='inverse' for the gaussian family is not"):
        get_family("gaussian", "inverse")
    with pytest.raises(ValueError, match="beta-binomial family is fitted with link='logit'"):
        get_family("betabinomial", "probit")
    with pytest.raises(ValueError, match="Unknown link 'logit' for the negativebinomial"):
        get_family("negativebinomial", "logit")
