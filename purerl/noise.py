"""Exploration noise for deterministic policies (DDPG, TD3): Gaussian, Ornstein-Uhlenbeck, and
TD3's clipped target-policy smoothing noise.

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
