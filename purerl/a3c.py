"""Asynchronous advantage actor-critic (A3C; Mnih et al. 2016, arXiv:1602.01783, Algorithm S3),
modelled deterministically in one compiled program.

The original A3C runs actor-learner threads that each copy the global parameters, act for up to
``t_max`` steps (purerl's ``num_steps``), compute an n-step actor-critic gradient with their (by
then possibly stale) copy, and apply it to the global parameters without locks (Hogwild; Recht
et al. 2011), with RMSProp statistics shared between threads. What makes it A3C rather than A2C
is that gradients computed with stale parameters are applied to parameters that other workers
have already moved.

purerl keeps that and drops the nondeterminism. ``num_workers`` = W workers each hold their own
parameter copy (``TrainState.worker_params``, stacked on a leading W axis) and their own
``num_envs`` environments (the run state's ``env_state`` has a leading W axis too). Each update
(a "round"):

1. every worker rolls out ``num_steps`` steps and computes its gradient with its own copy --
   the W workers run in parallel, as one ``jax.vmap`` (the n-step returns and loss are A2C's
   worker, :class:`purerl.a2c.Worker`);
2. a ``lax.scan`` over k = 0 .. W-1 applies worker k's gradient to the global parameters (one
   optimiser step each; the global RMSProp statistics are shared by all workers, as in the
   paper's shared-RMSProp variant) and re-syncs worker k's copy to the global parameters right
   after its own gradient is applied.

So worker k's next rollout sees global updates up to its own, while the other copies stay
stale. The global version counter counts applied gradients; a gradient's staleness is the
global version when it is applied minus the version of the copy that computed it. The order is
fixed, so the staleness is deterministic: k for worker k in the first round, W-1 for every
worker afterwards (metric ``staleness``, the mean over workers). There are no threads and no
races: no two gradients are ever applied at once, no update is lost or half-applied, and a run
is reproducible from its key. W=1 is A2C: the same keys, and the same parameters up to
float rounding (the vmap over one worker compiles differently; tested).

Each worker may explore differently: worker k's entropy coefficient is
``ent_coef * ent_coef_spread ** (k / (W - 1) - 0.5)`` (a geometric spread around ``ent_coef``;
1.0 gives every worker ``ent_coef``). Observation normalisation statistics (``normalize_obs``)
are global, updated once per round from every worker's observations. ``lr`` is annealed over
the global number of gradient applications.

With ``memory="gru"`` or ``"lstm"`` (:mod:`purerl.recurrent`) every worker runs A2C's recurrent
worker (:class:`purerl.a2c.RecurrentWorker`): it keeps the carries of its own ``num_envs``
environments between rounds (``RecurrentTrainState.memory``, leading worker axis), reset where
an episode begins, and computes its gradient by backpropagation through its whole segment,
replayed with its (stale) copy from the carries the segment began with. The carries were made by
the copy that acted, so a worker's memory is as stale as its parameters. W=1 is recurrent A2C
(tested).

Metrics besides the common ones: A2C's (``policy_loss``, ``value_loss``, ``entropy``,
``explained_variance``: means over the workers; ``lr``: the mean over the round's gradient
applications) and ``staleness``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from purerl import a2c, envs, loop, optim, recurrent, rollout
from purerl.config import AT_LEAST_ONE, POSITIVE, hparam, static
from purerl.networks import torso_for
from purerl.normalize import ObsNormalizer


@dataclasses.dataclass(frozen=True)
class Config(a2c.Config):
    """A3C hyperparameters: A2C's plus the number of workers and their entropy spread.
    ``num_envs`` counts environments per worker, ``total_timesteps`` env steps of all workers.
    The defaults (4 workers x 4 envs, num_steps 8, shared RMSProp at lr 4e-3 annealed to 0)
    solve CartPole-v1 in 200k env steps (final deterministic evaluation 500 on 59 of 60 random
    seeds tried, 499 on the other)."""

    algo = "a3c"
    update_size = "num_workers * num_envs * num_steps"

    num_workers: int = static(4, "actor-learners, each with its own parameter copy and "
                              "environments", POSITIVE)
    num_envs: int = static(4, "parallel environments per worker", POSITIVE)

    lr: float = hparam(4e-3, "learning rate of the global optimiser", POSITIVE)
    ent_coef_spread: float = hparam(4.0, "ratio of the largest to the smallest worker's entropy "
                                    "coefficient (1: every worker uses ent_coef)", AT_LEAST_ONE)

    @property
    def steps_per_update(self) -> int:
        """Environment steps in one round: num_workers * num_envs * num_steps."""
        return self.num_workers * self.num_envs * self.num_steps


@struct.dataclass
class TrainState:
    params: Any  # global parameters
    worker_params: Any  # each worker's copy, leading axis num_workers
    opt_state: Any  # global optimiser state (shared RMSProp / Adam statistics)
    version: jax.Array  # gradients applied to the global parameters
    worker_version: jax.Array  # [num_workers] global version each copy was synced at
    run: loop.RunState  # env_state has a leading num_workers axis; update_step counts rounds


class Applied(NamedTuple):
    """The carry of the scan that applies the workers' gradients."""

    params: Any
    opt_state: Any
    version: jax.Array


