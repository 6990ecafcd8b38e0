"""Running an agent: the run state every trainer carries, ``make_train`` (``init`` followed by a
``lax.scan`` of ``update``) and chunked runs.

Every trainer's ``TrainState`` has a field ``run`` holding a :class:`RunState` -- the
environments, the observation normaliser, the PRNG key, the step counters and the traced
hyperparameters -- beside what it learns. That is all this module reads of a state: it reports
``run.env_steps`` after every update and derives the evaluation key from ``run.key``.

The scan runs over update indices; after update ``i`` the deterministic evaluation runs when
``(i + 1) % eval_every == 0`` or ``i`` is the last update, behind a ``lax.cond``. The predicate
depends only on the scan index, never on vmapped data, so under ``jax.vmap`` (over seeds or
hyperparameters) the ``cond`` stays a branch instead of becoming a ``select`` that would evaluate
on every update, and the update body is compiled once.

:func:`run_chunked` runs the same scan in compiled calls of about K updates so the caller can
report progress or checkpoint in between; its result equals ``jax.vmap(train)``'s bitwise on the
same machine (see its docstring for how).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from purerl import memory, prng
from purerl.normalize import ObsNormalizer

Metrics = dict[str, jax.Array]


def compiler_options(recurrent: bool = False) -> dict[str, Any]:
    """XLA options purerl recommends for the default backend.

    On CPU, LLVM optimisation level 1 instead of the default 2 compiles these small-network
    training programs about 1.5x faster and runs them as fast (benchmarks/RESULTS.md). Other
    backends get XLA's defaults, and so does a process whose ``XLA_FLAGS`` sets
    ``--xla_backend_optimization_level`` itself (the user's choice wins). Level 0 compiles
    faster still but breaks the bitwise equality of chunked and one-call runs
    (docs/contract.md).

    ``recurrent`` (the program of a recurrent policy, ``memory`` set): on CPU also without
    XLA's YNNPACK fusions (``--xla_cpu_experimental_ynn_fusion_type=``, unless ``XLA_FLAGS``
    sets that flag). On PureJaxRL's recurrent CartPole config at 8 seeds that ran 12% faster
    and compiled 25% faster; feed-forward PPO ran 22% slower without them, so only recurrent
    programs leave them out (benchmarks/RESULTS.md, "Recurrent PPO").
    """
    if jax.default_backend() != "cpu":
        return {}
    flags = os.environ.get("XLA_FLAGS", "")
    options: dict[str, Any] = {}
    if "xla_backend_optimization_level" not in flags:
        options["xla_backend_optimization_level"] = 1
    if recurrent and "xla_cpu_experimental_ynn_fusion_type" not in flags:
        options["xla_cpu_experimental_ynn_fusion_type"] = ""
    return options


# the attribute by which a function says it runs a recurrent policy (see ``jit``)
RECURRENT_ATTR = "purerl_recurrent"


def is_recurrent(fn: Callable) -> bool:
    """Whether ``fn``, or a function it wraps (``jax.vmap``, ``functools.partial``), carries
    :data:`RECURRENT_ATTR` set, as ``make_train``'s function of a recurrent policy does."""
    for _ in range(64):
        if getattr(fn, RECURRENT_ATTR, False):
            return True
        inner = getattr(fn, "__wrapped__", None) or getattr(fn, "func", None)
        if inner is None or inner is fn:
            return False
        fn = inner
    return False


def jit(fn: Callable, *, recurrent: bool | None = None, **kwargs: Any) -> Callable:
    """``jax.jit`` with :func:`compiler_options`; a drop-in for training functions.

    ``recurrent``: whether ``fn`` runs a recurrent policy; by default read from ``fn``
    (:func:`is_recurrent`: ``make_train``'s function says so, and ``jax.vmap`` and
    ``functools.partial`` keep it, but a lambda around it hides it: that program then compiles
    with the feed-forward options, so it computes the same up to float rounding but no longer
    equals a chunked run of the agent bitwise)."""
    if recurrent is None:
        recurrent = is_recurrent(fn)
    return jax.jit(fn, compiler_options=compiler_options(recurrent) or None, **kwargs)


