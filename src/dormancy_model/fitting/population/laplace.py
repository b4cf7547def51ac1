"""The Laplace approximation of the marginal likelihood (FOCE-I style, exact Hessian).

For animal i with data y_i the inner objective is

    g_i(eta; theta) = -log p(y_i | phi_i = theta + X_i beta + E eta) + 1/2 eta^T Omega^{-1} eta

and with its mode eta_i* (the empirical Bayes estimate, EBE) and Hessian H_i = d2 g_i / d eta2
at the mode, the Laplace marginal negative log-likelihood of the animal is

    -log p(y_i | theta, Omega) ~ g_i(eta_i*) + 1/2 log det Omega + 1/2 log det H_i

(the (2 pi)^(q/2) factors of the prior and of the Gaussian integral cancel). The interaction of
eta and the residual error is kept because H_i is the exact Hessian (`jax.hessian`), not the
first-order (FOCE) approximation. It is exact when the animal likelihood is Gaussian and linear
in eta (checked against statsmodels MixedLM in the tests).

Inner problems: a damped Newton method for all animals at once (`jax.vmap`), the Hessian made
positive definite by raising its eigenvalues to at least `1e-8 * max(1, |largest|)`, a step
halved up to `halvings` times until g does not increase (one trial at a time), stopped when
the Newton decrement is below `tol` or after `iterations` steps. Each iteration costs one
fused value-gradient-Hessian pass at its new point (`value_grad_hessian`) and a value per
line-search trial; the Hessian at the mode is handed to the implicit gradient.

Outer gradient by implicit differentiation: at the converged mode eta*, the implicit function
theorem gives d eta*/d theta = -H^{-1} d(grad_eta g)/d theta. `mode_implicit` returns
``eta* - stop_gradient(H^{-1}) grad_eta g(eta*; theta)`` with eta* and H^{-1} held constant: its
value is eta* (the gradient vanishes at the mode) and its first derivative with respect to theta
is exactly the implicit one, so `jax.grad` of the Laplace objective is the total derivative
(through log det H_i(eta*(theta); theta) too) without differentiating the Newton iterations.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from dormancy_model.fitting.population.problem import PopulationProblem


class InnerOptions(eqx.Module):
    """Newton settings of the per-animal inner problems (static: they fix the compiled loop)."""

    iterations: int = eqx.field(static=True, default=30)
    halvings: int = eqx.field(static=True, default=8)
    tol: float = eqx.field(static=True, default=1e-10)


def inner_objective(problem: PopulationProblem, theta, eta, animal, shared=None, x=None):
    """(g_i(eta; theta), status) of one animal: negative log-likelihood plus the Gaussian
    penalty of its random effects; `shared`: the animal's row of `problem.shared(theta)`; `x`:
    its covariate design row (`problem.design`; None without covariates)."""
    ll, status = problem.loglik(problem.phi(theta, eta, x), animal, shared)
    L = problem.chol(theta)
    w = jax.scipy.linalg.solve_triangular(L, eta, lower=True)
    g = -ll + 0.5 * jnp.sum(w**2)
    bad = (status != 0) | ~jnp.isfinite(g)
    return jnp.where(bad, jnp.inf, g), status


def _pd(H):
    """H with eigenvalues raised to at least 1e-8 * max(1, |largest|) (symmetric)."""
    w, V = jnp.linalg.eigh(0.5 * (H + H.T))
    floor = 1e-8 * jnp.maximum(1.0, jnp.max(jnp.abs(w)))
    return (V * jnp.maximum(w, floor)) @ V.T


def value_grad_hessian(g, eta):
    """(g, grad g, Hessian of g) at eta in one forward-over-reverse pass (the value and the
    gradient are the primal of the Hessian's pass)."""
    def grad_aux(x):
        f, G = jax.value_and_grad(g)(x)
        return G, (f, G)

    H, (f, G) = jax.jacfwd(grad_aux, has_aux=True)(eta)
    return f, G, H


def find_mode(problem: PopulationProblem, theta, eta0, animal, options: InnerOptions,
              shared=None, x=None):
    """Damped Newton from eta0 (q,) for one animal. Returns (eta*, converged bool, steps,
    Hessian of g at eta* (q, q), as computed: not made positive definite).

    Each iteration costs one fused value-gradient-Hessian pass at the accepted point
    (`value_grad_hessian`) and one plain value per line-search trial; the last pass is at
    eta*, so its Hessian is returned for the implicit gradient (`mode_implicit`)."""
    g = lambda e: inner_objective(problem, theta, e, animal, shared, x)[0]  # noqa: E731

    def newton_step(G, H, q):
        ok = jnp.all(jnp.isfinite(G)) & jnp.all(jnp.isfinite(H))
        H = jnp.where(ok, H, jnp.eye(q))
        G = jnp.where(ok, G, 0.0)
        step = -jnp.linalg.solve(_pd(H), G)
        return step, -G @ step  # the Newton decrement squared (>= 0)

    def cond(c):
        done, it = c[-2:]
        return ~done & (it < options.iterations)

    def body(c):
        eta, f, G, H, _, it = c
        step, dec = newton_step(G, H, eta.size)

        def trial(k):
            return g(eta + step * 0.5**k)

        # backtracking, one trial at a time: the first (largest) step 0.5^k that does not
        # increase g (most Newton steps take k = 0, so one solve instead of halvings + 1)
        def search_cond(s):
            k, ft = s
            return (k <= options.halvings) & ~(jnp.isfinite(ft) & (ft <= f))

        def search_body(s):
            k, _ = s
            return k + 1, trial(k + 1)

        k, ft = jax.lax.while_loop(search_cond, search_body, (0, trial(0)))
        moved = (k <= options.halvings) & jnp.isfinite(ft) & (ft <= f)
        new_eta = jnp.where(moved, eta + step * 0.5**k, eta)
        f1, G1, H1 = value_grad_hessian(g, new_eta)
        done = (dec < options.tol) | ~moved
        return new_eta, f1, G1, H1, done, it + 1

    f0, G0, H0 = value_grad_hessian(g, eta0)
    eta, f, G, H, _, it = jax.lax.while_loop(
        cond, body, (eta0, f0, G0, H0, jnp.asarray(False), 0))
    _, dec = newton_step(G, H, eta.size)
    converged = jnp.isfinite(f) & (dec < jnp.sqrt(options.tol))
    return eta, converged, it, H


def mode_implicit(problem: PopulationProblem, theta, eta_star, animal, shared=None,
                  hessian=None, x=None):
    """The mode as a differentiable function of theta by the implicit function theorem (see the
    module docstring): value eta_star, derivative -H^{-1} d(grad_eta g)/d theta. `shared`
    must be the animal's row of `problem.shared(theta)` at this theta (it carries the
    derivative of the shared table); `hessian`: the Hessian of g at eta_star if known (the
    last one of `find_mode`), else computed here."""
    eta_star = jax.lax.stop_gradient(eta_star)
    g = lambda e, t: inner_objective(problem, t, e, animal, shared, x)[0]  # noqa: E731
    H = jax.hessian(g)(eta_star, theta) if hessian is None else hessian
    H = jax.lax.stop_gradient(H)
    G = jax.grad(g)(eta_star, theta)
    return eta_star - jnp.linalg.solve(_pd(H), G)


def animal_laplace(problem: PopulationProblem, theta, eta_star, animal, shared=None,
                   hessian=None, x=None):
    """(Laplace marginal nll of one animal, log det H, H positive definite) at its mode;
    `hessian`: see `mode_implicit`; `x`: the animal's covariate design row."""
    eta = mode_implicit(problem, theta, eta_star, animal, shared, hessian, x)
    g = lambda e: inner_objective(problem, theta, e, animal, shared, x)[0]  # noqa: E731
    H = jax.hessian(g)(eta)
    H = 0.5 * (H + H.T)
    sign, logdet_h = jnp.linalg.slogdet(H)
    L = problem.chol(theta)
    logdet_omega = 2.0 * jnp.sum(jnp.log(jnp.abs(jnp.diag(L))))
    nll = g(eta) + 0.5 * logdet_omega + 0.5 * logdet_h
    pd = sign > 0
    return jnp.where(pd & jnp.isfinite(nll), nll, jnp.inf), logdet_h, pd


def _modes(problem, theta, eta0, options):
    shared = jax.lax.stop_gradient(problem.shared(theta))
    return jax.vmap(find_mode, in_axes=(None, None, 0, 0, None, 0, 0))(
        problem, theta, eta0, problem.animals, options, shared, problem.design)


def _marginal(problem, theta, eta_star, hessians=None):
    nll, _, pd = jax.vmap(animal_laplace, in_axes=(None, None, 0, 0, 0, 0, 0))(
        problem, theta, eta_star, problem.animals, problem.shared(theta), hessians,
        problem.design)
    return jnp.sum(nll), (nll, pd)


@eqx.filter_jit
def laplace_value_and_grad(problem: PopulationProblem, theta, eta0,
                           options: InnerOptions = InnerOptions()):
    """At the outer vector theta, from the starting modes eta0 (n_animals, q): (marginal nll,
    its gradient with respect to theta, the modes (n_animals, q), per-animal converged flags,
    per-animal nll, per-animal Hessian positive definite)."""
    eta, conv, _, H = _modes(problem, theta, eta0, options)
    (f, (per, pd)), grad = jax.value_and_grad(_marginal, argnums=1, has_aux=True)(
        problem, theta, eta, H)
    return f, grad, eta, conv, per, pd


@eqx.filter_jit
def laplace_value(problem: PopulationProblem, theta, eta0,
                  options: InnerOptions = InnerOptions()):
    """(marginal nll, modes, converged flags) without the gradient."""
    eta, conv, _, H = _modes(problem, theta, eta0, options)
    return _marginal(problem, theta, eta, H)[0], eta, conv


@eqx.filter_jit
def mode_hessians(problem: PopulationProblem, theta, eta):
    """Per-animal Hessians of g at the modes (n_animals, q, q) (for the EBEs' conditional sd)."""
    def one(e, a, s, x):
        return jax.hessian(lambda v: inner_objective(problem, theta, v, a, s, x)[0])(e)
    return jax.vmap(one)(eta, problem.animals, problem.shared(theta), problem.design)
