"""Data parallelism as a trainer sees it: :class:`DataParallel`, how one device's share of a run's
environments becomes the whole run's quantities, and :data:`SINGLE`, one device.

A trainer's ``make_agent(config, data_parallel=...)`` takes one of these and writes its update
against it; with :data:`SINGLE` every method is the single-device computation itself, so the
trainer compiles to exactly its single-device program. This module sits low (the trainers import
it): the meshes, ``jax.shard_map`` and chunked runs that drive a data-parallel agent are
:mod:`purerl.distributed`'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from purerl import envs, losses, replay, rollout

__all__ = ["DataParallel", "SINGLE"]


@dataclasses.dataclass(frozen=True)
class DataParallel:
    # over 80 lines: 15 short methods, one per collective, draw or config check a trainer needs
    """How a trainer's update turns a device's share of the environments into the whole run's
    quantities, inside ``jax.shard_map`` over the mesh axis ``axis_name`` of ``num_devices``
    devices; ``axis_name=None`` (:data:`SINGLE`) is one device, where every method is the
    identity or the single-device function it wraps. Device d holds environments
    ``d E .. (d + 1) E - 1`` of the single-device run (``E = num_envs / num_devices``)."""

    axis_name: str | None = None
    num_devices: int = 1

    @property
    def active(self) -> bool:
        """Whether the update runs on one device's share (inside ``shard_map``)."""
        return self.axis_name is not None

    def check(self, config: Any) -> None:
        """ValueError unless ``config.num_envs`` splits evenly over the devices."""
        if self.active and config.num_envs % self.num_devices:
            raise ValueError(f"data parallel over {self.num_devices} devices needs num_envs "
                             f"divisible by {self.num_devices}, got num_envs={config.num_envs}; "
                             f"use a multiple of {self.num_devices}")

    def check_replay(self, config: Any) -> None:
        """:meth:`check`, and ValueError unless the replay buffer and minibatch split as
        :func:`purerl.replay.sample_sharded` needs."""
        self.check(config)
        if self.active and config.buffer_capacity % config.num_envs:
            raise ValueError(f"data parallel needs a replay capacity divisible by num_envs="
                             f"{config.num_envs} (so every device's writes wrap with the "
                             f"whole buffer's), got {config.buffer_capacity} (buffer_size="
                             f"{config.buffer_size}, at most the run's env steps); choose "
                             f"buffer_size as a multiple of {config.num_envs}")
        if self.active and config.batch_size % self.num_devices:
            raise ValueError(f"data parallel over {self.num_devices} devices needs batch_size "
                             f"divisible by {self.num_devices}, got {config.batch_size}")

    def index(self) -> jax.Array:
        """This device's position on the axis (0 on one device)."""
        return jax.lax.axis_index(self.axis_name) if self.active else jnp.zeros((), jnp.int32)

    def mean(self, tree: Any) -> Any:
        """The mean over devices (``lax.pmean``): the mean over the whole batch of a mean taken
        over a device's (equal-sized) share; identical on every device."""
        return jax.lax.pmean(tree, self.axis_name) if self.active else tree

    def fold(self, key: jax.Array) -> jax.Array:
        """A key of this device's own (``fold_in`` of the index); ``key`` on one device."""
        return jax.random.fold_in(key, self.index()) if self.active else key

    def local(self, x: jax.Array) -> jax.Array:
        """This device's rows of ``x``, an array with one row per environment of the whole run
        (e.g. the warm-up's random actions); ``x`` itself on one device."""
        size = x.shape[0] // self.num_devices
        return jax.lax.dynamic_slice_in_dim(x, self.index() * size, size) if self.active else x

    def rows(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` for this device's rows, computed as part of all the run's rows so that
        ``fn``'s random draws (a sample per row from one key) are the single-device run's: the
        leaves of ``args`` with this device's row count go at its offset in zeros of the whole
        run's size. ``fn`` must treat rows independently (a sample or epsilon-greedy per row)."""
        if not self.active:
            return fn(*args)
        local = jax.tree.leaves(args)[0].shape[0]
        start = self.index() * local

        def widen(x):
            if jnp.ndim(x) == 0 or x.shape[0] != local:
                return x
            full = jnp.zeros((local * self.num_devices,) + x.shape[1:], x.dtype)
            return jax.lax.dynamic_update_slice_in_dim(full, x, start, 0)

        out = fn(*jax.tree.map(widen, args))
        return jax.tree.map(lambda y: jax.lax.dynamic_slice_in_dim(y, start, local, 0), out)

    def sample(self, dist: Any, key: jax.Array) -> jax.Array:
        """``dist.sample(key)`` of a :mod:`purerl.distributions` pytree, this device's rows of
        the single-device run's draw (:meth:`rows`)."""
        return self.rows(lambda d: d.sample(key), dist)

    def policy(self, dist_fn: Callable[[jax.Array], Any]) -> rollout.Policy:
        """:func:`purerl.rollout.stochastic_policy` sampling with :meth:`sample`."""
        return rollout.stochastic_policy(dist_fn, sample=self.sample)

    def env(self, env: Any) -> Any:
        """``env`` whose ``step`` gives environment i the single-device run's key
        (``split(key, num_envs)[i]``); ``env`` itself on one device."""
        return _ShardedEnv(env, self) if self.active else env

    def normalize(self, x: jax.Array, eps: float = 1e-8) -> jax.Array:
        """:func:`purerl.losses.normalize` over every device's ``x``."""
        return losses.normalize(x, eps, axis_name=self.axis_name)

    def episode_stats(self, traj: Any) -> rollout.EpisodeStats:
        """:func:`purerl.rollout.episode_stats` over every device's environments."""
        return rollout.episode_stats(traj, axis_name=self.axis_name)

    def explained_variance(self, predictions: jax.Array, targets: jax.Array) -> jax.Array:
        """:func:`purerl.losses.explained_variance` over every device's samples."""
        return losses.explained_variance(predictions, targets, axis_name=self.axis_name)

    def sample_replay(self, buffer: replay.ReplayBuffer, key: jax.Array, batch_size: int,
                      num_envs: int) -> Any:
        """:func:`purerl.replay.sample`; data parallel, this device's ``batch_size / D`` rows
        of the single-device run's minibatch (:func:`purerl.replay.sample_sharded`)."""
        if not self.active:
            return replay.sample(buffer, key, batch_size)
        return replay.sample_sharded(buffer, key, batch_size, num_envs, self.num_devices,
                                     self.index(), self.axis_name)


SINGLE = DataParallel()  # one device: the trainers' default


class _ShardedEnv:
    """An :class:`purerl.envs.Env` whose ``step`` uses this device's slice of the whole run's
    per-environment keys. ``reset`` runs outside ``shard_map`` (in ``init``) on the whole run."""

    def __init__(self, env: Any, dp: DataParallel) -> None:
        self.env, self.dp = env, dp
        self.spec = env.spec

    def reset(self, key: jax.Array, num_envs: int) -> Any:
        return self.env.reset(key, num_envs)

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, Any]:
        local = state.obs.shape[0]
        keys = jax.lax.dynamic_slice_in_dim(
            jax.random.split(key, local * self.dp.num_devices), self.dp.index() * local, local)
        return envs.step(self.env.env, self.env.params, key, state, action, keys=keys)