def counter_dtype() -> Any:
    """The dtype of the step counters: int64 when ``JAX_ENABLE_X64=1``, else int32 (configs
    refuse budgets past its range, see :func:`purerl.config.counter_max`)."""
    return jnp.int64 if jax.config.read("jax_enable_x64") else jnp.int32


@struct.dataclass
class RunState:
    """The part of every trainer's state that is not learned."""

    env_state: Any  # batched envs.EnvState (None where every update resets its environments)
    obs_norm: Any  # normalize.ObsNormalizer (the identity when normalize_obs is off)
    key: jax.Array  # the training key; every update splits it
    update_step: jax.Array  # updates done; the same for every seed
    env_steps: jax.Array  # environment steps taken (per seed)
    hparams: dict[str, jax.Array]  # the traced hyperparameters (float32)

    @classmethod
    def create(cls, key: jax.Array, hparams: dict[str, jax.Array], obs_norm: Any,
               env_state: Any = None) -> "RunState":
        zero = jnp.zeros((), counter_dtype())
        # the same generator with its hash unrolled: on CPU every draw is then one fused
        # kernel instead of a while loop of ~80 tiny ops (purerl.prng)
        return cls(env_state, obs_norm, prng.unrolled(key), zero, zero, hparams)

    @classmethod
    def start(cls, key: jax.Array, hparams: dict[str, jax.Array], config: Any, env: Any,
              env_key: jax.Array | None = None,
              reset: Callable[[jax.Array], Any] | None = None) -> "RunState":
        """The run state of a new run of ``config`` on ``env`` (an :class:`purerl.envs.Env`):
        the observation normaliser of ``env.spec`` (the identity unless
        ``config.normalize_obs``) and ``config.num_envs`` environments reset with ``env_key``,
        or ``reset(env_key)`` when given; no environment state without ``env_key`` (trainers
        that reset their environments in every update)."""

        obs_norm = ObsNormalizer.create(env.spec.obs_shape, config.normalize_obs)
        if env_key is None:
            env_state = None
        elif reset is None:
            env_state = env.reset(env_key, config.num_envs)
        else:
            env_state = reset(env_key)
        return cls.create(key, hparams, obs_norm, env_state)

    def advance(self, key: jax.Array, env_steps: int | jax.Array, **changes: Any) -> "RunState":
        """The run state after one more update that took ``env_steps`` environment steps and
        left the next key ``key``; ``changes`` replace other fields (env_state, obs_norm)."""
        return self.replace(key=key, update_step=self.update_step + 1,
                            env_steps=self.env_steps + jnp.asarray(env_steps).astype(
                                self.env_steps.dtype), **changes)


class Agent(NamedTuple):
    """A trainer's pieces. ``evaluate`` must not advance the state's random key, so that the
    training trajectory does not depend on how often it is evaluated."""

    init: Callable[..., Any]  # init(key, hparams=None) -> TrainState
    update: Callable[[Any], tuple[Any, Metrics]]  # one iteration: collect + learn
    act: Callable[..., jax.Array]  # act(state, obs, key=None, deterministic=True) -> env action
    evaluate: Callable[[Any], jax.Array]  # deterministic evaluation return of a TrainState
    num_updates: int
    eval_every: int  # 0: evaluate only after the last update
    # value(state, obs): the critic's estimate of the state's value under the current policy
    # (V(s), or Q(s, a) at the deterministic action); None for trainers without a critic
    value: Callable[[Any, jax.Array], jax.Array] | None = None
    # a recurrent policy (config.memory != "none"): initial_carry(batch) is the carry of a new
    # episode in each of `batch` environments, and act(state, obs, carry, key=None,
    # deterministic=True) -> (env action, carry); None for feed-forward policies
    initial_carry: Callable[[int], Any] | None = None


