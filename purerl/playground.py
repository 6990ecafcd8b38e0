"""MuJoCo Playground tasks as gymnax environments (optional extra: ``pip install -e ".[mujoco]"``).

MuJoCo Playground (Zakka et al. 2025, "MuJoCo Playground", arXiv:2502.08844) reimplements the
DeepMind Control suite (Tassa et al. 2018) and robot tasks on MJX, MuJoCo's JAX backend, so a
task's ``reset`` and ``step`` are pure JAX functions that jit and vmap like gymnax's. This module
registers its 25 DM-Control tasks with :mod:`purerl.envs` as ``playground/<TaskName>``
(``purerl.envs.make("playground/CheetahRun")``). The locomotion and manipulation tasks are left
out: they download robot models (MuJoCo Menagerie) the first time they load.

**Registration.** The ids are listed by :func:`purerl.envs.registered` only where the package
``mujoco_playground`` is installed (found without importing it: the import takes seconds, and
``registered()`` runs on every ``make``), so ``purerl list``, the trainers and the environment
tests see exactly the ids that work. Without the extra, ``make("playground/X")`` fails with a
one-line :class:`MissingExtraError` (a ``ValueError`` and an ``ImportError``) that names the
install command; an unknown task fails with a ``ValueError`` listing the DM-Control ids.

**Adapter.** :class:`PlaygroundEnv` wraps the *raw* task (``registry.load``), not
``mujoco_playground.wrapper.wrap_for_brax_training``: that wrapper's auto-reset replaces the
state of a finished episode by a cached first state in the same step and keeps no copy of the
last observation, so the real s' of the final transition is lost (mujoco_playground issue #305)
and every episode of an environment starts from the same state. Here instead, as gymnax >= 1.0
environments do:

* the state counts agent steps; ``terminated`` is the task's ``done`` (DM-Control tasks end only
  when the simulation diverges to NaN) and ``truncated = steps >= max_steps_in_episode and not
  terminated``: the time limit is the wrapper's, the raw tasks have none;
* ``info["final_observation"]`` is the observation reached by the step, while the returned
  observation and state are those of a fresh ``reset`` with the step's key when the episode
  ended (so every episode starts from a new random state);
* on a termination the final observation and reward have non-finite entries replaced by zeros:
  a diverged simulation reports NaNs, and ``0 * V(NaN)`` would still poison a critic's target.

**Cost.** A fresh reset is not free (CheetahRun's lets the model settle for 200 physics steps),
and under ``vmap`` a per-environment ``lax.cond`` runs both branches, so resetting that way would
cost a reset on every step (CheetahRun ran 200x slower). The auto-reset therefore has a
batching rule (``jax.custom_batching.custom_vmap``) that merges all vmapped axes and resets the
whole batch behind one ``lax.cond`` on "any environment done": the resets run only on steps
where some episode ended (then for every environment of the batch, the finished ones keeping
theirs), which with purerl's synchronised time limits is once per episode length, more often
once terminations desynchronise the environments.

**Observations.** A task's observation is an array or a dict of arrays; the adapter returns one
float32 vector: the ``"state"`` entry when the dict has one (the policy's input; entries such as
``"privileged_state"`` are for asymmetric critics), otherwise all entries flattened and
concatenated in sorted key order (JAX's order of dict leaves). Pixel observations are not
supported. **Actions** are float vectors of ``env.action_size`` within the model's actuator
``ctrlrange`` ([-1, 1] for every DM-Control task), or [-1, 1] for actuators without one.

**Time.** ``max_steps_in_episode`` is the task config's ``episode_length`` (1000 by default)
divided by its ``action_repeat`` (rounded up): one agent step repeats the action
``action_repeat`` times and sums the rewards, stopping early when the task ends. ``impl``
selects the MJX backend: ``"jax"`` (the default here) is about 13x faster on CPU than the
task's default ``"warp"``, which needs an NVIDIA GPU to pay off.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

__all__ = ["DM_CONTROL_TASKS", "MissingExtraError", "PREFIX", "PlaygroundEnv",
           "PlaygroundParams", "PlaygroundState", "available", "check_id", "factories", "make"]

PREFIX = "playground/"
INSTALL_HINT = 'pip install -e ".[mujoco]"'

# The DeepMind Control suite tasks of mujoco_playground 0.2 (its dm_control_suite.ALL_ENVS; a test
# checks the two agree). Kept here so that listing the ids does not import the package.
DM_CONTROL_TASKS: tuple[str, ...] = (
    "AcrobotSwingup", "AcrobotSwingupSparse", "BallInCup", "CartpoleBalance",
    "CartpoleBalanceSparse", "CartpoleSwingup", "CartpoleSwingupSparse", "CheetahRun",
    "FingerSpin", "FingerTurnEasy", "FingerTurnHard", "FishSwim", "HopperHop", "HopperStand",
    "HumanoidStand", "HumanoidWalk", "HumanoidRun", "PendulumSwingup", "PointMass",
    "ReacherEasy", "ReacherHard", "SwimmerSwimmer6", "WalkerRun", "WalkerStand", "WalkerWalk")


class MissingExtraError(ImportError, ValueError):
    """``mujoco_playground`` is not installed. Also a ``ValueError``, the error
    :func:`purerl.envs.make` raises for ids it cannot make (the CLI reports those in one line)."""


@functools.cache
def available() -> bool:
    """Whether ``mujoco_playground`` is installed (looked up, not imported)."""
    return importlib.util.find_spec("mujoco_playground") is not None


def check_id(name: Any) -> None:
    """Raise the specific error for a ``playground/...`` id :func:`make` cannot make: the
    install hint when the extra is missing, the list of tasks for an unknown one. Returns for
    other ids and for valid ones."""
    if not isinstance(name, str) or not name.startswith(PREFIX):
        return
    if not available():
        raise MissingExtraError(f"environment {name!r} needs MuJoCo Playground (Python >= 3.11): "
                                f"{INSTALL_HINT}")
    task = name[len(PREFIX):]
    if task not in DM_CONTROL_TASKS:
        lower = {t.lower(): t for t in DM_CONTROL_TASKS}
        close = difflib.get_close_matches(task.lower(), lower, n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(PREFIX + lower[c] for c in close)}" if close else ""
        raise ValueError(f"unknown MuJoCo Playground task {task!r} in {name!r}{hint}. The "
                         f"DeepMind Control suite ids are "
                         f"{', '.join(PREFIX + t for t in DM_CONTROL_TASKS)} (locomotion and "
                         "manipulation tasks are not registered)")


@struct.dataclass
class PlaygroundState(environment.EnvState):
    """``time``: agent steps taken in the running episode; ``pstate``: the task's own
    ``mujoco_playground.State`` (MJX data, observation, reward, done, metrics, and ``info``, which
    carries the task's own PRNG key for stochastic steps)."""

    pstate: Any


@struct.dataclass
class PlaygroundParams(environment.EnvParams):
    max_steps_in_episode: int = 1000


class PlaygroundEnv(environment.Environment[PlaygroundState, PlaygroundParams]):
    """A MuJoCo Playground task behind the gymnax >= 1.0 API (see the module docstring).

    ``task``: a Playground registry name (``"CartpoleBalance"``). ``episode_length`` and
    ``action_repeat`` override the task config's (``None``: keep them); ``impl`` is the MJX
    backend; ``config_overrides`` are further task config entries (``registry.load``'s).
    """

    def __init__(self, task: str, episode_length: int | None = None,
                 action_repeat: int | None = None, impl: str = "jax",
                 config_overrides: Mapping[str, Any] | None = None):
        super().__init__()
        self._env, self.episode_length, self.action_repeat = _load_task(
            task, episode_length, action_repeat, impl, config_overrides)
        self.task = task
        self._action_size = int(self._env.action_size)
        self._low, self._high = _actuator_bounds(self._env.mj_model, self._action_size)
        self._obs_size = int(np.prod(jax.eval_shape(self.reset_env, jax.random.key(0),
                                                    self.default_params)[0].shape))
        self._reset_where = _batched_reset_where(
            lambda key: self.reset_env(key, self.default_params))

    @property
    def raw_env(self) -> Any:
        """The wrapped Playground task (``mujoco_playground.MjxEnv``)."""
        return self._env

    @property
    def default_params(self) -> PlaygroundParams:
        return PlaygroundParams(max_steps_in_episode=math.ceil(self.episode_length
                                                               / self.action_repeat))

    @functools.partial(jax.jit, static_argnames=("self",))
    def step(self, key: jax.Array, state: PlaygroundState, action: jax.Array,
             params: PlaygroundParams | None = None):
        """gymnax's auto-resetting step, with ``truncated`` excluding terminations, the final
        observation and reward sanitised on termination, and the reset computed only when some
        environment of the (vmapped) batch is done (module docstring)."""
        params = self.default_params if params is None else params
        action = jnp.reshape(action, (self._action_size,)).astype(state.pstate.data.ctrl.dtype)
        pstate, reward = _repeat_step(self._env.step, state.pstate, action, self.action_repeat)
        terminated = pstate.done > 0.5
        time = state.time + 1
        truncated = (time >= params.max_steps_in_episode) & ~terminated
        done = terminated | truncated
        final_obs = flatten_obs(pstate.obs)
        final_obs = jnp.where(terminated, _finite(final_obs), final_obs)
        reward = jnp.where(terminated, _finite(reward), reward).astype(jnp.float32)
        obs, new_state = self._reset_where(  # one reset for a whole vmapped batch ("Cost")
            done, key, (final_obs, PlaygroundState(time=time, pstate=pstate)))
        info = {"terminated": terminated, "truncated": truncated, "final_observation": final_obs}
        return obs, new_state, reward, terminated, truncated, info

    def reset_env(self, key: jax.Array, params: PlaygroundParams
                  ) -> tuple[jax.Array, PlaygroundState]:
        pstate = jax.tree.map(_strong, self._env.reset(key))
        return flatten_obs(pstate.obs), PlaygroundState(time=jnp.zeros((), jnp.int32),
                                                        pstate=pstate)

    def step_env(self, key, state, action, params):
        """Unused: :meth:`step` is overridden (gymnax's would count a termination at the time
        limit as a truncation too)."""
        raise NotImplementedError("PlaygroundEnv.step does the whole transition")

    def is_terminated(self, state: PlaygroundState, params: PlaygroundParams) -> jax.Array:
        return state.pstate.done > 0.5

    @property
    def name(self) -> str:
        return PREFIX + self.task

    @property
    def num_actions(self) -> int:
        return self._action_size

    def action_space(self, params: PlaygroundParams | None = None) -> spaces.Box:
        return spaces.Box(self._low, self._high, (self._action_size,), jnp.float32)

    def observation_space(self, params: PlaygroundParams | None = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (self._obs_size,), jnp.float32)


def _load_task(task: str, episode_length: int | None, action_repeat: int | None, impl: str,
               config_overrides: Mapping[str, Any] | None) -> tuple[Any, int, int]:
    """``(raw task, episode_length, action_repeat)``: ``registry.load``'s task with its default
    config updated by ``impl``, ``config_overrides`` and the two lengths (``None``: the task's),
    and the final config's lengths."""
    try:
        from mujoco_playground import registry  # the optional extra; the import takes seconds
    except ImportError as e:
        raise MissingExtraError(f"MuJoCo Playground is not importable ({e}): "
                                f"{INSTALL_HINT}") from None
    config = registry.get_default_config(task)
    overrides = {"impl": impl, **(config_overrides or {})}
    if episode_length is not None:
        overrides["episode_length"] = int(episode_length)
    if action_repeat is not None:
        overrides["action_repeat"] = int(action_repeat)
    # applied here rather than by load(), so `config` is the task's final configuration
    config.update_from_flattened_dict(overrides)
    env = registry.load(task, config=config)
    episode_length, action_repeat = int(config.episode_length), int(config.action_repeat)
    if episode_length < 1 or action_repeat < 1:
        raise ValueError(f"episode_length and action_repeat must be >= 1, got "
                         f"{episode_length} and {action_repeat}")
    return env, episode_length, action_repeat


def _repeat_step(task_step: Callable[[Any, jax.Array], Any], pstate: Any, action: jax.Array,
                 repeat: int) -> tuple[Any, jax.Array]:
    """``repeat`` steps of the task (``task_step(pstate, action)``) with the same action; the
    summed reward. After the task ends within the repeat, the state stays at its end and no
    more reward accrues."""
    if repeat == 1:
        nxt = jax.tree.map(_like, task_step(pstate, action), pstate)
        return nxt, nxt.reward.astype(jnp.float32)

    def body(carry, _):
        ps, total = carry
        nxt = jax.tree.map(_like, task_step(ps, action), ps)
        ended = ps.done > 0.5
        total = total + jnp.where(ended, 0.0, nxt.reward.astype(jnp.float32))
        ps = jax.tree.map(lambda old, new: jax.lax.select(ended, old, new), ps, nxt)
        return (ps, total), None

    (pstate, total), _ = jax.lax.scan(body, (pstate, jnp.zeros((), jnp.float32)), None,
                                      length=repeat)
    return pstate, total


def flatten_obs(obs: Any) -> jax.Array:
    """A Playground observation as one float32 vector: the ``"state"`` entry of a dict when
    present, else every leaf flattened and concatenated in sorted key order."""
    if isinstance(obs, Mapping) and "state" in obs:
        obs = obs["state"]
    leaves = jax.tree.leaves(obs)
    return jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in leaves])


