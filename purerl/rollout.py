"""Experience collection inside the compiled program: fixed-length on-policy rollouts (a scan over
time), whole-episode rollouts, and deterministic evaluation episodes."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from purerl import envs, returns

# policy(obs, key) -> (action to store, action for the env)
Policy = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def stochastic_policy(dist_fn: Callable[[jax.Array], Any],
                      sample: Callable[[Any, jax.Array], jax.Array] | None = None) -> Policy:
    """The :data:`Policy` that samples from ``dist_fn(obs)`` (a :mod:`purerl.distributions`
    pytree), storing the raw sample and sending its environment action. ``sample(dist, key)``
    draws the sample (default ``dist.sample(key)``; a data-parallel device's rows of the whole
    run's draw, :meth:`purerl.parallel.DataParallel.sample`)."""

    def policy(obs: jax.Array, key: jax.Array):
        dist = dist_fn(obs)
        u = dist.sample(key) if sample is None else sample(dist, key)
        return u, dist.env_action(u)

    return policy


def policy_act(dist_fn: Callable[[Any, jax.Array], Any]) -> Callable[..., jax.Array]:
    """A trainer's ``act(state, obs, key=None, deterministic=True)`` for a policy
    ``dist_fn(state, normalised_obs) -> dist``: the distribution's mode, or a sample, as an
    environment action; observations go through the state's normaliser first."""

    def act(state: Any, obs: jax.Array, key: jax.Array | None = None,
            deterministic: bool = True) -> jax.Array:
        dist = dist_fn(state, state.run.obs_norm(obs))
        return dist.env_action(dist.mode() if deterministic else dist.sample(key))

    return act


class Trajectory(NamedTuple):
    """A time-major batch ``[T, num_envs, ...]`` of transitions; observations are raw."""

    obs: jax.Array
    action: jax.Array  # as stored by the policy (e.g. pre-squash Gaussian sample)
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array  # real next observation s'_t (differs from obs[t + 1] where done)
    completed_return: jax.Array  # return of an episode that ended at t, else 0

    @property
    def done(self) -> jax.Array:
        return self.terminated | self.truncated


def collect(env: envs.Env, policy: Policy, key: jax.Array, env_state: envs.EnvState,
            num_steps: int) -> tuple[envs.EnvState, Trajectory]:
    """Run ``policy`` for ``num_steps`` steps in every environment (a ``lax.scan``).

    Only the policy and the environment run inside the loop; values and log-probabilities are
    computed afterwards on the whole batch, where they vectorise.
    """

    def one_step(state: envs.EnvState, step_key):
        act_key, env_key = jax.random.split(step_key)
        stored, env_action = policy(state.obs, act_key)
        next_state, tr = env.step(env_key, state, env_action)
        return next_state, Trajectory(state.obs, stored, tr.reward, tr.terminated, tr.truncated,
                                      tr.next_obs, tr.completed_return)

    return jax.lax.scan(one_step, env_state, jax.random.split(key, num_steps))


# recurrent policy(carry, obs, start, key) -> (carry, action to store, action for the env), with
# start [num_envs] true where obs begins an episode (the carry is reset there first)
RecurrentPolicy = Callable[[Any, jax.Array, jax.Array, jax.Array],
                           tuple[Any, jax.Array, jax.Array]]


class Memory(NamedTuple):
    """A recurrent policy's state in every environment between rollouts."""

    carry: Any  # the cell's carry after the last step ([num_envs, ...] leaves)
    start: jax.Array  # [num_envs] bool: the current observation begins an episode

    @classmethod
    def create(cls, carry: Any) -> "Memory":
        """The memory of freshly reset environments."""
        num_envs = jax.tree.leaves(carry)[0].shape[0]
        return cls(carry, jnp.ones((num_envs,), bool))


class Sequences(NamedTuple):
    """A recurrent policy's rollout: what an update needs to replay it exactly."""

    traj: Trajectory
    start: jax.Array  # [T, num_envs]: obs[t] begins an episode (the carry was reset there)
    carry: Any  # the carry the rollout began with ([num_envs, ...] leaves)


def collect_recurrent(env: envs.Env, policy: RecurrentPolicy, key: jax.Array,
                      env_state: envs.EnvState, memory: Memory, num_steps: int
                      ) -> tuple[envs.EnvState, Memory, Sequences]:
    """:func:`collect` for a recurrent policy: the carry goes through the scan with the
    environments, reset where an episode begins (after a termination **or** a truncation), and
    the rollout keeps the reset flags and the carry it started from. Same keys as
    :func:`collect`."""

    def one_step(c: tuple[envs.EnvState, Memory], step_key):
        state, mem = c
        act_key, env_key = jax.random.split(step_key)
        carry, stored, env_action = policy(mem.carry, state.obs, mem.start, act_key)
        next_state, tr = env.step(env_key, state, env_action)
        row = Trajectory(state.obs, stored, tr.reward, tr.terminated, tr.truncated, tr.next_obs,
                         tr.completed_return)
        return (next_state, Memory(carry, tr.terminated | tr.truncated)), (row, mem.start)

    (env_state, after), (traj, start) = jax.lax.scan(
        one_step, (env_state, memory), jax.random.split(key, num_steps))
    return env_state, after, Sequences(traj, start, memory.carry)


def recurrent_policy(step_fn: Callable[[Any, jax.Array, jax.Array], tuple[Any, Any]],
                     sample: Callable[[Any, jax.Array], jax.Array] | None = None
                     ) -> RecurrentPolicy:
    """The :data:`RecurrentPolicy` sampling from ``step_fn(carry, obs, start) -> (carry,
    dist)``, as :func:`stochastic_policy` does."""

    def policy(carry, obs, start, key):
        carry, dist = step_fn(carry, obs, start)
        u = dist.sample(key) if sample is None else sample(dist, key)
        return carry, u, dist.env_action(u)

    return policy


def recurrent_act(step_fn: Callable[[Any, Any, jax.Array], tuple[Any, Any]]
                  ) -> Callable[..., tuple[jax.Array, Any]]:
    """A recurrent trainer's ``act(state, obs, carry, key=None, deterministic=True) -> (action,
    carry)`` for ``step_fn(state, carry, normalised_obs) -> (carry, dist)``: :func:`policy_act`
    with the carry passed in and returned (the caller resets it between episodes)."""

    def act(state: Any, obs: jax.Array, carry: Any, key: jax.Array | None = None,
            deterministic: bool = True) -> tuple[jax.Array, Any]:
        carry, dist = step_fn(state, carry, state.run.obs_norm(obs))
        return dist.env_action(dist.mode() if deterministic else dist.sample(key)), carry

    return act


def gae_targets(traj: Trajectory, value_fn: Callable[[jax.Array], jax.Array],
                norm: Callable[[jax.Array], jax.Array], gamma, gae_lambda
                ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(obs, values, advantages, targets)`` of a rollout: the normalised observations, V(s_t)
    and GAE advantages and value targets (:func:`purerl.returns.gae`, bootstrapping from
    V(s'_t) of the real next observation), with ``value_fn`` applied to the whole batch."""
    obs = norm(traj.obs)
    values, next_values = value_fn(obs), value_fn(norm(traj.next_obs))
    advantages, targets = returns.gae(traj.reward, values, next_values, traj.terminated,
                                      traj.truncated, gamma, gae_lambda)
    return obs, values, advantages, targets


def collect_episodes(env: envs.Env, policy: Policy, key: jax.Array, num_episodes: int
                     ) -> tuple[Trajectory, jax.Array]:
    """One whole episode in each of ``num_episodes`` freshly reset environments.

    Returns a ``[max_steps, num_episodes]`` trajectory (``max_steps``: the environment's time
    limit, so every episode ends inside the buffer, by termination or truncation) and a boolean
    ``mask`` that is true on the steps of each environment's first episode; steps after it
    ended (the environment auto-resets) are padding to be masked out.

    A ``lax.while_loop`` stops as soon as every episode has ended, so short early episodes cost
    few steps; step t's randomness is ``fold_in(key, t)``, so the result does not depend on how
    many steps the loop ran past an episode's end (e.g. under ``vmap``).
    """
    return _collect_episodes(env, policy, key, num_episodes)


def _collect_episodes(env: envs.Env, policy: Any, key: jax.Array, num_episodes: int,
                      memory: Any = None) -> tuple[Trajectory, jax.Array]:
    """:func:`collect_episodes`, and with a recurrent policy's initial carry ``memory``
    :func:`collect_episodes_recurrent` (the carry goes through the loop; ``None`` carries
    nothing, so the feed-forward program is unchanged)."""
    max_steps = env.spec.max_episode_steps
    reset_key, key = jax.random.split(key)
    state = env.reset(reset_key, num_episodes)
    n = (num_episodes,)

    def act(memory, obs, t, act_key):
        if memory is None:
            return (None, *policy(obs, act_key))
        return policy(memory, obs, jnp.broadcast_to(t == 0, n), act_key)

    example = jax.eval_shape(act, memory, state.obs, 0, key)[1]

    def buffer(shape, dtype):
        return jnp.zeros((max_steps,) + tuple(shape), dtype)

    init_traj = Trajectory(
        obs=buffer(state.obs.shape, state.obs.dtype),
        action=buffer(example.shape, example.dtype),
        reward=buffer(n, jnp.float32),
        terminated=buffer(n, bool),
        truncated=buffer(n, bool),
        next_obs=buffer(state.obs.shape, state.obs.dtype),
        completed_return=buffer(n, jnp.float32),
    )

    class Carry(NamedTuple):
        state: Any
        traj: Trajectory
        mask: jax.Array
        active: jax.Array
        t: jax.Array
        memory: Any  # a recurrent policy's carry, or None

    def cond(c: Carry):
        return jnp.logical_and(c.t < max_steps, jnp.any(c.active))

    def body(c: Carry):
        act_key, env_key = jax.random.split(jax.random.fold_in(key, c.t))
        memory, stored, env_action = act(c.memory, c.state.obs, c.t, act_key)
        state, tr = env.step(env_key, c.state, env_action)
        row = Trajectory(c.state.obs, stored, tr.reward, tr.terminated, tr.truncated,
                         tr.next_obs, tr.completed_return)
        traj = jax.tree.map(lambda buf, x: buf.at[c.t].set(x), c.traj, row)
        mask = c.mask.at[c.t].set(c.active)
        active = c.active & ~(tr.terminated | tr.truncated)
        return Carry(state, traj, mask, active, c.t + 1, memory)

    init = Carry(state, init_traj, jnp.zeros((max_steps,) + n, bool), jnp.ones(n, bool),
                 jnp.asarray(0), memory)
    out = jax.lax.while_loop(cond, body, init)
    return out.traj, out.mask


def step_transitions(env: envs.Env, key: jax.Array, state: envs.EnvState, action: jax.Array,
                     stored_action: jax.Array | None = None
                     ) -> tuple[envs.EnvState, Any, envs.Step]:
    """One step of every environment for off-policy learning: ``(state, transitions, step)``
    with ``transitions`` a batch of :class:`purerl.replay.Transition` (real next observation,
    ``terminated`` not ``done``) ready for ``replay.add``. ``stored_action`` defaults to the
    action sent to the environment."""
    from purerl.replay import Transition

    next_state, tr = env.step(key, state, action)
    stored = action if stored_action is None else stored_action
    return next_state, Transition(state.obs, stored, tr.reward, tr.next_obs, tr.terminated), tr


class EpisodeStats(NamedTuple):
    mean_return: jax.Array  # NaN when no episode ended
    count: jax.Array


def episode_stats(traj: Trajectory | envs.Step, mask: jax.Array | None = None,
                  axis_name: str | None = None) -> EpisodeStats:
    """Mean return of the episodes that ended in ``traj`` (on unmasked steps) and how many there
    were. ``traj`` is anything with ``terminated``, ``truncated`` and ``completed_return``: a
    :class:`Trajectory`, or the :class:`purerl.envs.Step` of one batched environment step.
    ``axis_name``: the episodes of every device of that mapped axis (inside ``shard_map``),
    each holding its share of the environments (counts and returns summed, ``lax.psum``)."""
    done = traj.terminated | traj.truncated
    done = done if mask is None else done & mask
    count = done.sum()
    total = jnp.sum(jnp.where(done, traj.completed_return, 0.0))
    if axis_name is not None:
        count, total = jax.lax.psum(count, axis_name), jax.lax.psum(total, axis_name)
    return EpisodeStats(jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan), count)


def evaluate(env: envs.Env, act: Callable[..., Any], key: jax.Array, num_episodes: int,
             memory: Any = None) -> jax.Array:
    """Mean undiscounted return of ``num_episodes`` parallel episodes under ``act(obs)``
    (typically the deterministic policy), or a recurrent ``act(obs, memory) -> (action,
    memory)`` from the carry ``memory``. Runs until every episode has ended or the
    environment's time limit."""
    return episode_returns(env, act, key, num_episodes, memory=memory).mean()


class _EvalCarry(NamedTuple):
    state: envs.EnvState
    key: jax.Array
    returns: jax.Array
    active: jax.Array  # the episode has not ended yet
    t: jax.Array
    memory: Any = None  # a recurrent policy's carry


def _evaluation(env: envs.Env, act: Callable[..., Any], key: jax.Array, num_episodes: int,
                stochastic: bool, memory: Any = None
                ) -> tuple[_EvalCarry, Callable[[_EvalCarry], tuple[_EvalCarry, jax.Array]]]:
    """The initial carry and the step ``carry -> (carry, rewards of the step)`` of
    :func:`episode_returns`' loop (shared with :func:`record_episode`, so a recorded episode
    is exactly an evaluated one). ``memory``: the initial carry of a recurrent ``act(obs,
    memory[, key]) -> (action, memory)``; each episode is the first of its environment, so the
    carry is never reset inside the loop."""
    reset_key, key = jax.random.split(key)
    state = env.reset(reset_key, num_episodes)

    def body(c: _EvalCarry) -> tuple[_EvalCarry, jax.Array]:
        key, step_key = jax.random.split(c.key)
        args = (c.state.obs,) if memory is None else (c.state.obs, c.memory)
        if stochastic:
            args += (jax.random.fold_in(step_key, 1),)
        action, mem = act(*args) if memory is not None else (act(*args), None)
        state, tr = env.step(step_key, c.state, action)
        returns = c.returns + jnp.where(c.active, tr.reward, 0.0)
        active = c.active & ~(tr.terminated | tr.truncated)
        return _EvalCarry(state, key, returns, active, c.t + 1, mem), tr.reward

    init = _EvalCarry(state, key, jnp.zeros(num_episodes, jnp.float32),
                      jnp.ones(num_episodes, bool), jnp.asarray(0), memory)
    return init, body


def episode_returns(env: envs.Env, act: Callable[..., Any], key: jax.Array,
                    num_episodes: int, stochastic: bool = False, memory: Any = None
                    ) -> jax.Array:
    """The undiscounted return of each of ``num_episodes`` parallel episodes (what
    :func:`evaluate` averages) under ``act(obs)``, or under ``act(obs, key)`` with
    ``stochastic`` (a sampling policy; its key at each step is folded from that step's
    environment key, so the environments' randomness is the same either way). A recurrent
    policy: ``memory`` is its initial carry and ``act(obs, memory[, key]) -> (action,
    memory)``."""
    max_steps = env.spec.max_episode_steps
    init, body = _evaluation(env, act, key, num_episodes, stochastic, memory)

    def cond(c: _EvalCarry):
        return jnp.logical_and(c.t < max_steps, jnp.any(c.active))

    return jax.lax.while_loop(cond, lambda c: body(c)[0], init).returns


class Recording(NamedTuple):
    """One episode, step by step (leading axis: the environment's time limit)."""

    env_state: Any  # the environment's own state before each step (what gymnax renders)
    reward: jax.Array  # the reward of each step
    active: jax.Array  # the step belongs to the episode (False after it ended)


def record_episode(env: envs.Env, act: Callable[..., Any], key: jax.Array,
                   num_episodes: int = 1, index: int = 0, stochastic: bool = False,
                   memory: Any = None) -> Recording:
    """Episode ``index`` of :func:`episode_returns` with the same arguments, recorded: the
    rewards of the ``active`` steps sum to ``episode_returns(...)[index]``. Runs every step of
    the time limit (a ``lax.scan``) since the recording has a fixed length."""
    init, body = _evaluation(env, act, key, num_episodes, stochastic, memory)

    def step(c: _EvalCarry, _) -> tuple[_EvalCarry, Recording]:
        after, reward = body(c)
        return after, Recording(jax.tree.map(lambda x: x[index], c.state.env_state),
                                reward[index], c.active[index])

    return jax.lax.scan(step, init, None, env.spec.max_episode_steps)[1]


def collect_episodes_recurrent(env: envs.Env, policy: RecurrentPolicy, key: jax.Array,
                               num_episodes: int, initial_carry: Any
                               ) -> tuple[Trajectory, jax.Array]:
    """:func:`collect_episodes` for a recurrent ``policy(carry, obs, start, key) -> (carry,
    stored action, env action)``: the carry (``initial_carry``, ``[num_episodes, ...]``
    leaves) goes through the loop with the environments, and ``start`` is true at ``t = 0``
    only, since each environment's first episode is the one kept (the policy acts on in the
    padding after it, from the carry of the episode that ended; those steps are masked out).
    Same keys, buffers and mask as :func:`collect_episodes`; an update replays each episode
    from a fresh carry with ``start = (t == 0)`` (:func:`episode_starts`)."""
    return _collect_episodes(env, policy, key, num_episodes, initial_carry)


def episode_starts(mask: jax.Array) -> jax.Array:
    """``start [T, N]`` of a whole-episode batch (:func:`collect_episodes_recurrent`'s ``mask``
    shape): true at ``t = 0`` only, where every kept episode begins."""
    return jnp.zeros(mask.shape, bool).at[0].set(True)