class Round(NamedTuple):
    """The pieces of one A3C update, exposed for inspection and tests (:func:`make_round`).
    ``cfg`` is the config with the state's (possibly traced) hyperparameters.

    * ``collect(cfg, state) -> (key, env_states, trajs)``: every worker's rollout with its own
      copy (``trajs`` have a leading worker axis); ``key`` is the state's next key.
    * ``gradients(cfg, state, trajs) -> (grads, metrics)``: every worker's gradient with its own
      copy.
    * ``apply(cfg, state, grads) -> (state, staleness, lrs)``: the scan over workers.
    * ``worker``: A2C's worker (``worker.gradient`` gives one worker's gradient for any params).
    """

    config: Config
    worker: a2c.Worker

    def ent_coefs(self, cfg: Config) -> jax.Array:
        """The per-worker entropy coefficients, ``[num_workers]``."""
        return worker_ent_coefs(cfg.num_workers, cfg.ent_coef, cfg.ent_coef_spread)

    def collect(self, cfg: Config, state: TrainState):
        key, rollout_key = jax.random.split(state.run.key)
        keys = jax.vmap(lambda k: jax.random.fold_in(rollout_key, k))(
            jnp.arange(cfg.num_workers))
        norm = state.run.obs_norm
        env_states, trajs = jax.vmap(
            lambda params, env_state, k: self.worker.rollout(cfg, params, norm, env_state, k))(
            state.worker_params, state.run.env_state, keys)
        return key, env_states, trajs

    def gradients(self, cfg: Config, state: TrainState, trajs: rollout.Trajectory):
        norm = state.run.obs_norm
        return jax.vmap(lambda params, traj, ent_coef: self.worker.gradient(
            cfg, params, norm, traj, ent_coef))(state.worker_params, trajs, self.ent_coefs(cfg))

    def apply(self, cfg: Config, state: TrainState, grads):
        return apply_gradients(cfg, state, grads)


def worker_ent_coefs(num_workers: int, ent_coef, spread) -> jax.Array:
    """ent_coef * spread ** (k / (W - 1) - 0.5) for k = 0 .. W-1 (ent_coef when W = 1)."""
    if num_workers == 1:
        return jnp.reshape(jnp.asarray(ent_coef, jnp.float32), (1,))
    exponent = jnp.arange(num_workers, dtype=jnp.float32) / (num_workers - 1) - 0.5
    return ent_coef * jnp.asarray(spread, jnp.float32) ** exponent


def apply_gradients(cfg: Config, state: TrainState, grads
                    ) -> tuple[TrainState, jax.Array, jax.Array]:
    """Apply the workers' gradients (leading worker axis) to the global parameters in worker
    order, re-syncing each worker's copy right after its own gradient; returns the state, each
    gradient's staleness and each step's learning rate."""
    total_steps = cfg.num_updates * cfg.num_workers  # gradient applications in a run

    def apply_one(carry: Applied, x):
        grad, copy_version = x
        lr = a2c.learning_rate(cfg, carry.version, total_steps)
        params, opt_state = a2c.apply_gradient(cfg, lr, carry.params, carry.opt_state, grad)
        version = carry.version + 1
        return Applied(params, opt_state, version), (params, version,
                                                     carry.version - copy_version,
                                                     jnp.asarray(lr, jnp.float32))

    applied, (copies, copy_versions, staleness, lrs) = jax.lax.scan(
        apply_one, Applied(state.params, state.opt_state, state.version),
        (grads, state.worker_version))
    state = state.replace(params=applied.params, worker_params=copies,
                          opt_state=applied.opt_state, version=applied.version,
                          worker_version=copy_versions)
    return state, staleness, lrs


def make_round(config: Config | Mapping[str, Any] | None = None) -> Round:
    config = Config.coerce(config)
    if config.memory != "none":
        raise ValueError("a3c.make_round builds the feed-forward round; with memory="
                         f"{config.memory!r} the agent is make_recurrent_agent's")
    return Round(config, a2c.make_worker(config, envs.trainer_env(config).env))


