"""The fixed-step solver's dense output (`FixedSteps`, used by the fits): the cubic Hermite
interpolant between step points, from the step ends' values and increments h y'."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dormancy_model.model.integrate import _dense_output


@pytest.mark.parametrize("h", [0.5, 2.0])
def test_hermite_between_steps_matches_the_closed_form(h):
    """y' = -k y on an exact grid: the interpolation error at any point is at most
    max|y''''| h^4 / 384 (cubic Hermite error bound). Increments multiplied by h once more (a
    bug found in December 2026) give errors of order h |y'| / 8 instead, far above the bound
    at every h here but 1."""
    k = 0.7
    ts = jnp.arange(0.0, 10.0 + h / 2, h)
    y = jnp.exp(-k * ts)[:, None] * jnp.ones((1, 4))
    incr = -k * y * h  # h y'(t): diffrax's dense["k"] first/last stages
    at, _ = _dense_output(ts, y[0], y[1:], incr[:-1], incr[1:])
    t = np.asarray(ts[:-1]) + np.array([0.21, 0.5, 0.83])[:, None] * h
    t = t.ravel()
    got = np.asarray(jax.vmap(at)(jnp.asarray(t)))[:, 0]
    want = np.exp(-k * t)
    bound = k ** 4 * np.exp(-k * (t - h)) * h ** 4 / 384
    assert np.all(np.abs(got - want) <= bound * 1.0001 + 1e-15)
    # at the step points the interpolant is the solution itself
    got_nodes = np.asarray(jax.vmap(at)(ts[1:-1]))[:, 0]
    np.testing.assert_allclose(got_nodes, np.exp(-k * np.asarray(ts[1:-1])), rtol=1e-14)