def make_evaluate(act: Callable[..., Any], env: Any, num_episodes: int,
                  initial_carry: Callable[[int], Any] | None = None
                  ) -> Callable[[Any], jax.Array]:
    """``evaluate(state)``: the mean return of ``num_episodes`` episodes of
    ``act(state, obs)`` (the deterministic policy) on ``env`` (an :class:`purerl.envs.Env`),
    with a key derived from (but not advancing) ``state.run.key``. A recurrent policy
    (``initial_carry``): ``act(state, obs, carry) -> (action, carry)`` from a new carry."""
    from purerl import rollout  # the package root imports loop; keep it light

    def evaluate(state) -> jax.Array:
        key = jax.random.fold_in(state.run.key, 0xE7A1)
        if initial_carry is None:
            return rollout.evaluate(env, lambda obs: act(state, obs), key, num_episodes)
        return rollout.evaluate(env, lambda obs, carry: act(state, obs, carry), key,
                                num_episodes, memory=initial_carry(num_episodes))

    return evaluate


def run_updates(agent: Agent, state: Any, start: jax.Array | int, length: int
                ) -> tuple[Any, Metrics]:
    """Updates ``start .. start + length - 1`` in a scan. Adds the metrics ``env_steps`` (after
    the update) and ``eval_return`` (NaN on updates that are not followed by an evaluation)."""
    n, every = agent.num_updates, agent.eval_every

    def step(state, i):
        state, metrics = agent.update(state)
        evaluate = i == n - 1
        if every > 0:
            evaluate = evaluate | ((i + 1) % every == 0)
        eval_return = jax.lax.cond(evaluate, agent.evaluate,
                                   lambda _: jnp.asarray(jnp.nan, jnp.float32), state)
        return state, {**metrics, "env_steps": state.run.env_steps, "eval_return": eval_return}

    return jax.lax.scan(step, state, start + jnp.arange(length, dtype=counter_dtype()))


def make_train_fn(agent: Agent) -> Callable[..., tuple[Any, Metrics]]:
    """``train(key, hparams=None) -> (state, metrics)``; metrics have a leading update axis.
    ValueError if one seed's train state cannot fit in memory (:mod:`purerl.memory`)."""
    memory.check(agent, chunked=False, what="one seed of this run")

    def train(key: jax.Array, hparams: Mapping[str, Any] | None = None):
        # The barrier keeps XLA from folding the initial state (e.g. default hyperparameters,
        # which are constants here) into the update: the scan then compiles to the same program
        # as a chunk of run_chunked, whose state arrives as an argument.
        state = jax.lax.optimization_barrier(agent.init(key, hparams))
        return run_updates(agent, state, 0, agent.num_updates)

    setattr(train, RECURRENT_ATTR, agent.initial_carry is not None)
    return train