def make_agent(config: Config | Mapping[str, Any] | None = None) -> loop.Agent:
    config = Config.coerce(config)
    if config.memory != "none":
        return make_recurrent_agent(config)
    rnd = make_round(config)
    config, env = rnd.config, rnd.worker.env
    num_workers = config.num_workers

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp, params, opt_state, key, env_key = a2c.init_parts(config, rnd.worker, key, hparams)
        # RunState.start in two steps, so the worker copies are traced between the reset and
        # the run state, as in earlier versions (the same compiled program)
        obs_norm = ObsNormalizer.create(env.spec.obs_shape, config.normalize_obs)
        env_state = a2c.reset_workers(config, env, num_workers)(env_key)
        return TrainState(
            params=params,
            worker_params=jax.tree.map(lambda x: jnp.stack([x] * num_workers), params),
            opt_state=opt_state,
            version=jnp.zeros((), loop.counter_dtype()),
            worker_version=jnp.zeros((num_workers,), loop.counter_dtype()),
            run=loop.RunState.create(key, hp, obs_norm, env_state),
        )

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        cfg = config.with_hparams(state.run.hparams)
        key, env_state, trajs = rnd.collect(cfg, state)
        grads, info = rnd.gradients(cfg, state, trajs)
        new_state, staleness, lrs = rnd.apply(cfg, state, grads)
        stats = rollout.episode_stats(trajs)  # over every worker's environments
        metrics = {name: info[name].mean()
                   for name in ("policy_loss", "value_loss", "entropy", "explained_variance")}
        metrics.update(
            episode_return=stats.mean_return,
            episode_count=stats.count,
            staleness=staleness.astype(jnp.float32).mean(),
            lr=lrs.mean(),
        )
        run = state.run.advance(key, cfg.steps_per_update, env_state=env_state,
                                obs_norm=state.run.obs_norm.update(trajs.obs))
        return new_state.replace(run=run), metrics

    act, value = a2c.policy_act_and_value(rnd.worker)
    return loop.Agent(init, update, act, loop.make_evaluate(act, env, config.eval_episodes),
                      config.num_updates, config.eval_every, value)


@struct.dataclass
class RecurrentTrainState(TrainState):
    """With ``memory``: ``params`` (and every worker's copy) are the recurrent actor-critic's,
    and ``memory`` every worker's environments' carries, leading axis num_workers."""

    memory: rollout.Memory


_A2C_METRICS = ("policy_loss", "value_loss", "entropy", "explained_variance")


def make_recurrent_agent(config: Config) -> loop.Agent:
    """A3C with recurrent workers (``config.memory``; :class:`purerl.a2c.RecurrentWorker`)."""
    env = envs.trainer_env(config).env
    spec = env.spec
    net = recurrent.make_network(config, spec, torso_for(config.torso, spec.obs_shape))
    worker = a2c.RecurrentWorker(net, env)
    num_workers = config.num_workers

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> RecurrentTrainState:
        # the keys and parameters of recurrent A2C's init, for every worker
        hp = config.initial_hparams(hparams)
        key, net_key, env_key = jax.random.split(key, 3)
        params = recurrent.init_params(net, net_key, spec)
        opt_state = optim.OPTIMIZERS[config.optimizer](1.0, 1.0).init(params)
        memory = rollout.Memory.create(net.initial_carry(config.num_envs))

        def stack(tree):
            return jax.tree.map(lambda x: jnp.stack([x] * num_workers), tree)

        return RecurrentTrainState(
            params=params,
            worker_params=stack(params),
            opt_state=opt_state,
            version=jnp.zeros((), loop.counter_dtype()),
            worker_version=jnp.zeros((num_workers,), loop.counter_dtype()),
            run=loop.RunState.start(key, hp, config, env, env_key,
                                    a2c.reset_workers(config, env, num_workers)),
            memory=stack(memory),
        )

    def update(state: RecurrentTrainState) -> tuple[RecurrentTrainState, loop.Metrics]:
        cfg = config.with_hparams(state.run.hparams)
        key, rollout_key = jax.random.split(state.run.key)
        keys = jax.vmap(lambda k: jax.random.fold_in(rollout_key, k))(
            jnp.arange(cfg.num_workers))
        norm = state.run.obs_norm
        # every worker's rollout and gradient with its own copy and its own carries
        env_state, memory, seqs = jax.vmap(
            lambda params, env_state, mem, k: worker.rollout(cfg, params, norm, env_state, mem,
                                                             k))(
            state.worker_params, state.run.env_state, state.memory, keys)
        grads, info = jax.vmap(lambda params, seq, ent_coef: worker.gradient(
            cfg, params, norm, seq, ent_coef))(
            state.worker_params, seqs,
            worker_ent_coefs(cfg.num_workers, cfg.ent_coef, cfg.ent_coef_spread))
        new_state, staleness, lrs = apply_gradients(cfg, state, grads)
        stats = rollout.episode_stats(seqs.traj)  # over every worker's environments
        metrics = {name: info[name].mean() for name in _A2C_METRICS}
        metrics.update(
            episode_return=stats.mean_return,
            episode_count=stats.count,
            staleness=staleness.astype(jnp.float32).mean(),
            lr=lrs.mean(),
        )
        run = state.run.advance(key, cfg.steps_per_update, env_state=env_state,
                                obs_norm=norm.update(seqs.traj.obs))
        return new_state.replace(run=run, memory=memory), metrics

    act, value = recurrent.act_and_value(net)
    return loop.Agent(init, update, act,
                      loop.make_evaluate(act, env, config.eval_episodes, net.initial_carry),
                      config.num_updates, config.eval_every, value, net.initial_carry)


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see "The trainer contract" in
    docs/contract.md."""
    return loop.make_train_fn(make_agent(config))
