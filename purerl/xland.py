"""XLand-MiniGrid's MiniGrid tasks as gymnax environments (optional extra:
``pip install -e ".[memory]"``).

XLand-MiniGrid (Nikulin et al. 2024, "XLand-MiniGrid: Scalable Meta-Reinforcement Learning
Environments in JAX", arXiv:2312.12044; the ``xminigrid`` package) reimplements MiniGrid
(Chevalier-Boisvert et al. 2023) in JAX: ``reset`` and ``step`` are pure functions that jit and
vmap like gymnax's. This module registers a few of its MiniGrid tasks with :mod:`purerl.envs` as
``xminigrid/<Name>`` (:data:`TASKS`): the partially observable memory task ``MiniGrid-MemoryS8``
(and its larger sizes S16 to S128: an object is shown at the start of a corridor, and at its end
the agent must walk to the matching one of two objects), and small standard tasks
(``MiniGrid-Empty-6x6`` ...) as sanity checks. ``purerl.envs.make("xminigrid/MiniGrid-MemoryS8")``
with ``memory="gru"`` trains a recurrent policy on it.

**Registration.** As for :mod:`purerl.playground`, the ids are listed by
:func:`purerl.envs.registered` only where the package ``xminigrid`` is installed (found with
``importlib.util.find_spec``, not imported: the import takes seconds); without it
``make("xminigrid/X")`` fails with a one-line :class:`MissingExtraError` naming the install
command, and an id outside :data:`TASKS` with a ``ValueError`` listing them.

**Adapter.** :class:`XLandEnv` wraps the raw task of ``xminigrid.make`` (none of its auto-reset
wrappers) behind gymnax's ``reset_env`` / ``step_env``; the auto-reset is gymnax's
``Environment.step``, so ``info["final_observation"]`` is the observation the step reached and
the reset uses the step's second key (``jax.random.split(key)[1]``), the first episode the
``reset`` key, each passed to xminigrid's ``reset(params, key)`` as is (xminigrid's steps are
deterministic). xminigrid marks the end of an episode with ``step_type == LAST`` and tells the
kinds apart by ``discount``: 0 on a termination (goal reached; in the Memory tasks also the wrong
object reached, with reward 0), 1 at its time limit (``step_num == max_steps``). Here
``terminated`` is ``discount == 0`` and ``truncated`` (:meth:`XLandEnv.is_truncated`) is
``time >= max_steps_in_episode`` and not terminated: a goal reached on the last step is a
termination. ``max_steps_in_episode`` is xminigrid's ``max_steps`` (MiniGrid's formulas: 5 w^2
for MemoryS<w>, 4 h w for Empty). The reward is xminigrid's, ``1 - 0.9 t / max_steps`` on
success at step t and 0 otherwise; xminigrid computes it with its own ``max_steps``, so change the
time limit with ``make(..., max_steps=N)`` rather than in the gymnax params.

**Observations** are float32 vectors of ``2 v^2 + 4`` entries: xminigrid's symbolic egocentric
view (``v x v`` cells of ``[tile id, colour id]``, ``v`` the task's ``view_size``: 3 for the
Memory tasks, 7 otherwise; integer codes below 13, the view rotated so that the agent faces up),
flattened in row-major order, followed by a one-hot of the agent's direction (up, right, down,
left), which MiniGrid's own observation also carries and xminigrid adds with its
``DirectionObservationWrapper``. Nothing else of the state (the agent's position, the object it
carries, the Memory task's answer) is observed. **Actions** are ``Discrete(6)``: forward, turn
right, turn left, pick up, put down, toggle (the Memory tasks treat pick up as toggle).
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from purerl import playground

__all__ = ["MissingExtraError", "PREFIX", "TASKS", "XLandEnv", "XLandParams", "XLandState",
           "available", "check_id", "factories", "flatten_obs", "make"]

PREFIX = "xminigrid/"
INSTALL_HINT = 'pip install -e ".[memory]"'
NUM_DIRECTIONS = 4
_MAX_CODE = 12  # xminigrid 0.9.3: 13 tile ids, 12 colour ids

# xminigrid ids registered as "xminigrid/<id>" (a test checks xminigrid registers them). Kept here
# so that listing the ids does not import the package.
TASKS: tuple[str, ...] = (
    "MiniGrid-MemoryS8", "MiniGrid-MemoryS16", "MiniGrid-MemoryS32", "MiniGrid-MemoryS64",
    "MiniGrid-MemoryS128", "MiniGrid-Empty-5x5", "MiniGrid-Empty-6x6",
    "MiniGrid-EmptyRandom-6x6", "MiniGrid-DoorKey-5x5")


class MissingExtraError(playground.MissingExtraError):
    """``xminigrid`` is not installed (an ``ImportError`` and a ``ValueError``, as
    :class:`purerl.playground.MissingExtraError`)."""


@functools.cache
def available() -> bool:
    """Whether ``xminigrid`` is installed (looked up, not imported)."""
    return importlib.util.find_spec("xminigrid") is not None


def check_id(name: Any) -> None:
    """Raise the specific error for an ``xminigrid/...`` id :func:`make` cannot make: the install
    hint when the extra is missing, the list of tasks for an unknown one. Returns for other ids
    and for valid ones."""
    if not isinstance(name, str) or not name.startswith(PREFIX):
        return
    if not available():
        raise MissingExtraError(f"environment {name!r} needs XLand-MiniGrid: {INSTALL_HINT}")
    task = name[len(PREFIX):]
    if task not in TASKS:
        close = difflib.get_close_matches(task, TASKS, n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(PREFIX + c for c in close)}" if close else ""
        raise ValueError(f"unknown XLand-MiniGrid task {task!r} in {name!r}{hint}. The "
                         f"registered ids are {', '.join(PREFIX + t for t in TASKS)}")


@struct.dataclass
class XLandState(environment.EnvState):
    """``time``: agent steps taken in the running episode; ``timestep``: xminigrid's
    ``TimeStep`` (its ``state`` holds the grid, the agent and the task's PRNG key)."""

    timestep: Any


@struct.dataclass
class XLandParams(environment.EnvParams):
    max_steps_in_episode: int = 100


class XLandEnv(environment.Environment[XLandState, XLandParams]):
    """An XLand-MiniGrid task behind the gymnax >= 1.0 API (see the module docstring).

    ``task``: an xminigrid id (``"MiniGrid-MemoryS8"``). ``view_size`` (odd, >= 3) and
    ``max_steps`` override the task's (``None``: keep them).
    """

    def __init__(self, task: str, view_size: int | None = None, max_steps: int | None = None):
        super().__init__()
        try:
            import xminigrid  # the optional extra; the import takes seconds
        except ImportError as e:
            raise MissingExtraError(f"XLand-MiniGrid is not importable ({e}): "
                                    f"{INSTALL_HINT}") from None
        overrides = {k: int(v) for k, v in (("view_size", view_size), ("max_steps", max_steps))
                     if v is not None}
        self._env, self._params = xminigrid.make(task, **overrides)
        if self._params.max_steps is None or int(self._params.max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {self._params.max_steps}")
        self.task = task
        self._num_actions = int(self._env.num_actions(self._params))
        self._obs_size = 2 * int(self._params.view_size) ** 2 + NUM_DIRECTIONS

    @property
    def raw_env(self) -> Any:
        """The wrapped xminigrid environment."""
        return self._env

    @property
    def raw_params(self) -> Any:
        """The wrapped environment's ``xminigrid.EnvParams`` (static: ``max_steps``,
        ``view_size``, the grid size)."""
        return self._params

    @property
    def default_params(self) -> XLandParams:
        return XLandParams(max_steps_in_episode=int(self._params.max_steps))

    def reset_env(self, key: jax.Array, params: XLandParams) -> tuple[jax.Array, XLandState]:
        timestep = _canonical(self._env.reset(self._params, key))
        return flatten_obs(timestep), XLandState(time=jnp.zeros((), jnp.int32),
                                                 timestep=timestep)

    def step_env(self, key: jax.Array, state: XLandState, action: jax.Array, params: XLandParams):
        """One xminigrid step (deterministic: ``key`` is unused); ``terminated`` where xminigrid's
        discount is 0."""
        action = jnp.reshape(action, ()).astype(jnp.int32)
        timestep = _canonical(self._env.step(self._params, state.timestep, action))
        terminated = timestep.discount == 0
        new_state = XLandState(time=state.time + 1, timestep=timestep)
        return flatten_obs(timestep), new_state, timestep.reward, terminated, {}

    def is_terminated(self, state: XLandState, params: XLandParams) -> jax.Array:
        return state.timestep.discount == 0

    def is_truncated(self, state: XLandState, params: XLandParams) -> jax.Array:
        """The time limit, and not a termination on the same step."""
        return (state.time >= params.max_steps_in_episode) & ~self.is_terminated(state, params)

    @property
    def name(self) -> str:
        return PREFIX + self.task

    @property
    def num_actions(self) -> int:
        return self._num_actions

    def action_space(self, params: XLandParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self._num_actions)

    def observation_space(self, params: XLandParams | None = None) -> spaces.Box:
        return spaces.Box(0.0, float(_MAX_CODE), (self._obs_size,), jnp.float32)


def flatten_obs(timestep: Any) -> jax.Array:
    """The observation of an xminigrid ``TimeStep``: its view flattened, then the one-hot
    direction, as one float32 vector (module docstring)."""
    view = jnp.ravel(timestep.observation).astype(jnp.float32)
    direction = jax.nn.one_hot(timestep.state.agent.direction, NUM_DIRECTIONS, dtype=jnp.float32)
    return jnp.concatenate([view, direction])


def _canonical(timestep: Any) -> Any:
    """``timestep`` with a float32 reward and discount and no weakly typed leaves, so reset and
    step timesteps have identical types (gymnax's auto-reset selects between them; a scan carry
    must not change type)."""
    timestep = timestep.replace(reward=jnp.asarray(timestep.reward, jnp.float32),
                                discount=jnp.asarray(timestep.discount, jnp.float32))
    return jax.tree.map(playground._strong, timestep)


def make(name_or_task: str, **kwargs: Any) -> tuple[XLandEnv, XLandParams]:
    """``(env, env_params)`` for ``"xminigrid/<Name>"`` or ``"<Name>"``; ``kwargs`` are
    :class:`XLandEnv`'s (``view_size``, ``max_steps``)."""
    name = name_or_task if name_or_task.startswith(PREFIX) else PREFIX + name_or_task
    check_id(name)
    env = XLandEnv(name[len(PREFIX):], **kwargs)
    return env, env.default_params


def factories() -> dict[str, Callable[..., tuple[XLandEnv, XLandParams]]]:
    """``{"xminigrid/<Name>": factory}`` for :mod:`purerl.envs`' registry; empty when the extra
    is not installed."""
    if not available():
        return {}
    return {PREFIX + task: functools.partial(make, PREFIX + task) for task in TASKS}
