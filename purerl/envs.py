"""Environments: construction by id, and a truncation-aware batched step that keeps episode
statistics.

gymnax >= 1.0 ``env.step`` returns ``(obs, state, reward, terminated, truncated, info)`` and
auto-resets: ``obs`` is already the first observation of the next episode when the episode
ended, while ``info["final_observation"]`` is the real next observation s'. Targets bootstrap
from V(s') on truncation and from zero on termination, so every transition keeps both.

:func:`make` returns an :class:`Env`: the environment, its parameters and its
:class:`~purerl.spaces.EnvSpec` in one value, with batched ``reset`` and ``step``. Ids are
gymnax's (``gymnax.registered_envs``) plus purerl's probe environments (:mod:`purerl.probes`),
its partially observable tasks (:mod:`purerl.pomdp`), with the ``mujoco`` extra installed
MuJoCo Playground's DeepMind Control suite tasks as ``playground/<Task>``
(:mod:`purerl.playground`), and with the ``memory`` extra XLand-MiniGrid's tasks as
``xminigrid/<Name>`` (:mod:`purerl.xland`).
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, NamedTuple

import chex
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from purerl import playground, pomdp, prng, probes, xland
from purerl.spaces import EnvSpec

__all__ = ["Env", "EnvSpec", "EnvState", "Step", "TrainerEnv", "make", "make_env", "registered",
           "reset", "step", "trainer_env"]

# purerl's own ids -> a factory returning (gymnax environment, env params)
_EXTRA: dict[str, Callable[..., tuple[Any, Any]]] = {
    name: (lambda kind=kind, continuous=continuous: probes.make(kind, continuous))
    for name, (kind, continuous) in probes.IDS.items()}
# partially observable tasks: stateless classic control, MemoryChain at several memory lengths
_EXTRA.update(pomdp.factories())
# MuJoCo Playground's DM-Control tasks, "playground/<Task>", only where the optional extra is
# installed (purerl.playground explains why)
_EXTRA.update(playground.factories())
_EXTRA.update(xland.factories())  # "xminigrid/<Name>", with the memory extra (purerl.xland)


def registered() -> list[str]:
    """Every environment id :func:`make` accepts."""
    return [*gymnax.registered_envs, *_EXTRA]


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


class Env(NamedTuple):
    """A gymnax-API environment, its parameters and its spec."""

    env: Any
    params: Any
    spec: EnvSpec

    def reset(self, key: chex.PRNGKey, num_envs: int) -> EnvState:
        return reset(self.env, self.params, key, num_envs)

    def step(self, key: chex.PRNGKey, state: EnvState, action: jax.Array
             ) -> tuple[EnvState, Step]:
        return step(self.env, self.params, key, state, action)


def make(name: str, **env_kwargs: Any) -> Env:
    """The environment ``name``; ValueError for an unknown id, naming the closest ids, and for
    keyword arguments the environment does not take."""
    ids = registered()
    if not isinstance(name, str) or name not in ids:
        playground.check_id(name)  # a playground/ id: the install hint, or the list of its tasks
        xland.check_id(name)  # the same for xminigrid/ ids
        close = difflib.get_close_matches(str(name), ids, n=3, cutoff=0.3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown environment id {name!r}{hint} ('purerl list' lists all "
                         f"{len(ids)} ids)")
    _check_keywords(name, env_kwargs)
    try:
        env, params = _EXTRA[name](**env_kwargs) if name in _EXTRA else gymnax.make(
            name, **env_kwargs)
    except TypeError as e:
        if not env_kwargs:
            raise
        raise ValueError(f"environment {name!r} does not take the keyword arguments "
                         f"{sorted(env_kwargs)}: {e}") from None
    return Env(env, params, _spec(name, env, params))


def keywords(name: str) -> tuple[str, ...] | None:
    """The keyword arguments :func:`make` passes on for the registered id ``name`` (the
    environment constructor's parameters), or None when it takes any keyword."""
    if name in probes.IDS or name in pomdp.STATELESS:
        return ()  # the factory's own defaults (kind, continuous) are not options
    if name.startswith(xland.PREFIX) and name in _EXTRA:
        target = xland.XLandEnv
    elif name in _EXTRA:  # playground: functools.partial(playground.make, id)
        target = getattr(playground, "PlaygroundEnv", _EXTRA[name])
    else:
        target = type(gymnax.make(name)[0])  # gymnax's factories are the env classes
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the constructor judge
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                          p.KEYWORD_ONLY)
                 and p.name not in ("self", "task", "name"))


