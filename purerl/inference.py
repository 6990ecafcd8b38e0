"""Trained policies of saved runs: :func:`load` restores a run's newest checkpoint (or a given
one, :func:`purerl.checkpoint.restore`) as a :class:`LoadedRun`, whose :meth:`~LoadedRun.policy`
acts, :meth:`~LoadedRun.evaluate` runs episodes of every seed's policy and
:meth:`~LoadedRun.record_episode` records one step by step (``purerl eval``). ``purerl.load`` is
:func:`load`."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import purerl
from purerl import checkpoint, envs, rollout

__all__ = ["LoadedRun", "load"]

EVAL_KEY = 0xE7A1  # loop.make_evaluate's fold-in: the key of the trainer's own evaluations


@dataclasses.dataclass(eq=False)
class LoadedRun(checkpoint.RestoredRun):
    """A restored checkpoint (its config, agent, every seed's train state, the metrics of the
    updates done) and the trained policy (:meth:`policy`)."""

    _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def recurrent(self) -> bool:
        """Whether the policy has memory (``config.memory``): then :meth:`policy` takes and
        returns its carry, which :meth:`initial_carry` starts."""
        return self.agent.initial_carry is not None

    def initial_carry(self, batch: int, seed: int | None = None) -> Any:
        """A recurrent policy's carry at the start of an episode in each of ``batch``
        environments: for seed ``seed``, or (``seed=None``) for every seed, with a leading seed
        axis. Start a new carry (or zero the rows of) the environments whose episode ended."""
        if not self.recurrent:
            raise ValueError(f"this {self.algo} run's policy is feed-forward (memory='none'): "
                             "it has no carry")
        carry = self.agent.initial_carry(int(batch))
        if seed is None:
            return jax.tree.map(lambda c: jnp.broadcast_to(c, (self.num_seeds,) + c.shape),
                                carry)
        return carry

    def policy(self, obs: Any, key: jax.Array | None = None, deterministic: bool = True,
               seed: int | None = None, *, carry: Any = None) -> Any:
        """Environment actions of the trained policy (the trainer's ``agent.act``).

        ``seed=i``: seed ``i``'s policy on ``obs`` (a batch of observations, or one). ``seed=None``:
        every seed's, batched over the leading seed axis: ``obs[i]`` goes to seed ``i`` (use
        ``np.broadcast_to(obs, (run.num_seeds, *obs.shape))`` to show every seed the same
        observations), and ``key`` is split into one key per seed. ``deterministic=False``
        samples (exploration policy) and needs ``key``.

        A recurrent policy (:attr:`recurrent`) needs ``carry=`` (from :meth:`initial_carry` at
        an episode's start, then the one it returned) and a batch of observations, and returns
        ``(actions, carry)``."""
        if not deterministic and key is None:
            raise ValueError("a stochastic policy (deterministic=False) needs a key")
        if self.recurrent and carry is None:
            raise ValueError("this run's policy is recurrent: pass its carry, "
                             "run.policy(obs, seed=i, carry=run.initial_carry(len(obs), seed=i))")
        if not self.recurrent and carry is not None:
            raise ValueError("this run's policy is feed-forward (memory='none'): it takes no "
                             "carry")
        obs = jnp.asarray(obs)
        extra = () if carry is None else (carry,)
        if seed is None:
            if obs.ndim == 0 or obs.shape[0] != self.num_seeds:
                raise ValueError(f"with seed=None, obs needs a leading seed axis of "
                                 f"{self.num_seeds}; got shape {tuple(obs.shape)} (pass seed=i "
                                 "for one seed's policy)")
            keys = None if key is None else jax.random.split(key, self.num_seeds)
            return self._jitted_act(True, bool(deterministic))(self.state, obs, keys, *extra)
        _check_seed(self, seed)
        act = self._jitted_act(False, bool(deterministic))
        return act(self.state, seed % self.num_seeds, obs, key, *extra)

    def _jitted_act(self, batched: bool, deterministic: bool) -> Callable[..., Any]:
        """:func:`_jit_act`, compiled once per run and kind."""
        if (batched, deterministic) not in self._compiled:
            self._compiled[batched, deterministic] = _jit_act(self.agent.act, batched,
                                                              deterministic)
        return self._compiled[batched, deterministic]

    def evaluate(self, episodes: int | None = None, key: jax.Array | None = None,
                 deterministic: bool = True) -> np.ndarray:
        """The return of each of ``episodes`` episodes (default: the config's ``eval_episodes``)
        of every seed's policy, ``[seeds, episodes]``, all seeds in one compiled program.
        Without ``key``, each seed's episodes use the key of the trainer's own evaluations
        (:func:`purerl.loop.make_evaluate`), so the deterministic default reproduces the run's
        final ``eval_return``; with one, seed ``i`` uses ``jax.random.split(key, seeds)[i]``."""
        episodes, keys = _eval_keys(self, episodes, key)
        env = envs.make(self.config.env)

        def one(state, key):
            return rollout.episode_returns(env, _act_fn(self.agent, state, deterministic), key,
                                           episodes, stochastic=not deterministic,
                                           memory=_memory(self.agent, episodes))

        return np.asarray(purerl.jit(jax.vmap(one), recurrent=self.recurrent)(self.state, keys))

    def record_episode(self, seed: int = 0, episodes: int | None = None,
                       key: jax.Array | None = None, deterministic: bool = True
                       ) -> rollout.Recording:
        """The first episode :meth:`evaluate` runs for seed ``seed`` with the same arguments,
        recorded step by step (:func:`purerl.rollout.record_episode`, as numpy arrays): its
        ``reward[active]`` sums to ``evaluate(...)[seed, 0]``."""
        _check_seed(self, seed)
        episodes, keys = _eval_keys(self, episodes, key)
        env = envs.make(self.config.env)

        def one(state, key):
            return rollout.record_episode(env, _act_fn(self.agent, state, deterministic), key,
                                          episodes, stochastic=not deterministic,
                                          memory=_memory(self.agent, episodes))

        seed %= self.num_seeds
        return jax.device_get(purerl.jit(one, recurrent=self.recurrent)(self.seed_state(seed),
                                                                         keys[seed]))


def load(path: str | os.PathLike, *, algo: str | None = None) -> LoadedRun:
    """The trained run saved at ``path`` (a run directory: its newest checkpoint; or one
    checkpoint directory): ``.config``, ``.algo``, ``.state`` (all seeds), ``.metrics`` and
    ``.policy(obs, key=None, deterministic=True, seed=None, *, carry=None)``. See
    :func:`purerl.checkpoint.restore`."""
    run = checkpoint.restore(path, algo=algo)
    return LoadedRun(**{f.name: getattr(run, f.name) for f in dataclasses.fields(run)})


def _check_seed(run: LoadedRun, seed: int) -> None:
    if not -run.num_seeds <= seed < run.num_seeds:
        raise ValueError(f"seed={seed} is not one of the run's {run.num_seeds} seeds")


def _jit_act(act: Callable[..., Any], batched: bool, deterministic: bool
             ) -> Callable[..., Any]:
    """``act`` jitted for every seed at once, ``(state, obs, keys[, carry])`` with a leading
    seed axis (``batched``), or for one seed, ``(state, i, obs, key[, carry])``; a recurrent
    ``act`` takes the carry before the key and returns ``(action, carry)``."""
    def call(state, obs, key, *carry):
        return act(state, obs, *carry, key, deterministic)

    if batched:
        return jax.jit(jax.vmap(call))
    return jax.jit(lambda state, i, obs, key, *carry: call(
        jax.tree.map(lambda x: x[i], state), obs, key, *carry))


def _eval_keys(run: LoadedRun, episodes: int | None, key: jax.Array | None
               ) -> tuple[int, jax.Array]:
    """The episodes per seed (default the config's ``eval_episodes``) and one key per seed:
    the trainer's evaluation keys without ``key``, else ``key`` split."""
    episodes = run.config.eval_episodes if episodes is None else int(episodes)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if key is None:
        return episodes, jax.vmap(lambda k: jax.random.fold_in(k, EVAL_KEY))(run.state.run.key)
    return episodes, jax.random.split(key, run.num_seeds)


def _act_fn(agent: Any, state: Any, deterministic: bool) -> Callable[..., Any]:
    """One seed's policy as :mod:`purerl.rollout` calls it: ``act(obs)`` or ``act(obs, key)``,
    and a recurrent one ``act(obs, carry[, key]) -> (action, carry)``."""
    act = agent.act
    if agent.initial_carry is not None:
        if deterministic:
            return lambda obs, carry: act(state, obs, carry)
        return lambda obs, carry, k: act(state, obs, carry, k, False)
    if deterministic:
        return lambda obs: act(state, obs)
    return lambda obs, k: act(state, obs, k, False)


def _memory(agent: Any, episodes: int) -> Any:
    """A recurrent policy's initial carry for ``episodes`` parallel episodes; else None."""
    return None if agent.initial_carry is None else agent.initial_carry(episodes)