def even_chunk(num_updates: int, chunk: int, align: int | None = None) -> int:
    """A chunk length near ``chunk`` (between chunk / 2 and chunk) that divides ``num_updates``,
    so every compiled call has the same length and compiles once; ``chunk`` if there is none.

    With ``align`` (e.g. a checkpoint interval) the length is at most ``align`` and divides it
    where one in that range does, preferring one that also divides ``num_updates``; chunk
    boundaries then fall on every multiple of ``align`` (:func:`run_chunked` with ``align``
    cuts a chunk short where one does not)."""
    if align is None:
        chunk = max(1, min(chunk, num_updates))
        for c in range(chunk, max(1, chunk // 2) - 1, -1):
            if num_updates % c == 0:
                return c
        return chunk
    chunk = max(1, min(chunk, num_updates, align))
    candidates = range(chunk, max(1, chunk // 2) - 1, -1)
    for divides in (lambda c: align % c == 0 and num_updates % c == 0,
                    lambda c: align % c == 0):
        for c in candidates:
            if divides(c):
                return c
    return chunk


def seed_axes(state: Any) -> Any:
    """``in_axes`` for a state with a leading seed axis: ``None`` (pass ``x[0]`` unbatched) for
    every integer or boolean leaf, and every hyperparameter in ``run.hparams``, whose value is
    the same for all seeds; 0 elsewhere.

    Inside ``jax.vmap(train)`` the counters (update and gradient steps, replay positions,
    optimiser step counts, the environments' time steps) never depend on the key, so the scan
    keeps them unbatched: a ``lax.cond`` or ``select`` on them stays unbatched and XLA compiles
    the update for that batching. Hyperparameters that are not swept are unbatched there too,
    and XLA fuses a scalar hyperparameter differently from a per-seed one. A state that went
    through a vmapped ``init`` or a previous chunk has a seed axis on every leaf; passing these
    leaves back unbatched gives the next chunk the same batching -- the same compiled update --
    as one ``vmap(train)`` call. A leaf
    that is equal for all seeds only by chance (e.g. a replay buffer's integer actions, all 0
    before the first write) is re-batched by the scan itself, which computes the same values;
    ``run_chunked`` passes such leaves batched (:func:`_scan_axes`), so that every chunk of a
    run compiles to one program.
    """
    same = jax.device_get(_same_for_all_seeds(state))
    return jax.tree.map(lambda flag: None if bool(flag) else 0, same)


def _is_counter(x: jax.Array) -> bool:
    return jnp.issubdtype(x.dtype, jnp.integer) or jnp.issubdtype(x.dtype, jnp.bool_)


@jax.jit
def _same_for_all_seeds(state: Any) -> Any:
    def same(x):
        return jnp.all(x == x[:1])

    flags = jax.tree.map(lambda x: same(x) if _is_counter(x) else jnp.asarray(False), state)
    # hyperparameters that are not swept are unbatched inside vmap(train) as well
    return flags.replace(run=flags.run.replace(hparams=jax.tree.map(same, state.run.hparams)))


def unbatch(state: Any, axes: Any) -> Any:
    """``state`` with the leaves whose axis is ``None`` in ``axes`` (:func:`seed_axes`) taken at
    seed 0."""
    return jax.tree.map(lambda a, x: x if a == 0 or x is None else x[0], axes, state,
                        is_leaf=lambda a: a is None)


def updates_done(state: Any) -> int:
    """The number of updates a train state (batched over seeds or not) has done: its
    ``run.update_step``, the same for every seed."""
    return int(np.ravel(jax.device_get(state.run.update_step))[0])


# updates(state, start, length) -> (state, metrics): updates start .. start + length - 1 of a
# state with a leading seed axis, in one compiled call
ChunkRunner = Callable[[Any, int, int], tuple[Any, Metrics]]


def run_chunked(agent: Agent, keys: jax.Array | None, hparams: Mapping[str, Any] | None = None,
                chunk: int = 10, *, state: Any = None, start: int | None = None,
                align: int | None = None, check_finite: bool = True,
                updates: ChunkRunner | None = None) -> Iterator[tuple[int, Any, Metrics]]:
    """Train ``len(keys)`` seeds (vmapped), yielding ``(updates_done, state, chunk_metrics)``
    after each compiled call of about ``chunk`` updates (see :func:`even_chunk`).

    Concatenating the chunks' metrics along axis 1 gives ``jax.vmap(train)(keys, hparams)``'s
    metrics, and the final state its state, bitwise on the same machine: between calls the
    seed-independent counters go back in unbatched (:func:`seed_axes`), so every call runs the
    update that ``vmap(train)`` compiles.

    ``state`` continues a run instead of starting one: a state with a leading seed axis after
    ``start`` updates, as yielded here or restored by :mod:`purerl.checkpoint` (``keys`` and
    ``hparams`` are then unused: the state holds its keys and hyperparameters; ``start``
    defaults to the state's update counter and must equal it). A run continued from the state
    it had after ``start`` updates yields what the uninterrupted run yields from there, bitwise:
    the chunk boundaries are the multiples of the chunk length (a continuation that starts
    between two runs a shorter chunk first), and the result does not depend on them anyway.
    ``align``: chunk boundaries also fall on every multiple of ``align`` (the updates after
    which a checkpoint is wanted).

    Divergence watchdog (``check_finite``, on by default): after every chunk the parameters of
    every seed are checked (one compiled all-finite reduction); non-finite ones raise
    :class:`DivergenceError` instead of yielding that state, so the last state yielded (and
    anything the caller saved from it) is finite. A fresh run first checks that its train state
    fits in memory (:mod:`purerl.memory`).

    ``updates`` runs each chunk instead of the vmapped scan (a :data:`ChunkRunner`, e.g. the
    data-parallel one of :func:`purerl.distributed.run_chunked`); the chunk lengths, checks and
    yields stay this function's, except the memory check, which estimates the vmapped scan.
    """
    if align is not None and align < 1:
        raise ValueError(f"align must be >= 1, got {align}")
    chunk = even_chunk(agent.num_updates, chunk, align)
    if state is None:
        if keys is None:
            raise ValueError("run_chunked needs keys, or a state to continue from")
        if start not in (None, 0):
            raise ValueError(f"start={start} needs the state after {start} updates (state=...)")
        if updates is None:  # another runner's program has other sizes (e.g. per device)
            memory.check(agent, len(keys), seeds_name="the number of keys")
        state, done = vmapped_init(agent, hparams is not None)(keys, hparams), 0
    else:
        done = updates_done(state)
        if start is not None and start != done:
            raise ValueError(f"start={start} but the state has done {done} updates")
        if not 0 <= done <= agent.num_updates:
            raise ValueError(f"the state has done {done} updates, outside this agent's "
                             f"0..{agent.num_updates}")
    run = functools.partial(_seed_chunk, agent) if updates is None else updates
    while done < agent.num_updates:
        length = min(chunk - done % chunk, agent.num_updates - done)
        if align is not None:
            length = min(length, align - done % align)
        state, metrics = run(state, done, length)
        if check_finite:
            check_finite_params(state, done + 1, done + length, agent.num_updates)
        done += length
        yield done, state, metrics


class DivergenceError(FloatingPointError):
    """Parameters became non-finite (NaN or inf) during updates ``first..last`` (1-based; the
    state after update ``first - 1`` was finite) for the seeds ``seeds``."""

    def __init__(self, first: int, last: int, num_updates: int, seeds: list[int]) -> None:
        self.first, self.last, self.num_updates, self.seeds = first, last, num_updates, seeds
        when = (f"in update {last}" if first == last else
                f"during updates {first}-{last} (checked after each compiled chunk; a chunk of "
                "1 update names the exact one)")
        shown = ", ".join(map(str, seeds[:8])) + (", ..." if len(seeds) > 8 else "")
        # what happened, without the advice (the CLI gives advice from the config)
        self.what = (f"training diverged: the parameters of seed(s) {shown} became non-finite "
                     f"{when} of {num_updates}")
        super().__init__(f"{self.what}; lower the learning rate, clip gradients (max_grad_norm) "
                         "or normalise observations (normalize_obs)")

    def __reduce__(self) -> tuple:  # pickles (e.g. across processes) with its fields
        return type(self), (self.first, self.last, self.num_updates, self.seeds)


@jax.jit
def _finite_per_seed(params: Any) -> jax.Array:
    """[seeds] booleans: whether every floating-point leaf of a seed's ``params`` is finite."""
    flags = [jnp.isfinite(x).reshape(x.shape[0], -1).all(axis=1)
             for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.stack(flags).all(axis=0) if flags else jnp.ones((), bool)


def finite_per_seed(params: Any) -> np.ndarray:
    """``[seeds]`` booleans: whether every floating-point leaf of each seed's ``params``
    (leading seed axis) is finite."""
    return np.atleast_1d(jax.device_get(_finite_per_seed(params)))


def check_finite_params(state: Any, first: int, last: int, num_updates: int) -> None:
    """DivergenceError unless the parameters (``state.params``, leading seed axis) of every
    seed are finite after update ``last``; ``first``: the chunk's first update."""
    finite = finite_per_seed(getattr(state, "params", state))
    if not finite.all():
        raise DivergenceError(first, last, num_updates, np.flatnonzero(~finite).tolist())


def _seed_chunk(agent: Agent, state: Any, start: int, length: int) -> tuple[Any, Metrics]:
    """run_chunked's default :data:`ChunkRunner`: the vmapped scan, with the seed-independent
    leaves passed unbatched (:func:`seed_axes`)."""
    axes = _scan_axes(agent, state, seed_axes(state))
    leaves, treedef = jax.tree.flatten(axes, is_leaf=lambda x: x is None)
    run = _vmapped_updates(agent, treedef, tuple(leaves))
    return run(unbatch(state, axes), jnp.asarray(start, counter_dtype()), length)


def _scan_axes(agent: Agent, state: Any, axes: Any) -> Any:
    """``axes`` (:func:`seed_axes` of ``state``) with every leaf that the update scan batches
    anyway set to 0.

    A leaf equal for all seeds only by chance -- at the start of a run the environments' time
    steps, an empty replay buffer's actions -- is unbatched by :func:`seed_axes`, and the scan
    batches it again on entry (a carry is batched where any update makes it so). Passed in
    batched, it gives the same scan, so the first chunk compiles to the same program as the
    chunks after it instead of one of its own. Which leaves those are is read from one abstract
    trace of a one-update chunk (cached per agent and batching pattern): the outputs that leave
    the vmapped scan batched.
    """
    leaves, treedef = jax.tree.flatten(axes, is_leaf=lambda x: x is None)
    shapes, state_def = jax.tree.flatten(jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state))
    flags = _scan_batched(agent, treedef, tuple(leaves), state_def,
                          tuple((x.shape, x.dtype) for x in shapes))
    return jax.tree.map(lambda a, batched: 0 if batched else a, axes, flags,
                        is_leaf=lambda x: x is None)


def _is_batched(x: Any) -> bool:
    # jax has no public way to ask a vmap tracer whether it carries the batch axis
    try:
        from jax._src.interpreters.batching import BatchTracer
    except ImportError:  # another jax layout: every leaf as seed_axes says (one more compile)
        return False
    return isinstance(x, BatchTracer) and isinstance(getattr(x, "batch_dim", None), int)


@functools.lru_cache(maxsize=64)
def _scan_batched(agent: Agent, treedef: Any, leaves: tuple, state_def: Any,
                  avals: tuple) -> Any:
    """For :func:`_scan_axes`: a tree shaped like the axes, True where the scan's output is
    batched (None where the state has no array)."""
    axes = jax.tree.unflatten(treedef, leaves)
    state = jax.tree.unflatten(state_def, [jax.ShapeDtypeStruct(s, d) for s, d in avals])
    inputs = jax.tree.map(lambda a, x: x if a == 0 or x is None else
                          jax.ShapeDtypeStruct(x.shape[1:], x.dtype), axes, state,
                          is_leaf=lambda a: a is None)
    flags: list = []

    def one_update(s, start):
        s, _ = run_updates(agent, s, start, 1)
        flags.append(jax.tree.map(_is_batched, s))
        return s

    jax.eval_shape(jax.vmap(one_update, in_axes=(axes, None)), inputs,
                   jax.ShapeDtypeStruct((), counter_dtype()))
    return flags[0]


# One compiled init and chunk per agent (and batching pattern), so repeated calls of
# run_chunked with one agent -- another chunk size, a resumed run -- reuse the compilations.
@functools.lru_cache(maxsize=32)
def vmapped_init(agent: Agent, sweep: bool) -> Callable:
    """The compiled ``init(keys, hparams)`` of ``agent`` vmapped over a leading seed axis of
    ``keys`` (and of ``hparams`` when ``sweep``; unbatched otherwise), cached per agent."""
    init = jax.vmap(agent.init, in_axes=(0, 0 if sweep else None))
    return jit(lambda keys, hparams: strong_types(init(keys, hparams)),
               recurrent=agent.initial_carry is not None)


def strong_types(tree: Any) -> Any:
    """``tree`` with no weakly typed 32-bit (or narrower) leaf (a Python scalar in an
    environment's reset makes one: gymnax's time step). A chunk program is compiled for its
    arguments' weak types too, so a fresh state would otherwise compile another program than the
    same state restored from a checkpoint (orbax restores strong types): in a new process, a
    persistent compilation cache would miss. Same values, same results. 64-bit leaves (only
    under ``JAX_ENABLE_X64``) stay weak: the update scan narrows a weak carry to the type its
    body returns (a Python float is float64 there), where a strong one would be refused."""
    def strong(x):
        if (getattr(x, "weak_type", False) and x.dtype.itemsize <= 4
                and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended)):
            return jax.lax.convert_element_type(x, x.dtype)
        return x

    return jax.tree.map(strong, tree)


@functools.lru_cache(maxsize=64)
def _vmapped_updates(agent: Agent, treedef: Any, leaves: tuple) -> Callable:
    axes = jax.tree.unflatten(treedef, leaves)
    return jit(jax.vmap(lambda s, start, length: run_updates(agent, s, start, length),
                        in_axes=(axes, None, None)), static_argnums=2,
               recurrent=agent.initial_carry is not None)
