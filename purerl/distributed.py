"""Several devices and several hosts: seeds and hyperparameter grids sharded over devices, and
data-parallel runs (one run's environments split over devices).

JAX's own sharding is the engine (``jax.make_mesh``, ``NamedSharding``, ``jax.shard_map``,
``jax.distributed.initialize``); there is no process pool. Three ways to use several devices:

**Sharded seeds and grids** (:func:`sharded_vmap`, :func:`train_seeds`, :func:`train_grid`,
:func:`run_chunked`). ``jax.vmap(train)`` over seeds (or grid points) becomes
``jax.shard_map(jax.vmap(train))`` over a one-axis mesh: every device trains its own block of
seeds with no communication at all. The result equals ``jax.vmap(train)`` on one device to
float32 rounding (each device runs the same program on fewer seeds; XLA may fuse a smaller batch
differently). A seed count that does not divide the device count is **padded**: the run adds
seeds (copies of the first ones), trains them and drops them, so ``len(keys)`` results come
back; ``pad=False`` makes it a one-line ``ValueError`` instead.

**Data parallel** (:func:`data_parallel_train`, ``run_chunked(..., data_parallel=True)``). One
run's ``num_envs`` environments are split over the devices (``num_envs / D`` each); parameters,
optimiser state, keys and counters are replicated, gradients and every batch statistic
(advantage normalisation, observation normaliser moments, episode returns, explained variance,
losses) are averaged with ``lax.pmean`` / ``psum`` inside ``jax.shard_map``, so the parameters
are identical on every device. The trainer is built with ``make_agent(config,
data_parallel=DataParallel(axis, D))`` (:class:`DataParallel`); without it the trainer's
program is exactly the single-device one. The config's ``num_envs`` is the *global* number, so
a data-parallel run has the same config, the same train-state layout (checkpoints are
interchangeable) and -- where the algorithm makes it well defined -- the same result as the
single-device run with that config:

* every random draw is the single-device run's: environment keys and action samples are drawn
  for all ``num_envs`` environments and each device keeps its slice (:meth:`DataParallel.rows`);
* PPO: equal to rounding with ``num_minibatches=1`` (any ``update_epochs``). With more
  minibatches each device shuffles its own samples and a minibatch is the union of the
  devices' minibatches: every minibatch holds ``1/D`` of its samples from each device's
  environments, where the single-device shuffle draws them from the whole batch. Same
  algorithm, same statistics, different random partition, so not equal;
* A2C: equal to rounding (one gradient step per update on the whole batch; advantage
  normalisation over every device's advantages);
* TRPO: equal to rounding with ``vf_minibatches=1``. The policy gradient g, every
  Fisher-vector product of conjugate gradient and the line search's surrogate and KL of each
  candidate are means over devices, so CG and the line search run on the whole batch's
  quantities and take the same step on every device. The value regression's minibatches are
  PPO's case: each device shuffles its own share;
* DQN and SAC: equal to rounding. The replay buffer is sharded (each device stores its own
  environments' transitions, ``1/D`` of the memory) but minibatch indices are drawn over the
  whole buffer as on one device; each device contributes the rows it holds
  (``lax.psum_scatter``) and computes the gradient of ``batch_size / D`` of them. Needs
  ``buffer_capacity`` and ``batch_size`` to be multiples of ``num_envs`` and ``D``
  respectively (``ValueError`` otherwise). SAC's per-row draws (the policy's actions, the
  warm-up's random actions, the reparameterised samples of the losses) are the single-device
  run's rows;
* the deterministic evaluation runs replicated on every device (same episodes, same result).

**Several hosts.** Call :func:`initialize` (``jax.distributed.initialize``; on CPU it selects
JAX's gloo collectives) in every process before anything else touches JAX; ``jax.devices()``
then lists every process's devices, :func:`make_mesh` spans them all, and
:func:`sharded_vmap` builds its inputs as global arrays from the (identical) host-local keys.
Results are global arrays; :func:`gather` brings them to every host as NumPy arrays.
Tested for :func:`sharded_vmap` (and so :func:`train_seeds` / :func:`train_grid`);
:func:`run_chunked` and the CLI are single-process (their per-chunk checks read whole arrays).

Data parallel: :data:`DATA_PARALLEL` (A2C, DQN, PPO, SAC, TRPO). Not data parallel: REINFORCE,
the actor-critics, A3C (its workers already are its parallelism, applied in sequence), DDPG and
TD3 (``make_agent`` takes no ``data_parallel``); shard their seeds instead.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from purerl import loop

__all__ = ["DataParallel", "SINGLE", "data_parallel_train", "device_count", "gather",
           "initialize", "make_mesh", "pad_to", "restore", "run_chunked", "shard_state",
           "sharded_vmap", "train_grid", "train_seeds"]

SEED_AXIS = "seed"
DATA_AXIS = "data"


# ---------------------------------------------------------------------------------- meshes


def device_count(devices: int | str | None = "all") -> int:
    """The number of devices ``devices`` asks for: ``"all"`` / ``None``: every device
    (``jax.device_count()``, all hosts' in a multi-host run); an int (or a digit string) N:
    N of them. ValueError for more than exist or fewer than 1."""
    available = jax.device_count()
    if devices is None or devices == "all":
        return available
    try:
        n = int(devices)
    except (TypeError, ValueError):
        raise ValueError(f"devices must be 'all' or a positive number, got {devices!r}") from None
    if not 1 <= n <= available:
        raise ValueError(f"devices={n} but this process sees {available} device(s) "
                         f"({jax.default_backend()}); use 1..{available} or 'all'")
    return n


def make_mesh(devices: int | str | None = "all", axis: str = SEED_AXIS) -> Mesh:
    """A one-axis mesh named ``axis`` over the first :func:`device_count` devices.

    ``AxisType.Auto``: ``jax.make_mesh``'s default (``Explicit``) makes ``shard_map`` reject
    inputs that were not placed with a sharding first."""
    n = device_count(devices)
    return jax.make_mesh((n,), (axis,), axis_types=(AxisType.Auto,),
                         devices=jax.devices()[:n])


def initialize(coordinator_address: str, num_processes: int, process_id: int,
               local_devices: int | None = None) -> None:
    """Join a multi-process (multi-host) run: ``jax.distributed.initialize`` with, on CPU,
    JAX's gloo collectives (the CPU backend has no cross-process collectives without them).
    ``local_devices``: fake this many CPU devices in this process (tests, laptops). Call it
    first, before any JAX computation; every process runs the same program."""
    if local_devices is not None:
        jax.config.update("jax_num_cpu_devices", int(local_devices))
    # only the CPU backend reads it, so it is harmless where the devices are GPUs
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


# --------------------------------------------------------------------------- global arrays


def pad_to(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``n``."""
    return -(-n // multiple) * multiple


def _pad_leading(x: Any, total: int) -> Any:
    """``x`` with its leading axis extended to ``total`` by repeating its first entries (padding
    seeds: real keys and hyperparameters, so the padded runs are ordinary runs)."""
    n = x.shape[0]
    if n == total:
        return x
    reps = -(-total // n)
    return jnp.concatenate([x] * reps)[:total]


def _global(x: Any, sharding: NamedSharding) -> jax.Array:
    """``x`` (the same full value on every host) as an array placed with ``sharding``: one
    ``device_put`` in one process; in several, each host fills its own devices' blocks
    (``jax.make_array_from_callback``), since a host can only place data on its own devices."""
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _raw(x: Any) -> tuple[Any, Any]:
    """(array without typed PRNG keys, the key implementation or None): typed keys travel as
    their uint32 data so every placement path (``make_array_from_callback``) accepts them."""
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(x), jax.random.key_impl(x)
    return x, None


def gather(tree: Any) -> Any:
    """Every leaf of ``tree`` as a NumPy array holding the whole (global) value, on every host:
    ``jax.device_get`` in one process, ``multihost_utils.process_allgather`` across several.
    Typed PRNG keys come back as their uint32 key data."""
    tree = jax.tree.map(lambda x: _raw(x)[0], tree)
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


# -------------------------------------------------------------------- sharded seeds / grids


def _normalise_axes(in_axes: Any, num_args: int) -> tuple[int | None, ...]:
    axes = tuple(in_axes) if isinstance(in_axes, (tuple, list)) else (in_axes,) * num_args
    if len(axes) != num_args or any(a not in (0, None) for a in axes):
        raise ValueError(f"in_axes must be 0 or None per argument, got {in_axes!r} for "
                         f"{num_args} argument(s)")
    return axes


@functools.lru_cache(maxsize=32)
def _sharded_program(fn: Callable, axes: tuple, treedef: Any, impls: tuple, mesh: Mesh
                     ) -> Callable:
    """``jit(shard_map(vmap(fn)))``: each device vmaps ``fn`` over its block of the mapped
    arguments; unmapped arguments are replicated. The arguments arrive as the flat leaves of
    ``treedef``, typed keys as raw data, re-wrapped with their implementation (``impls``,
    None for other leaves)."""
    axis = mesh.axis_names[0]

    def local(*leaves):
        leaves = [x if impl is None else jax.random.wrap_key_data(x, impl=impl)
                  for x, impl in zip(leaves, impls)]
        return jax.vmap(fn, in_axes=axes)(*jax.tree.unflatten(treedef, leaves))

    leaf_axes = _leaf_axes(treedef, axes)
    specs = tuple(P(axis) if a == 0 else P() for a in leaf_axes)
    # check_vma=False: purerl's scans start from unsharded zeros (e.g. the orthogonal
    # initialiser's carry), which the replication checker rejects; nothing here communicates
    return loop.jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P(axis),
                                  check_vma=False))


def _leaf_axes(treedef: Any, axes: tuple) -> list:
    """The mapped axis (0 or None) of every leaf of the argument tuple ``treedef``."""
    children = treedef.children()
    return [a for child, a in zip(children, axes) for _ in range(child.num_leaves)]


def sharded_vmap(fn: Callable, in_axes: Any = 0, *, mesh: Mesh | None = None,
                 pad: bool = True) -> Callable:
    """``jax.vmap(fn, in_axes)`` with the mapped axis sharded over ``mesh`` (default: every
    device, :func:`make_mesh`): equal to the unsharded vmap to float32 rounding, no
    communication between devices.

    ``in_axes``: 0 (mapped) or None (the same value for every entry, replicated) per argument.
    When the mapped size does not divide the device count and ``pad`` is true, the mapped
    arguments are padded with copies of their first entries up to the next multiple and the
    extra results dropped; with ``pad=False`` that is a ValueError. Outputs have the mapped
    axis first, sharded (a slice of it when padded). In a multi-host run (:func:`initialize`)
    every process passes the same full arguments and gets global arrays (see :func:`gather`).
    """

    def run(*args):
        mesh_ = mesh if mesh is not None else make_mesh()
        axis, devices = mesh_.axis_names[0], mesh_.size
        axes = _normalise_axes(in_axes, len(args))
        leaves, treedef = jax.tree.flatten(tuple(args))
        leaf_axes = _leaf_axes(treedef, axes)
        sizes = {np.shape(x)[0] for x, a in zip(leaves, leaf_axes) if a == 0}
        if len(sizes) != 1:
            raise ValueError(f"the mapped arguments need one common leading size, got {sizes}")
        n = sizes.pop()
        total = pad_to(n, devices)
        if total != n and not pad:
            raise ValueError(f"{n} seeds / grid points do not divide over {devices} devices; "
                             f"use a multiple of {devices} (or pad=True)")
        raws = [_raw(jnp.asarray(x)) for x in leaves]
        placed = [_global(_pad_leading(x, total) if a == 0 else x,
                          NamedSharding(mesh_, P(axis) if a == 0 else P()))
                  for (x, _), a in zip(raws, leaf_axes)]
        impls = tuple(None if impl is None else str(impl) for _, impl in raws)
        out = _sharded_program(fn, axes, treedef, impls, mesh_)(*placed)
        return out if total == n else _take(out, n)

    return run


@functools.partial(jax.jit, static_argnums=1)
def _take(tree: Any, n: int) -> Any:
    # jitted: the leading n entries of arrays that may span several hosts
    return jax.tree.map(lambda x: x[:n], tree)


def train_seeds(train: Callable, keys: jax.Array, hparams: Mapping[str, Any] | None = None,
                *, mesh: Mesh | None = None, pad: bool = True) -> tuple[Any, loop.Metrics]:
    """``jax.vmap(train)(keys)`` (or ``jax.vmap(train)(keys, hparams)`` with one hyperparameter
    value per key) with the seeds sharded over ``mesh``; see :func:`sharded_vmap`."""
    if hparams is None:
        return sharded_vmap(train, 0, mesh=mesh, pad=pad)(keys)
    return sharded_vmap(train, (0, 0), mesh=mesh, pad=pad)(keys, dict(hparams))


def train_grid(train: Callable, key: jax.Array, hparams: Mapping[str, Any], *,
               mesh: Mesh | None = None, pad: bool = True) -> tuple[Any, loop.Metrics]:
    """``jax.vmap(train, in_axes=(None, 0))(key, hparams)``: one key, a grid of hyperparameter
    values (arrays with a common leading axis), the grid sharded over ``mesh``."""
    return sharded_vmap(train, (None, 0), mesh=mesh, pad=pad)(key, dict(hparams))


# ---------------------------------------------------------------------------- data parallel


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """How a trainer's update turns a device's share of the environments into the whole run's
    quantities, inside ``jax.shard_map`` over the mesh axis ``axis_name`` of ``num_devices``
    devices. :data:`SINGLE` (``axis_name=None``) is one device: every method is then the
    single-device computation itself (the identity, or the function it wraps), so a trainer
    written against this class compiles to exactly its single-device program.

    Each device holds ``num_envs / num_devices`` environments, in order: device d holds
    environments ``d E .. (d + 1) E - 1`` of the single-device run (``E`` per device)."""

    axis_name: str | None = None
    num_devices: int = 1

    @property
    def active(self) -> bool:
        return self.axis_name is not None

    def check(self, config: Any) -> None:
        """ValueError unless ``config.num_envs`` splits evenly over the devices."""
        if self.active and config.num_envs % self.num_devices:
            raise ValueError(f"data parallel over {self.num_devices} devices needs num_envs "
                             f"divisible by {self.num_devices}, got num_envs={config.num_envs}; "
                             f"use a multiple of {self.num_devices}")

    def index(self) -> jax.Array:
        """This device's position on the axis (0 on one device)."""
        return jax.lax.axis_index(self.axis_name) if self.active else jnp.zeros((), jnp.int32)

    def mean(self, tree: Any) -> Any:
        """The mean over devices (``lax.pmean``): the mean over the whole batch of a mean taken
        over a device's (equal-sized) share; identical on every device."""
        return jax.lax.pmean(tree, self.axis_name) if self.active else tree

    def sum(self, tree: Any) -> Any:
        """The sum over devices (``lax.psum``)."""
        return jax.lax.psum(tree, self.axis_name) if self.active else tree

    def fold(self, key: jax.Array) -> jax.Array:
        """A key of this device's own (``fold_in`` of the index); ``key`` on one device."""
        return jax.random.fold_in(key, self.index()) if self.active else key

    def local(self, x: jax.Array) -> jax.Array:
        """This device's rows of ``x``, an array computed for the whole run (one row per
        environment of all devices, e.g. the warm-up's uniformly random actions); ``x`` itself
        on one device."""
        if not self.active:
            return x
        size = x.shape[0] // self.num_devices
        return jax.lax.dynamic_slice_in_dim(x, self.index() * size, size, 0)

    def rows(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` for this device's rows, computed as part of all the run's rows, so
        that ``fn``'s random draws (a sample per row from one key) are the single-device run's.

        Leaves of ``args`` whose leading axis has this device's row count are placed at the
        device's offset in zeros of the whole run's size, ``fn`` runs on those, and the device's
        rows of the result come back. ``fn`` must treat rows independently (a sample per row,
        epsilon-greedy per row): the cost is ``fn`` on every row, not a network on every row."""
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
        """``dist.sample(key)`` (a :mod:`purerl.distributions` pytree with one row per
        environment or minibatch sample); data parallel, this device's rows of the single-device
        run's draw (:meth:`rows`)."""
        return self.rows(lambda d: d.sample(key), dist)

    def env(self, env: Any) -> Any:
        """``env`` whose ``step`` gives environment i the single-device run's key
        (``split(key, num_envs)[i]``); ``env`` itself on one device."""
        return _ShardedEnv(env, self) if self.active else env

    def policy(self, dist_fn: Callable[[jax.Array], Any]) -> Callable:
        """:func:`purerl.rollout.stochastic_policy` whose samples are the single-device run's
        for this device's environments (:meth:`rows`)."""
        from purerl import rollout

        policy = rollout.stochastic_policy(dist_fn)
        if not self.active:
            return policy

        def sample(obs, key):
            dist = dist_fn(obs)
            u = self.sample(dist, key)
            return u, dist.env_action(u)

        return sample

    def normalize(self, x: jax.Array, eps: float = 1e-8) -> jax.Array:
        """:func:`purerl.losses.normalize` with the mean and std of every device's ``x``."""
        from purerl import losses

        if not self.active:
            return losses.normalize(x, eps)
        mean = self.mean(x.mean())
        std = jnp.sqrt(self.mean(jnp.mean(jnp.square(x - mean))))
        return (x - mean) / (std + eps)

    def episode_stats(self, traj: Any) -> Any:
        """:func:`purerl.rollout.episode_stats` over every device's environments."""
        from purerl import rollout

        if not self.active:
            return rollout.episode_stats(traj)
        done = traj.terminated | traj.truncated
        count = self.sum(done.sum())
        total = self.sum(jnp.sum(jnp.where(done, traj.completed_return, 0.0)))
        return rollout.EpisodeStats(jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan),
                                    count)

    def explained_variance(self, predictions: jax.Array, targets: jax.Array) -> jax.Array:
        """:func:`purerl.losses.explained_variance` over every device's samples."""
        from purerl import losses

        if not self.active:
            return losses.explained_variance(predictions, targets)

        def var(x):
            return self.mean(jnp.mean(jnp.square(x - self.mean(jnp.mean(x)))))

        var_t, var_residual = var(targets), var(targets - predictions)
        undefined = jnp.where(var_residual > 0, 0.0, jnp.where(var_residual == 0, 1.0,
                                                                var_residual))
        return jnp.where(var_t > 0, 1.0 - var_residual / var_t, undefined)

    def sample_replay(self, buffer: Any, key: jax.Array, batch_size: int, num_envs: int) -> Any:
        """:func:`purerl.replay.sample`: on one device the whole minibatch; data parallel, this
        device's ``batch_size / D`` rows of the single-device run's minibatch.

        The indices are drawn over the whole (sharded) buffer as on one device. Slot g of the
        single-device buffer holds environment ``g % num_envs`` of write ``g // num_envs``
        (its capacity is a multiple of ``num_envs``, so writes never straddle the wrap), which
        device ``(g % num_envs) // E`` keeps in its slot ``(g // num_envs) E + g % E``. Every
        device fills the rows it holds (zeros elsewhere) and ``lax.psum_scatter`` sums them,
        handing device d rows ``d B/D .. (d + 1) B/D - 1``."""
        from purerl import replay

        if not self.active:
            return replay.sample(buffer, key, batch_size)
        local_envs = num_envs // self.num_devices
        size = buffer.size * self.num_devices  # every device wrote local_envs per update
        idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(size, 1))
        write, env = idx // num_envs, idx % num_envs
        mine = env // local_envs == self.index()
        slot = write * local_envs + env % local_envs

        def rows(d):
            x = d[slot]
            x = jnp.where(mine.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros_like(x))
            # integers and booleans sum exactly: one device holds each row, the others add 0
            summed = jax.lax.psum_scatter(x.astype(jnp.int32) if x.dtype == bool else x,
                                          self.axis_name, scatter_dimension=0, tiled=True)
            return summed.astype(d.dtype)

        return jax.tree.map(rows, buffer.data)

    def check_replay(self, config: Any) -> None:
        """ValueError unless the replay buffer and minibatch split as :meth:`sample_replay`
        needs (also :meth:`check`)."""
        self.check(config)
        if not self.active:
            return
        if config.buffer_capacity % config.num_envs:
            raise ValueError(f"data parallel needs a replay capacity divisible by num_envs="
                             f"{config.num_envs} (so every device's writes wrap with the "
                             f"whole buffer's), got {config.buffer_capacity} (buffer_size="
                             f"{config.buffer_size}, at most the run's env steps); choose "
                             f"buffer_size as a multiple of {config.num_envs}")
        if config.batch_size % self.num_devices:
            raise ValueError(f"data parallel over {self.num_devices} devices needs batch_size "
                             f"divisible by {self.num_devices}, got {config.batch_size}")


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
        from purerl import envs

        local = state.obs.shape[0]
        keys = jax.lax.dynamic_slice_in_dim(
            jax.random.split(key, local * self.dp.num_devices), self.dp.index() * local, local)
        return envs.step(self.env.env, self.env.params, key, state, action, keys=keys)


def _is_buffer(x: Any) -> bool:
    from purerl.replay import ReplayBuffer

    return isinstance(x, ReplayBuffer)


def _to_local_layout(state: Any, num_envs: int, devices: int) -> Any:
    """The single-device state laid out for sharding over environments: every replay buffer's
    ``[capacity, ...]`` leaves viewed as ``[capacity / num_envs, num_envs, ...]`` (write, env)
    and its position and size counted per device (:meth:`DataParallel.sample_replay`)."""

    def local(b):
        if not _is_buffer(b):
            return b
        data = jax.tree.map(lambda x: x.reshape((-1, num_envs) + x.shape[1:]), b.data)
        return b.replace(data=data, position=b.position // devices, size=b.size // devices)

    return jax.tree.map(local, state, is_leaf=_is_buffer)


def _reshape_buffers(state: Any, shape: Callable[[tuple], tuple]) -> Any:
    """``state`` with every replay buffer's data leaf ``x`` reshaped to ``shape(x.shape)``."""

    def reshape(b):
        if not _is_buffer(b):
            return b
        return b.replace(data=jax.tree.map(lambda x: x.reshape(shape(x.shape)), b.data))

    return jax.tree.map(reshape, state, is_leaf=_is_buffer)


def _from_local_layout(state: Any, devices: int) -> Any:
    """Inverse of :func:`_to_local_layout`."""

    def single(b):
        if not _is_buffer(b):
            return b
        data = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), b.data)
        return b.replace(data=data, position=b.position * devices, size=b.size * devices)

    return jax.tree.map(single, state, is_leaf=_is_buffer)


def _data_specs(state: Any, axis: str) -> Any:
    """shard_map specs of a state in the local layout: the environments' states split on their
    leading (environment) axis, replay data on its environment axis, the rest replicated."""
    specs = jax.tree.map(lambda _: P(), state)

    def buffer_specs(b, s):
        return s.replace(data=jax.tree.map(lambda _: P(None, axis), b.data)) if _is_buffer(b) \
            else s

    specs = jax.tree.map(buffer_specs, state, specs, is_leaf=_is_buffer)
    env_specs = jax.tree.map(lambda _: P(axis), state.run.env_state)
    return specs.replace(run=specs.run.replace(env_state=env_specs))


def data_parallel_updates(agent: loop.Agent, mesh: Mesh, num_envs: int
                          ) -> Callable[[Any, Any, int], tuple[Any, loop.Metrics]]:
    """``updates(state, start, length)``: :func:`purerl.loop.run_updates` of a data-parallel
    ``agent`` (built with ``make_agent(config, data_parallel=DataParallel(axis, D))``) inside
    ``jax.shard_map`` over ``mesh``. ``state`` is in the single-device layout (one seed, no seed
    axis; vmap the function for several) and so is the state returned; metrics are replicated."""
    axis, devices = mesh.axis_names[0], mesh.size

    def updates(state, start, length):
        local = _to_local_layout(state, num_envs, devices)
        specs = _data_specs(local, axis)

        def run(s, i):
            # on the device, a buffer [writes, local envs, ...] is a flat ring of local slots
            local_envs = num_envs // devices
            s = _reshape_buffers(s, lambda shape: (shape[0] * shape[1],) + shape[2:])
            s, metrics = loop.run_updates(agent, s, i, length)
            return _reshape_buffers(s, lambda shape: (-1, local_envs) + shape[1:]), metrics

        body = jax.shard_map(run, mesh=mesh, in_specs=(specs, P()), out_specs=(specs, P()),
                             check_vma=False)
        local, metrics = body(local, jnp.asarray(start, loop.counter_dtype()))
        return _from_local_layout(local, devices), metrics

    return updates


DATA_PARALLEL = ("a2c", "dqn", "ppo", "sac", "trpo")  # make_agent takes data_parallel=


def make_agent(config: Any, mesh: Mesh | None = None) -> loop.Agent:
    """The data-parallel agent of ``config`` (a Config of a trainer in :data:`DATA_PARALLEL`)
    over ``mesh`` (default: every device, axis ``"data"``)."""
    import purerl

    mesh = mesh if mesh is not None else make_mesh(axis=DATA_AXIS)
    module = purerl.get_algorithm(config.algo)
    if config.algo not in DATA_PARALLEL:
        raise ValueError(f"--data-parallel is implemented for {', '.join(DATA_PARALLEL)}, not "
                         f"{config.algo}; shard seeds over the devices instead")
    return module.make_agent(config, data_parallel=DataParallel(mesh.axis_names[0], mesh.size))


def data_parallel_train(config: Any, mesh: Mesh | None = None) -> Callable:
    """``train(key, hparams=None) -> (state, metrics)`` of ``config`` with its ``num_envs``
    environments split over ``mesh`` (default: every device). Equal to the single-device
    ``make_train(config)`` to float32 rounding where the module docstring says so; the state has
    the single-device layout. ``jax.jit`` it (``vmap`` it over seeds as usual)."""
    mesh = mesh if mesh is not None else make_mesh(axis=DATA_AXIS)
    agent = make_agent(config, mesh)
    updates = data_parallel_updates(agent, mesh, config.num_envs)

    def train(key: jax.Array, hparams: Mapping[str, Any] | None = None):
        state = jax.lax.optimization_barrier(agent.init(key, hparams))
        return updates(state, 0, agent.num_updates)

    return train


# ------------------------------------------------------------- chunked runs and checkpoints


def shard_state(state: Any, mesh: Mesh) -> Any:
    """A state with a leading seed axis placed on ``mesh``: seeds sharded over the mesh's
    (first) axis where their number divides the device count, replicated otherwise (a
    restored run whose seed count does not divide: :func:`run_chunked` pads it itself)."""
    return jax.tree.map(lambda x: jax.device_put(x, _seed_sharding(mesh, x)), state)


def _seed_sharding(mesh: Mesh, x: Any) -> NamedSharding:
    """Leading axis over the mesh where it divides the device count, else replicated."""
    divides = np.ndim(x) and np.shape(x)[0] % mesh.size == 0
    return NamedSharding(mesh, P(mesh.axis_names[0]) if divides else P())


def restore(path: Any, mesh: Mesh | None = None, **kwargs: Any) -> Any:
    """:func:`purerl.checkpoint.restore` with the state placed on ``mesh`` (default: every
    device) by :func:`shard_state`. Checkpoints store whole arrays, not device blocks, so a run
    saved from any number of devices (or data parallel, whose state has the single-device
    layout) restores onto any other."""
    from purerl import checkpoint

    mesh = mesh if mesh is not None else make_mesh()
    return checkpoint.restore(path, sharding=functools.partial(_seed_sharding, mesh), **kwargs)


def run_chunked(agent: loop.Agent, keys: jax.Array | None,
                hparams: Mapping[str, Any] | None = None, chunk: int = 10, *,
                mesh: Mesh | None = None, data_parallel: bool = False, state: Any = None,
                start: int | None = None, align: int | None = None, check_finite: bool = True
                ) -> Iterator[tuple[int, Any, loop.Metrics]]:
    """:func:`purerl.loop.run_chunked` over several devices (one process).

    Sharded seeds (default): the keys (or the continued ``state``) are padded to a multiple
    of the device count, sharded over ``mesh`` and passed to ``loop.run_chunked``, whose
    compiled chunks then run each device's seeds where they live; the padded seeds are dropped
    from what is yielded. Same result as ``loop.run_chunked`` on one device to float32
    rounding.

    ``data_parallel=True``: ``agent`` must be :func:`make_agent`'s data-parallel agent for the
    same ``mesh``; every chunk runs :func:`data_parallel_updates` vmapped over the seeds. The
    states yielded have the single-device layout (checkpoints of either kind restore into the
    other)."""
    mesh = mesh if mesh is not None else make_mesh(axis=DATA_AXIS if data_parallel else SEED_AXIS)
    if not data_parallel:
        yield from _chunked_seeds(agent, keys, hparams, chunk, mesh, state, start, align,
                                  check_finite)
        return
    num_envs = jax.tree.leaves(_abstract_init(agent).run.env_state)[0].shape[0]
    chunk = loop.even_chunk(agent.num_updates, chunk, align)
    if state is None:
        if keys is None:
            raise ValueError("run_chunked needs keys, or a state to continue from")
        state, done = loop._vmapped_init(agent, hparams is not None)(keys, hparams), 0
    else:
        done = loop.updates_done(state)
        if start is not None and start != done:
            raise ValueError(f"start={start} but the state has done {done} updates")
        # a continued state (e.g. restored onto one device) goes onto every device of the mesh
        state = jax.device_put(state, NamedSharding(mesh, P()))
    while done < agent.num_updates:
        length = min(chunk - done % chunk, agent.num_updates - done)
        if align is not None:
            length = min(length, align - done % align)
        state, metrics = _data_parallel_chunk(agent, mesh, num_envs, length)(
            state, jnp.asarray(done, loop.counter_dtype()))
        if check_finite:
            loop.check_finite_params(state, done + 1, done + length, agent.num_updates)
        done += length
        yield done, state, metrics


def _abstract_init(agent: loop.Agent) -> Any:
    return jax.eval_shape(agent.init, jax.random.key(0))


@functools.lru_cache(maxsize=16)
def _data_parallel_chunk(agent: loop.Agent, mesh: Mesh, num_envs: int, length: int
                         ) -> Callable:
    updates = data_parallel_updates(agent, mesh, num_envs)
    return loop.jit(jax.vmap(lambda s, start: updates(s, start, length), in_axes=(0, None)))


def _chunked_seeds(agent, keys, hparams, chunk, mesh, state, start, align, check_finite):
    seeds = len(keys) if state is None else int(np.shape(state.run.update_step)[0])
    total = pad_to(seeds, mesh.size)
    sharding = NamedSharding(mesh, P(mesh.axis_names[0]))

    def padded(tree):
        return jax.tree.map(lambda x: jax.device_put(_pad_leading(jnp.asarray(x), total),
                                                     sharding), tree)

    if state is None:
        keys, hparams = padded(keys), None if hparams is None else padded(dict(hparams))
    else:
        state = padded(state)
    for done, out, metrics in loop.run_chunked(agent, keys, hparams, chunk, state=state,
                                               start=start, align=align,
                                               check_finite=check_finite):
        if total != seeds:
            out, metrics = _take(out, seeds), _take(metrics, seeds)
        yield done, out, metrics


# --------------------------------------------------------------------------------- the CLI


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a chunked run goes (``purerl train --devices N [--data-parallel]``): ``mesh``
    None is one device and plain :func:`purerl.loop.run_chunked`, bitwise the run without the
    flags."""

    mesh: Mesh | None = None
    data_parallel: bool = False

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    def agent(self, config: Any, agent: loop.Agent) -> loop.Agent:
        """The agent to train: ``agent`` itself, or ``config``'s data-parallel agent."""
        return make_agent(config, self.mesh) if self.data_parallel else agent

    def run_chunked(self, agent: loop.Agent, keys: jax.Array | None, **kwargs: Any
                    ) -> Iterator[tuple[int, Any, loop.Metrics]]:
        if self.mesh is None:
            return loop.run_chunked(agent, keys, **kwargs)
        return run_chunked(agent, keys, mesh=self.mesh, data_parallel=self.data_parallel,
                           **kwargs)

    def describe(self, config: Any, seeds: int) -> str:
        """One line for the run's messages and summary."""
        if self.mesh is None:
            return f"1 ({jax.devices()[0].platform})"
        kind = jax.devices()[0].platform
        if self.data_parallel:
            each = config.num_envs // self.num_devices
            return (f"{self.num_devices} {kind}, data parallel: {each} of {config.num_envs} envs "
                    "each")
        padded = pad_to(seeds, self.num_devices)
        extra = f", padded to {padded} seeds (extra ones dropped)" if padded != seeds else ""
        return f"{self.num_devices} {kind}, seeds sharded{extra}"


def placement(devices: int | str | None, data_parallel: bool, config: Any) -> Placement:
    """The :class:`Placement` of ``--devices`` (None: one device, or every device with
    ``--data-parallel``; ``all``; N) and ``--data-parallel``; ValueError (one line) for a
    device count this process does not have or a config that cannot be split."""
    if devices is None and not data_parallel:
        return Placement()
    count = device_count(devices)
    if data_parallel:
        mesh = make_mesh(count, DATA_AXIS)
        make_agent(config, mesh)  # the checks: trainer supported, envs / buffer / batch divide
        return Placement(mesh, True)
    return Placement(make_mesh(count, SEED_AXIS))
