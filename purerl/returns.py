"""Return and advantage estimators. Time-major ``[T, ...]`` and truncation aware.

Notation (seed 003): a transition at step t has reward r_t, value V(s_t) and a real next state
s'_t. ``terminated_t`` means s'_t is terminal (bootstrap from zero); ``truncated_t`` means the
episode was cut by a time limit (bootstrap from V(s'_t), but never carry an estimate across into
the next episode). Inside an episode s'_t = s_{t+1}.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def td_errors(rewards: jax.Array, values: jax.Array, next_values: jax.Array,
              terminated: jax.Array, gamma: float) -> jax.Array:
    """delta_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t)."""
    chex.assert_equal_shape([rewards, values, next_values, terminated])
    return rewards + gamma * (1.0 - terminated) * next_values - values


def gae(rewards: jax.Array, values: jax.Array, next_values: jax.Array, terminated: jax.Array,
        truncated: jax.Array, gamma: float, gae_lambda: float) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation (Schulman et al. 2016), time-major.

        A_t = delta_t + gamma lambda (1 - done_t) A_{t+1},   A_T = 0,
        done_t = terminated_t or truncated_t,

    with delta_t from :func:`td_errors`: on truncation the bootstrap V(s'_t) uses the real next
    observation, on termination it is zero, and the recursion never crosses an episode
    boundary. Returns ``(advantages, value_targets)`` with ``value_targets = A + V``.

    Args:
      rewards, values, next_values, terminated, truncated: ``[T, ...]``, equal shapes;
        ``next_values[t] = V(s'_t)``.
    """
    chex.assert_rank(rewards, {1, 2, 3})
    chex.assert_equal_shape([rewards, values, next_values, terminated, truncated])
    terminated = terminated.astype(rewards.dtype)
    continues = 1.0 - jnp.maximum(terminated, truncated.astype(rewards.dtype))
    deltas = td_errors(rewards, values, next_values, terminated, gamma)

    def backward(next_adv, x):
        delta, cont = x
        adv = delta + gamma * gae_lambda * cont * next_adv
        return adv, adv

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(rewards[0]), (deltas, continues),
                                 reverse=True, unroll=16)
    return advantages, advantages + values