def _actuator_bounds(mj_model: Any, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The actuators' ``ctrlrange`` where they are control-limited, else [-1, 1]."""
    low, high = -np.ones(size, np.float32), np.ones(size, np.float32)
    ctrlrange = np.asarray(getattr(mj_model, "actuator_ctrlrange", np.zeros((0, 2))), np.float32)
    limited = np.asarray(getattr(mj_model, "actuator_ctrllimited", np.zeros(0)), bool)
    if ctrlrange.shape == (size, 2) and limited.shape == (size,):
        low = np.where(limited, ctrlrange[:, 0], low).astype(np.float32)
        high = np.where(limited, ctrlrange[:, 1], high).astype(np.float32)
    return low, high


def _batched_reset_where(reset: Callable[[jax.Array], Any]) -> Callable[..., Any]:
    """``reset_where(done, key, stepped)``: one environment's ``stepped`` (a pytree), or
    ``reset(key)`` where ``done``, computing resets only when some environment of the (vmapped)
    batch is done.

    A ``lax.cond`` on one environment's ``done`` becomes a ``select`` under ``vmap``, so both
    branches would run on every step, and some tasks' resets are expensive (CheetahRun's settles
    the model for 200 physics steps). So the environment is made a batch of one, B = 1, and
    ``rows_where`` (rows of a batch with leading axis B replaced by ``reset(keys[i])`` where
    ``done``) has a batching rule that merges every vmapped axis into B and recurses: the
    condition is ``any(done)`` over the whole batch, however many ``vmap`` levels
    (environments, seeds, hyperparameters) surround it.
    """

    @jax.custom_batching.custom_vmap
    def rows_where(done: jax.Array, keys: jax.Array, stepped: Any) -> Any:
        def with_resets():
            fresh = jax.vmap(reset)(keys)
            return jax.tree.map(lambda r, s: _select_rows(done, _like(r, s), s), fresh, stepped)

        return jax.lax.cond(jnp.any(done), with_resets, lambda: stepped)

    @rows_where.def_vmap
    def batched(axis_size: int, in_batched: Any, done: jax.Array, keys: jax.Array, stepped: Any
                ) -> tuple[Any, Any]:
        args = jax.tree.map(
            lambda x, b: x if b else jnp.broadcast_to(x, (axis_size, *jnp.shape(x))),
            (done, keys, stepped), tuple(in_batched))
        lead = args[0].shape[:2]  # (vmapped axis, B)
        merged = jax.tree.map(lambda x: jnp.reshape(x, (lead[0] * lead[1], *x.shape[2:])), args)
        out = rows_where(*merged)
        out = jax.tree.map(lambda x: jnp.reshape(x, (*lead, *x.shape[1:])), out)
        return out, jax.tree.map(lambda _: True, out)

    def reset_where(done: jax.Array, key: jax.Array, stepped: Any) -> Any:
        return jax.tree.map(lambda x: x[0], rows_where(
            done[None], key[None], jax.tree.map(lambda x: x[None], stepped)))

    return reset_where


def _select_rows(rows: jax.Array, on_true: jax.Array, on_false: jax.Array) -> jax.Array:
    """Row i of ``on_true`` where ``rows[i]``, else of ``on_false`` (PRNG key arrays too)."""
    pred = jnp.reshape(rows, rows.shape + (1,) * (jnp.ndim(on_false) - 1))
    return jax.lax.select(jnp.broadcast_to(pred, jnp.shape(on_false)), on_true, on_false)


def _finite(x: jax.Array) -> jax.Array:
    return jnp.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def _strong(x: Any) -> Any:
    """``x`` without JAX's weak type, so reset and step states have identical types (some tasks
    return a weakly typed reward or metric from one and not the other; a scan carry must not
    change type)."""
    if isinstance(x, jax.Array) and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jnp.asarray(x, x.dtype)
    return x


def _like(x: Any, ref: Any) -> Any:
    """``x`` with ``ref``'s dtype (strongly typed); PRNG keys unchanged."""
    dtype = getattr(ref, "dtype", None)
    if dtype is None or jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return x
    return jnp.asarray(x, dtype)


def make(name_or_task: str, **kwargs: Any) -> tuple[PlaygroundEnv, PlaygroundParams]:
    """``(env, env_params)`` for ``"playground/<Task>"`` or ``"<Task>"``; ``kwargs`` are
    :class:`PlaygroundEnv`'s (``episode_length``, ``action_repeat``, ``impl``,
    ``config_overrides``)."""
    name = name_or_task if name_or_task.startswith(PREFIX) else PREFIX + name_or_task
    check_id(name)
    env = PlaygroundEnv(name[len(PREFIX):], **kwargs)
    return env, env.default_params


def factories() -> dict[str, Callable[..., tuple[PlaygroundEnv, PlaygroundParams]]]:
    """``{"playground/<Task>": factory}`` for :mod:`purerl.envs`' registry; empty when the extra
    is not installed."""
    if not available():
        return {}
    return {PREFIX + task: functools.partial(make, PREFIX + task) for task in DM_CONTROL_TASKS}
