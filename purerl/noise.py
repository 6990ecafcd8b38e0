"""Exploration: epsilon-greedy action selection and its linear schedule for the Q-learning
trainers (DQN, PQN), and noise for deterministic policies (DDPG, TD3): Gaussian,
Ornstein-Uhlenbeck, and TD3's clipped target-policy smoothing noise.

The Ornstein-Uhlenbeck process dx = theta (mu - x) dt + sigma dW (Uhlenbeck & Ornstein 1930;
DDPG's exploration noise, Lillicrap et al. 2016, experiment details) is simulated with the
Euler-Maruyama step

    x_{t+1} = x_t + theta (mu - x_t) dt + sigma sqrt(dt) eps_t,   eps_t ~ N(0, I),

so E[x_{t+1} | x_t] = x_t + theta (mu - x_t) dt and, for 0 < theta dt < 2, the stationary
variance of the discrete chain is sigma^2 dt / (1 - (1 - theta dt)^2) (-> sigma^2 / (2 theta),
the continuous process's, as dt -> 0). The state is one row per environment, reset to mu when
that environment's episode ends.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def gaussian(key: jax.Array, shape: tuple[int, ...], scale) -> jax.Array:
    """scale * N(0, I) of ``shape`` (``scale`` broadcasts, e.g. per action dimension)."""
    return scale * jax.random.normal(key, shape, jnp.float32)


def ou_init(shape: tuple[int, ...], mu=0.0) -> jax.Array:
    """The OU state at its mean, e.g. ``shape = (num_envs, action_dim)``."""
    return jnp.full(shape, mu, jnp.float32)


def ou_step(x: jax.Array, key: jax.Array, theta, sigma, dt, mu=0.0) -> jax.Array:
    """One Euler-Maruyama step x + theta (mu - x) dt + sigma sqrt(dt) N(0, I)."""
    eps = jax.random.normal(key, x.shape, x.dtype)
    return x + theta * (mu - x) * dt + sigma * jnp.sqrt(dt) * eps


def ou_stationary_std(theta, sigma, dt):
    """Stationary standard deviation of the discretised chain of :func:`ou_step`."""
    return sigma * jnp.sqrt(dt / (1.0 - (1.0 - theta * dt) ** 2))


def ou_reset(x: jax.Array, done: jax.Array, mu=0.0) -> jax.Array:
    """Rows of ``x`` (one per environment) whose episode ended (``done[i]``) go back to mu."""
    return jnp.where(done.reshape(done.shape + (1,) * (x.ndim - done.ndim)), mu, x)


def clipped_gaussian(key: jax.Array, shape: tuple[int, ...], scale, clip) -> jax.Array:
    """clip(scale * N(0, I), -clip, clip): TD3's target-policy smoothing noise (Fujimoto et
    al. 2018, section 5.3)."""
    return jnp.clip(gaussian(key, shape, scale), -clip, clip)


def perturb(action: jax.Array, noise: jax.Array, low, high) -> jax.Array:
    """clip(action + noise, low, high)."""
    return jnp.clip(action + noise, jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32))


def epsilon_schedule(env_steps, total_timesteps: int, epsilon_start, epsilon_end,
                     exploration_fraction):
    """Linear decay from ``epsilon_start`` at 0 env steps to ``epsilon_end`` at
    ``exploration_fraction * total_timesteps`` env steps, constant afterwards."""
    # a Python float: an int budget past int32 would not convert to JAX's (weak) int32
    horizon = jnp.maximum(exploration_fraction * float(total_timesteps), 1.0)
    progress = jnp.clip(env_steps / horizon, 0.0, 1.0)
    return epsilon_start + (epsilon_end - epsilon_start) * progress


def epsilon_greedy(key: jax.Array, q_values: jax.Array, epsilon) -> jax.Array:
    """argmax_a Q(s, a) with probability 1 - epsilon, else a uniformly random action."""
    explore_key, action_key = jax.random.split(key)
    greedy = jnp.argmax(q_values, -1)
    random = jax.random.randint(action_key, greedy.shape, 0, q_values.shape[-1], jnp.int32)
    explore = jax.random.uniform(explore_key, greedy.shape, jnp.float32) < epsilon
    return jnp.where(explore, random, greedy).astype(jnp.int32)


def greedy_or_epsilon_greedy(network: Any, config: Any, state: Any, obs: jax.Array,
                             key: jax.Array | None = None,
                             deterministic: bool = True) -> jax.Array:
    """A Q-learning agent's ``act`` (DQN, PQN): argmax_a Q(s, a); with
    ``deterministic=False``, epsilon-greedy (needs ``key``) at the state's current exploration
    rate, ``config.epsilon`` at ``state.run.env_steps`` with the hyperparameters in
    ``state.run.hparams``. ``network`` is a Q-network, ``state`` has ``params`` and ``run``."""
    q_values = network.apply(state.params, state.run.obs_norm(obs))
    if deterministic:
        return jnp.argmax(q_values, -1).astype(jnp.int32)
    cfg = config.with_hparams(state.run.hparams)
    return epsilon_greedy(key, q_values, cfg.epsilon(state.run.env_steps))


def max_q_value(network: Any, state: Any, obs: jax.Array) -> jax.Array:
    """A Q-learning agent's ``value``: max_a Q(s, a)."""
    return network.apply(state.params, state.run.obs_norm(obs)).max(-1)
