"""Pure loss functions and diagnostics. Every loss is a mean over the batch; the sign is such that
the optimiser minimises it."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def clipped_surrogate_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
                           clip_eps: float) -> tuple[jax.Array, jax.Array]:
    """PPO's clipped objective, negated (seed 001):

        L = -E[min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t)],  r_t = pi(a_t|s_t) / pi_old(a_t|s_t).

    Returns ``(loss, clip_fraction)``, the fraction of samples with |r_t - 1| > eps.
    """
    chex.assert_equal_shape([log_prob, old_log_prob, advantages])
    ratio = jnp.exp(log_prob - old_log_prob)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return (-jnp.mean(jnp.minimum(unclipped, clipped)),
            clip_fraction(log_prob, old_log_prob, clip_eps))


def clip_fraction(log_prob: jax.Array, old_log_prob: jax.Array, clip_eps: float) -> jax.Array:
    """Fraction of samples whose ratio r_t = pi / pi_old lies outside [1 - eps, 1 + eps]."""
    ratio = jnp.exp(log_prob - old_log_prob)
    return jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32))


def kl_penalty_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
                    kl: jax.Array, beta: float) -> jax.Array:
    """PPO's adaptive-KL objective, negated (seed 001):

        L = -E[r_t A_t] + beta E[KL(pi_old(.|s_t) || pi(.|s_t))].
    """
    chex.assert_equal_shape([log_prob, old_log_prob, advantages, kl])
    ratio = jnp.exp(log_prob - old_log_prob)
    return -jnp.mean(ratio * advantages) + beta * jnp.mean(kl)


def adapt_kl_beta(beta: jax.Array, kl: jax.Array, kl_target: float) -> jax.Array:
    """Seed 001's rule: beta / 2 if d < target / 1.5, beta * 2 if d > target * 1.5, else beta."""
    return jnp.where(kl < kl_target / 1.5, beta / 2.0,
                     jnp.where(kl > kl_target * 1.5, beta * 2.0, beta))


def value_loss(values: jax.Array, targets: jax.Array, old_values: jax.Array | None = None,
               clip_eps: float | None = None) -> jax.Array:
    """0.5 E[(V(s) - G)^2]; with ``clip_eps``, PPO's pessimistic clipped form

        0.5 E[max((V - G)^2, (V_old + clip(V - V_old, -eps, eps) - G)^2)].
    """
    chex.assert_equal_shape([values, targets])
    err = jnp.square(values - targets)
    if clip_eps is not None:
        chex.assert_equal_shape([values, old_values])
        clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
        err = jnp.maximum(err, jnp.square(clipped - targets))
    return 0.5 * jnp.mean(err)


def approx_kl(log_prob: jax.Array, old_log_prob: jax.Array) -> jax.Array:
    """Unbiased low-variance estimate of KL(pi_old || pi): E[(r - 1) - log r] (Schulman's k3)."""
    log_ratio = log_prob - old_log_prob
    return jnp.mean(jnp.expm1(log_ratio) - log_ratio)


def normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """(x - mean) / (std + eps), over all elements."""
    return (x - x.mean()) / (x.std() + eps)


def explained_variance(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """1 - Var[G - V] / Var[G]: 1 is a perfect value function, 0 predicts the mean."""
    var_t = jnp.var(targets)
    return jnp.where(var_t > 0, 1.0 - jnp.var(targets - predictions) / var_t, jnp.nan)
