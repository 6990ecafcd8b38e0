"""gymnax environments: construction, a truncation-aware batched step, episode statistics,
running observation normalisation and action rescaling.

gymnax >= 1.0 ``env.step`` returns ``(obs, state, reward, terminated, truncated, info)`` and
auto-resets: ``obs`` is already the first observation of the next episode when the episode
ended, while ``info["final_observation"]`` is the real next observation s'. Targets bootstrap
from V(s') on truncation and from zero on termination, so every transition keeps both.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, NamedTuple

import chex
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces



class EnvSpec(NamedTuple):
    """What a trainer needs to know about an environment, as static Python values."""

    name: str
    obs_shape: tuple[int, ...]
    discrete: bool
    num_actions: int | None  # discrete: number of actions
    action_shape: tuple[int, ...]  # () for discrete, (d,) for continuous
    action_low: np.ndarray | None  # continuous: bounds, shape action_shape
    action_high: np.ndarray | None
    max_episode_steps: int

    @property
    def action_dim(self) -> int:
        return self.num_actions if self.discrete else int(np.prod(self.action_shape))

    @property
    def kind(self) -> str:
        return "discrete" if self.discrete else "continuous"


def make_env(name: str, **env_kwargs: Any) -> tuple[Any, Any, EnvSpec]:
    """Build a gymnax environment by id; returns ``(env, env_params, spec)``.

    Raises ValueError for an unknown id, naming the closest registered ids.
    """
    if not isinstance(name, str) or name not in gymnax.registered_envs:
        close = difflib.get_close_matches(str(name), gymnax.registered_envs, n=3, cutoff=0.3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown environment id {name!r}{hint}. "
                         f"All ids: {', '.join(gymnax.registered_envs)}")
    env, params = gymnax.make(name, **env_kwargs)
    return env, params, _spec(name, env, params)


def _spec(name: str, env, params) -> EnvSpec:
    obs_shape = tuple(int(s) for s in jax.eval_shape(env.reset, jax.random.key(0), params)[0].shape)
    act_space = env.action_space(params)
    max_steps = int(getattr(params, "max_steps_in_episode", 1000))
    if isinstance(act_space, spaces.Discrete):
        return EnvSpec(name, obs_shape, True, int(act_space.n), (), None, None, max_steps)
    if isinstance(act_space, spaces.Box):
        shape = tuple(int(s) for s in act_space.shape) or (1,)
        low = np.broadcast_to(np.asarray(act_space.low, np.float32), shape).copy()
        high = np.broadcast_to(np.asarray(act_space.high, np.float32), shape).copy()
        return EnvSpec(name, obs_shape, False, None, shape, low, high, max_steps)
    raise ValueError(f"environment {name!r} has an unsupported action space {act_space!r}")


# ---------------------------------------------------------------------------- batched stepping


@struct.dataclass
class EnvState:
    """Batched environment state plus running episode statistics (leading axis: num_envs)."""

    env_state: Any
    obs: jax.Array  # current (raw, unnormalised) observation
    episode_return: jax.Array  # return accumulated so far in the running episode
    episode_length: jax.Array


class Step(NamedTuple):
    """One batched environment transition (leading axis: num_envs)."""

    reward: jax.Array
    terminated: jax.Array  # the MDP reached a terminal state: bootstrap from zero
    truncated: jax.Array  # time limit (and not terminated): bootstrap from V(next_obs)
    next_obs: jax.Array  # the real next observation s' (not the reset observation)
    completed_return: jax.Array  # return of the episode that ended here, 0 elsewhere


def reset(env, env_params, key: chex.PRNGKey, num_envs: int) -> EnvState:
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(key, num_envs), env_params)
    zeros = jnp.zeros((num_envs,), jnp.float32)
    return EnvState(env_state, obs.astype(jnp.float32), zeros, zeros.astype(jnp.int32))


def step(env, env_params, key: chex.PRNGKey, state: EnvState, action: jax.Array
         ) -> tuple[EnvState, Step]:
    """Step every environment; auto-reset finished ones and report the real next observation."""
    num_envs = state.obs.shape[0]
    obs, env_state, reward, terminated, truncated, info = jax.vmap(
        env.step, in_axes=(0, 0, 0, None))(
        jax.random.split(key, num_envs), state.env_state, action, env_params)
    reward = reward.astype(jnp.float32)
    terminated = terminated.astype(bool)
    truncated = jnp.logical_and(truncated.astype(bool), ~terminated)
    done = terminated | truncated
    ep_return = state.episode_return + reward
    ep_length = state.episode_length + 1
    new_state = EnvState(
        env_state,
        obs.astype(jnp.float32),
        jnp.where(done, 0.0, ep_return),
        jnp.where(done, 0, ep_length),
    )
    return new_state, Step(reward, terminated, truncated,
                           info["final_observation"].astype(jnp.float32),
                           jnp.where(done, ep_return, 0.0))


# ---------------------------------------------------------------------------- observations


@struct.dataclass
class ObsNormState:
    """Running mean / variance of observations (Chan et al.'s parallel update)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def obs_norm_init(obs_shape: tuple[int, ...]) -> ObsNormState:
    return ObsNormState(jnp.zeros(obs_shape, jnp.float32), jnp.ones(obs_shape, jnp.float32),
                        jnp.asarray(1e-4, jnp.float32))


def obs_norm_update(state: ObsNormState, batch: jax.Array, mask: jax.Array | None = None
                    ) -> ObsNormState:
    """Merge a batch ``[..., *obs_shape]`` (only the observations where ``mask[...]`` is true, if
    given) into the running moments.

    mean' = mean + delta n_b / n, M2' = var n_a + var_b n_b + delta^2 n_a n_b / n.
    """
    obs_ndim = state.mean.ndim
    flat = batch.reshape((-1,) + batch.shape[batch.ndim - obs_ndim:])
    if mask is None:
        n_b = flat.shape[0]
        b_mean = flat.mean(0)
        b_var = flat.var(0)
    else:
        w = mask.reshape((-1,) + (1,) * obs_ndim).astype(flat.dtype)
        n_b = w.sum()
        b_mean = (w * flat).sum(0) / jnp.maximum(n_b, 1.0)
        b_var = (w * jnp.square(flat - b_mean)).sum(0) / jnp.maximum(n_b, 1.0)
    n = state.count + n_b
    delta = b_mean - state.mean
    mean = state.mean + delta * n_b / n
    m2 = state.var * state.count + b_var * n_b + delta**2 * state.count * n_b / n
    return ObsNormState(mean, m2 / n, n)


def obs_normalize(state: ObsNormState, obs: jax.Array, clip: float = 10.0) -> jax.Array:
    """(obs - mean) / sqrt(var + 1e-8), clipped to [-clip, clip]."""
    return jnp.clip((obs - state.mean) / jnp.sqrt(state.var + 1e-8), -clip, clip)


def normalizer(state: ObsNormState | None) -> Callable[[jax.Array], jax.Array]:
    """``obs -> obs_normalize(state, obs)``, or the identity when ``state`` is None."""
    if state is None:
        return lambda obs: obs
    return lambda obs: obs_normalize(state, obs)


# ---------------------------------------------------------------------------- actions


def random_action(spec: EnvSpec, key: chex.PRNGKey, num_envs: int) -> jax.Array:
    """One uniformly random action per environment: an int in [0, num_actions) for discrete
    spaces, uniform in [low, high] for continuous ones (off-policy warm-up)."""
    if spec.discrete:
        return jax.random.randint(key, (num_envs,), 0, spec.num_actions).astype(jnp.int32)
    return jax.random.uniform(key, (num_envs,) + tuple(spec.action_shape),
                              minval=jnp.asarray(spec.action_low),
                              maxval=jnp.asarray(spec.action_high))


def scale_action(unit_action: jax.Array, low, high) -> jax.Array:
    """Map an action in [-1, 1]^d to the bounds [low, high]: low + (a + 1)(high - low) / 2."""
    low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    return low + (unit_action + 1.0) * 0.5 * (high - low)
