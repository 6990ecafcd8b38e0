"""Running an agent: ``make_train`` is ``init`` followed by a ``lax.scan`` of ``update``.

The scan runs over update indices; after update ``i`` the deterministic evaluation runs when
``(i + 1) % eval_every == 0`` or ``i`` is the last update, behind a ``lax.cond``. The predicate
depends only on the scan index, never on vmapped data, so under ``jax.vmap`` (over seeds or
hyperparameters) the ``cond`` stays a branch instead of becoming a ``select`` that would evaluate
on every update, and the update body is compiled once.

The same step function drives :func:`run_chunked`, which runs K updates per compiled call so the
caller can report progress or checkpoint between calls; its result equals ``train``'s.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, NamedTuple

import jax
import jax.numpy as jnp

Metrics = dict[str, jax.Array]


def compiler_options() -> dict[str, Any]:
    """XLA options purerl recommends for the default backend.

    On CPU, LLVM optimisation level 1 instead of the default 2 compiles these small-network
    training programs about 1.5x faster and runs them as fast (benchmarks/RESULTS.md). Other
    backends get XLA's defaults.
    """
    if jax.default_backend() != "cpu":
        return {}
    return {"xla_backend_optimization_level": 1}


def jit(fn: Callable, **kwargs: Any) -> Callable:
    """``jax.jit`` with :func:`compiler_options`; a drop-in for training functions."""
    return jax.jit(fn, compiler_options=compiler_options() or None, **kwargs)


class Agent(NamedTuple):
    """A trainer's pieces. ``evaluate`` must not advance the state's random key, so that the
    training trajectory does not depend on how often it is evaluated."""

    init: Callable[..., Any]  # init(key, hparams=None) -> TrainState
    update: Callable[[Any], tuple[Any, Metrics]]  # one iteration: collect + learn
    act: Callable[..., jax.Array]  # act(params, obs, key, deterministic) -> env action
    evaluate: Callable[[Any], jax.Array]  # deterministic evaluation return of a TrainState
    num_updates: int
    eval_every: int  # 0: evaluate only after the last update


def policy_act_and_evaluate(policy: Callable[[Any, jax.Array], Any], env, env_params, spec,
                            cfg) -> tuple[Callable[..., jax.Array], Callable[[Any], jax.Array]]:
    """``(act, evaluate)`` for a trainer with a stochastic policy ``policy(params, obs) -> dist``
    (a :mod:`purerl.distributions` pytree) and a train state with ``params``, ``obs_norm`` and
    ``key`` fields.

    ``act(params, obs, key=None, deterministic=True, obs_norm=None)`` returns environment
    actions (the distribution's mode, or a sample); ``evaluate(state)`` is the mean return of
    ``cfg.eval_episodes`` deterministic episodes, with a key derived from (but not advancing)
    the state's key.
    """
    from purerl import envs  # loop is imported by the package root; keep it light

    def act(params, obs: jax.Array, key: jax.Array | None = None, deterministic: bool = True,
            obs_norm: Any = None) -> jax.Array:
        if obs_norm is not None:
            obs = envs.obs_normalize(obs_norm, obs)
        dist = policy(params, obs)
        return dist.env_action(dist.mode() if deterministic else dist.sample(key))

    return act, make_evaluate(act, env, env_params, spec, cfg)


def make_evaluate(act: Callable[..., jax.Array], env, env_params, spec, cfg
                  ) -> Callable[[Any], jax.Array]:
    """``evaluate(state)``: the mean return of ``cfg.eval_episodes`` episodes of
    ``act(state.params, obs, obs_norm=...)`` (the trainer's deterministic action), with the
    state's observation normaliser when ``cfg.normalize_obs`` and a key derived from (but not
    advancing) the state's key."""
    from purerl import rollout

    def evaluate(state) -> jax.Array:
        obs_norm = state.obs_norm if cfg.normalize_obs else None
        return rollout.evaluate(
            env, env_params, lambda obs: act(state.params, obs, obs_norm=obs_norm),
            jax.random.fold_in(state.key, 0xE7A1), cfg.eval_episodes, spec.max_episode_steps)

    return evaluate


def run_updates(agent: Agent, state: Any, start: jax.Array | int, length: int
                ) -> tuple[Any, Metrics]:
    """Updates ``start .. start + length - 1`` in a scan. ``eval_return`` is NaN on updates that
    are not followed by an evaluation."""
    n, every = agent.num_updates, agent.eval_every

    def step(state, i):
        state, metrics = agent.update(state)
        evaluate = i == n - 1
        if every > 0:
            evaluate = evaluate | ((i + 1) % every == 0)
        eval_return = jax.lax.cond(evaluate, agent.evaluate,
                                   lambda _: jnp.asarray(jnp.nan, jnp.float32), state)
        return state, {**metrics, "eval_return": eval_return}

    return jax.lax.scan(step, state, start + jnp.arange(length))


def make_train_fn(agent: Agent) -> Callable[..., tuple[Any, Metrics]]:
    """``train(key, hparams=None) -> (state, metrics)``; metrics have a leading update axis."""

    def train(key: jax.Array, hparams: Mapping[str, Any] | None = None):
        return run_updates(agent, agent.init(key, hparams), 0, agent.num_updates)

    return train


def even_chunk(num_updates: int, chunk: int) -> int:
    """A chunk length near ``chunk`` (between chunk / 2 and chunk) that divides ``num_updates``,
    so every compiled call has the same length and compiles once; ``chunk`` if there is none."""
    chunk = max(1, min(chunk, num_updates))
    for c in range(chunk, max(1, chunk // 2) - 1, -1):
        if num_updates % c == 0:
            return c
    return chunk


def run_chunked(agent: Agent, keys: jax.Array, hparams: Mapping[str, Any] | None = None,
                chunk: int = 10) -> Iterator[tuple[int, Any, Metrics]]:
    """Train ``len(keys)`` seeds (vmapped), yielding ``(updates_done, state, chunk_metrics)``
    after each compiled call of about ``chunk`` updates (see :func:`even_chunk`).
    Concatenating the chunks' metrics along axis 1 gives ``jax.vmap(train)(keys, hparams)``'s
    metrics."""
    chunk = even_chunk(agent.num_updates, chunk)
    state = jit(jax.vmap(agent.init, in_axes=(0, None if hparams is None else 0)))(keys, hparams)
    run = jit(jax.vmap(lambda s, start, length: run_updates(agent, s, start, length),
                       in_axes=(0, None, None)), static_argnums=2)
    done = 0
    while done < agent.num_updates:
        length = min(chunk, agent.num_updates - done)
        state, metrics = run(state, done, length)
        done += length
        yield done, state, metrics