def _check_keywords(name: str, env_kwargs: dict[str, Any]) -> None:
    """ValueError naming the valid keywords (and the closest one) for an unknown keyword."""
    if not env_kwargs:
        return
    valid = keywords(name)
    if valid is None:
        return
    unknown = sorted(set(env_kwargs) - set(valid))
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        takes = (f"valid keywords: {', '.join(valid)}" if valid else
                 "it takes no keyword arguments")
        # gymnax keeps episode settings in its EnvParams, which make() does not take
        note = "" if name in _EXTRA else (" (gymnax episode settings such as "
                                          "max_steps_in_episode are env params, not keywords)")
        raise ValueError(f"environment {name!r} does not take the keyword argument "
                         f"{unknown[0]!r}{hint}; {takes}{note}")


class TrainerEnv(NamedTuple):
    """A trainer's environment, from :func:`trainer_env`."""

    env: Env  # the whole run's environments: reset in init, evaluation
    step_env: Any  # what the update steps: ``env``, or on a data-parallel device its share
    spec: EnvSpec


def trainer_env(config: Any, data_parallel: Any = None,
                discrete: bool | None = None) -> TrainerEnv:
    """The environment ``config.env`` of a trainer's Config, checked against the trainer:
    ValueError when the trainer takes only ``discrete`` (True) or only continuous (False)
    actions and the environment has the other kind, or when ``config`` sets an option of the
    other action space (``config.check_action_space``). ``data_parallel``: a
    :class:`purerl.parallel.DataParallel` (only its ``env`` method is used, so this module
    stays below it), whose ``env(env)`` is ``step_env``; None: one device, ``step_env`` is
    ``env``."""
    env = make(config.env)
    spec = env.spec
    if discrete and not spec.discrete:
        raise ValueError(f"{config.algo} needs a discrete action space, but {config.env} has "
                         "continuous actions; use ddpg, td3 or another continuous-action trainer")
    if discrete is False and spec.discrete:
        raise ValueError(f"{config.algo} needs continuous actions, but {config.env} has "
                         f"discrete actions ({spec.num_actions} of them); use a continuous "
                         "environment such as Pendulum-v1")
    config.check_action_space(spec.discrete, config.env)
    return TrainerEnv(env, env if data_parallel is None else data_parallel.env(env), spec)


def make_env(name: str, **env_kwargs: Any) -> tuple[Any, Any, EnvSpec]:
    """``(env, env_params, spec)`` of :func:`make`."""
    return tuple(make(name, **env_kwargs))  # type: ignore[return-value]


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


def reset(env, env_params, key: chex.PRNGKey, num_envs: int) -> EnvState:
    # keys an environment keeps in its state (MuJoCo Playground's) are then of the same
    # generator as the training key's, whichever key started the run (purerl.prng)
    key = prng.unrolled(key)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(key, num_envs), env_params)
    zeros = jnp.zeros((num_envs,), jnp.float32)
    return EnvState(env_state, obs.astype(jnp.float32), zeros, zeros.astype(jnp.int32))


def step(env, env_params, key: chex.PRNGKey, state: EnvState, action: jax.Array,
         keys: jax.Array | None = None) -> tuple[EnvState, Step]:
    """Step every environment; auto-reset finished ones and report the real next observation.
    Environment i steps with ``jax.random.split(key, num_envs)[i]``, or with ``keys[i]`` when
    ``keys`` is given (a data-parallel device passes its slice of the whole run's split)."""
    num_envs = state.obs.shape[0]
    if jnp.issubdtype(action.dtype, jnp.floating):
        # JAX's default float (float64 under JAX_ENABLE_X64), as gymnax's own states use it
        action = action.astype(jnp.result_type(float))
    obs, env_state, reward, terminated, truncated, info = jax.vmap(
        env.step, in_axes=(0, 0, 0, None))(
        jax.random.split(prng.unrolled(key), num_envs) if keys is None else prng.unrolled(keys),
        state.env_state, action, env_params)
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
