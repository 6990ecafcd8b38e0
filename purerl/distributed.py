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
data_parallel=DataParallel(axis, D))`` (:class:`purerl.parallel.DataParallel`); without it the
trainer's program is exactly the single-device one. The config's ``num_envs`` is the *global*
number, so a data-parallel run has the same config, the same train-state layout (checkpoints are
interchangeable) and -- where the algorithm makes it well defined -- the same result as the
single-device run with that config:

* every random draw is the single-device run's: environment keys and action samples are drawn
  for all ``num_envs`` environments and each device keeps its slice
  (:meth:`purerl.parallel.DataParallel.rows`);
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

Data parallel: :data:`DATA_PARALLEL` (A2C, DQN, the off-policy actor-critic, PPO, SAC, TRPO).
Not data parallel: REINFORCE, the batch and online actor-critics, A3C (its workers already are
its parallelism, applied in sequence), DDPG and TD3 (``make_agent`` takes no
``data_parallel``); shard their seeds instead.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from purerl import loop, replay

__all__ = ["data_parallel_train", "device_count", "gather", "initialize", "make_mesh", "pad_to",
           "restore", "run_chunked", "shard_state", "sharded_vmap", "train_grid", "train_seeds"]

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
                                  check_vma=False), recurrent=loop.is_recurrent(fn))


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


def _data_specs(state: Any, axis: str) -> Any:
    """shard_map specs of a state in the local layout: the environments' states split on their
    leading (environment) axis, replay data on its environment axis, the rest replicated."""
    specs = jax.tree.map(lambda _: P(), state)

    def buffer_specs(b, s):
        if not replay.is_buffer(b):
            return s
        return s.replace(data=jax.tree.map(lambda _: P(None, axis), b.data))

    specs = jax.tree.map(buffer_specs, state, specs, is_leaf=replay.is_buffer)
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
        local = replay.to_local_layout(state, num_envs, devices)
        specs = _data_specs(local, axis)

        def run(s, i):
            # on the device, a buffer [writes, local envs, ...] is a flat ring of local slots
            local_envs = num_envs // devices
            s = replay.reshape_buffers(s, lambda shape: (shape[0] * shape[1],) + shape[2:])
            s, metrics = loop.run_updates(agent, s, i, length)
            return replay.reshape_buffers(s, lambda shape: (-1, local_envs) + shape[1:]), metrics

        body = jax.shard_map(run, mesh=mesh, in_specs=(specs, P()), out_specs=(specs, P()),
                             check_vma=False)
        local, metrics = body(local, jnp.asarray(start, loop.counter_dtype()))
        return replay.from_local_layout(local, devices), metrics

    return updates


# the trainers whose make_agent takes data_parallel=
DATA_PARALLEL = ("a2c", "dqn", "off_policy_ac", "ppo", "sac", "trpo")


def make_agent(config: Any, mesh: Mesh | None = None) -> loop.Agent:
    """The data-parallel agent of ``config`` (a Config of a trainer in :data:`DATA_PARALLEL`)
    over ``mesh`` (default: every device, axis ``"data"``)."""
    import purerl
    # not at module level: it imports the environments, whose import starts JAX's backend,
    # and initialize() must run before that
    from purerl.parallel import DataParallel

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
    if state is not None:
        # a continued state (e.g. restored onto one device) goes onto every device of the mesh
        state = jax.device_put(state, NamedSharding(mesh, P()))

    def updates(s: Any, done: int, length: int) -> tuple[Any, loop.Metrics]:
        run = _data_parallel_chunk(agent, mesh, num_envs, length)
        return run(s, jnp.asarray(done, loop.counter_dtype()))

    yield from loop.run_chunked(agent, keys, hparams, chunk, state=state, start=start,
                                align=align, check_finite=check_finite, updates=updates)


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
