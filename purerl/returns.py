"""Return and advantage estimators. Time-major ``[T, ...]`` and truncation aware.

Notation: a transition at step t has reward r_t, value V(s_t) and a real next state
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


def reward_to_go(rewards: jax.Array, done: jax.Array, gamma: float) -> jax.Array:
    """Monte-Carlo reward-to-go, never bootstrapped (Sutton & Barto 2018, section 13.3):

        Q_t = sum_{t' >= t in t's episode} gamma^(t' - t) r_t' ,
        i.e.  Q_t = r_t + gamma (1 - done_t) Q_{t+1},   Q_T = 0.

    ``done_t`` (terminated or truncated) ends an episode; a segment's last step is treated as
    the end of its episode, so pass whole episodes.
    """
    chex.assert_equal_shape([rewards, done])
    continues = 1.0 - done.astype(rewards.dtype)

    def backward(next_q, x):
        r, cont = x
        q = r + gamma * cont * next_q
        return q, q

    _, q = jax.lax.scan(backward, jnp.zeros_like(rewards[0]), (rewards, continues),
                        reverse=True, unroll=16)
    return q


def episode_returns(rewards: jax.Array, done: jax.Array, gamma: float) -> jax.Array:
    """The discounted return R(tau) = sum_t gamma^t r_t of the episode each step belongs to,
    counted from that episode's first step in the batch, on every one of its steps (the weight
    of REINFORCE's whole-trajectory estimator, Williams 1992; gamma = 1 gives its undiscounted
    sum).
    """
    chex.assert_equal_shape([rewards, done])
    q = reward_to_go(rewards, done, gamma)
    starts = jnp.concatenate([jnp.ones_like(done[:1]), done[:-1]], axis=0)

    def forward(current, x):
        q_t, start = x
        current = jnp.where(start, q_t, current)
        return current, current

    _, total = jax.lax.scan(forward, q[0], (q, starts))
    return total


def n_step_returns(rewards: jax.Array, next_values: jax.Array, terminated: jax.Array,
                   truncated: jax.Array, gamma: float) -> jax.Array:
    """A3C's n-step returns G_t^(n) over a ``t_max``-step segment (Mnih et al. 2016,
    Algorithm S3), accumulated backwards exactly as in the worker's loop ``R <- r_i + gamma R``:

        R = 0                 after a terminal step (terminated_i),
        R = V(s'_i)           after a truncated step or the segment's last step (bootstrap
                              from the value of the real next observation),
        R = G_{i+1}           otherwise,
        G_i = r_i + gamma R.

    So the first step of a segment gets a t_max-step return and the last a one-step return.
    Args: ``[T, ...]`` arrays of equal shape; ``next_values[t] = V(s'_t)``.
    """
    chex.assert_equal_shape([rewards, next_values, terminated, truncated])
    terminated = jnp.asarray(terminated, bool)
    # bootstrap where the episode or the segment is cut
    cut = jnp.asarray(truncated, bool).at[-1].set(True)

    def backward(next_g, x):
        r, v_next, term, cut_t = x
        r_acc = jnp.where(term, 0.0, jnp.where(cut_t, v_next, next_g))
        g = r + gamma * r_acc
        return g, g

    _, g = jax.lax.scan(backward, jnp.zeros_like(rewards[0]),
                        (rewards, next_values, terminated, cut), reverse=True, unroll=16)
    return g


def q_lambda_returns(rewards: jax.Array, next_max_q: jax.Array, terminated: jax.Array,
                     truncated: jax.Array, gamma: float, q_lambda: float) -> jax.Array:
    """Peng's Q(lambda) returns over a rollout (Peng & Williams 1996), the targets of PQN
    (Gallici et al. 2025), computed backwards:

        G_t = r_t + gamma (1 - terminated_t) [(1 - lambda c_t) M_t + lambda c_t G_{t+1}],
        M_t = max_a Q(s'_t, a),
        c_t = 0 if the episode ends at t (terminated or truncated) or t = T - 1, else 1,

    i.e. an exponentially weighted mix of n-step Q-learning targets. The recursion never
    crosses an episode boundary; at a time-out or at the rollout's end it bootstraps from
    M_t of the real next observation, at a termination from zero. lambda = 0 gives one-step
    Q-learning targets r_t + gamma (1 - terminated_t) M_t; lambda = 1 the Monte-Carlo return
    of the rest of the episode inside the rollout, bootstrapped where it is cut.

    Args:
      rewards, next_max_q, terminated, truncated: ``[T, ...]``, equal shapes;
        ``next_max_q[t] = max_a Q(s'_t, a)``.
    """
    chex.assert_rank(rewards, {1, 2})
    chex.assert_equal_shape([rewards, next_max_q, terminated, truncated])
    not_terminal = 1.0 - terminated.astype(rewards.dtype)
    done = jnp.logical_or(terminated, truncated)
    carries = 1.0 - done.at[-1].set(True).astype(rewards.dtype)

    def backward(next_g, x):
        r, m, nt, c = x
        g = r + gamma * nt * (m + q_lambda * c * (next_g - m))
        return g, g

    _, g = jax.lax.scan(backward, jnp.zeros_like(rewards[0]),
                        (rewards, next_max_q, not_terminal, carries), reverse=True, unroll=16)
    return g
