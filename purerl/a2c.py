"""Advantage actor-critic, synchronous (A2C): the synchronous variant of the advantage
actor-critic of Mnih et al. 2016 (arXiv:1602.01783, Algorithm S3).

One update: a worker runs ``num_envs`` environments for ``num_steps`` steps (the A3C paper's
``t_max``) with the current parameters, computes n-step returns backwards through its segment
exactly as A3C's worker loop does,

    R = 0 after a terminal step, V(s') after a truncated step or the segment's last step,
    G_t = r_t + gamma R,    A_t = G_t - V(s_t),

(or GAE advantages with ``use_gae``; Schulman et al. 2016, arXiv:1506.02438) and takes one
gradient step on

    L = -E[log pi(a_t|s_t) A_t] + c_v 0.5 E[(G_t - V(s_t))^2] - c_H E[H[pi(.|s_t)]].

Discrete actions use a categorical policy, continuous ones a tanh-squashed Gaussian; actor and
critic are separate MLPs, or one torso with two heads (``shared_torso``). RMSProp (the A3C
paper's optimiser) or Adam, with global-norm clipping and optional linear LR annealing.

The worker (rollout, then gradient with the worker's own parameters) is a :class:`Worker`
(:func:`make_worker`); :mod:`purerl.a3c` runs several of them with stale parameter copies and
applies their gradients one after another. A2C is that with one worker that is always synced;
its keys are derived as A3C's worker 0's, so A3C with ``num_workers=1`` reproduces A2C.

Metrics besides the common ones: ``policy_loss``, ``value_loss``, ``entropy``,
``explained_variance`` and ``lr``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from purerl import envs, loop, losses, optim, recurrent, returns, rollout
from purerl.parallel import SINGLE, DataParallel
from purerl.config import (ANNEAL_LR_SCHEDULE, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL,
                           RolloutConfig, choice, hparam, redefault, static)
from purerl.networks import ActorCritic, torso_for
from purerl.normalize import ObsNormalizer


@dataclasses.dataclass(frozen=True)
class Config(RolloutConfig):
    """A2C hyperparameters. The defaults solve CartPole-v1 in 200k env steps (final deterministic
    evaluation 500 on all 60 random seeds tried; also on 12 seeds each with ``num_steps`` 5 and
    16)."""

    algo = "a2c"
    renamed = {"t_max": "num_steps"}

    total_timesteps: int = redefault("total_timesteps", 200_000)

    num_steps: int = static(8, "rollout length per environment and update: the n-step segment "
                            "length, the A3C paper's t_max", POSITIVE)
    use_gae: bool = static(False, "GAE(lambda) advantages and targets instead of n-step "
                           "returns")
    optimizer: str = choice("rmsprop", ("rmsprop", "adam"),
                            "optimiser: RMSProp (the A3C paper's) or Adam")
    anneal_lr: bool = static(True, "anneal lr linearly to 0 over the run")
    shared_torso: bool = static(False, "one MLP torso with policy and value heads instead of "
                                "separate actor and critic MLPs")
    normalize_advantages: bool = static(False, "normalise advantages over each rollout")
    log_std_init: float = static(0.0, "initial log-std of the Gaussian policy",
                                 only="continuous")

    lr: float = hparam(7e-3, "learning rate", POSITIVE)
    gamma: float = hparam(0.99, "discount factor", UNIT_INTERVAL)
    gae_lambda: float = hparam(0.95, "GAE lambda (use_gae only)", UNIT_INTERVAL)
    ent_coef: float = hparam(0.01, "entropy bonus coefficient c_H", NON_NEGATIVE)
    vf_coef: float = hparam(0.5, "value loss coefficient c_v", NON_NEGATIVE)
    max_grad_norm: float = hparam(0.5, "global gradient-norm clip", POSITIVE)

    def budget_schedules(self) -> tuple[str, ...]:
        return (ANNEAL_LR_SCHEDULE,) if self.anneal_lr else ()


@struct.dataclass
class TrainState:
    params: Any
    opt_state: Any
    run: loop.RunState


# ----------------------------------------------------------------------------- the worker


class Worker(NamedTuple):
    """One actor-learner: :meth:`rollout` then :meth:`gradient`, both with the worker's own
    parameters. ``cfg`` is the config with the state's (possibly traced) hyperparameters;
    ``norm`` the run state's :class:`~purerl.normalize.ObsNormalizer`. ``dp``: data parallel,
    the worker's environments are this device's share of the run's (:mod:`purerl.distributed`);
    :data:`~purerl.parallel.SINGLE` (one device) leaves every computation as it is."""

    model: ActorCritic
    env: envs.Env
    dp: DataParallel = SINGLE

    def rollout(self, cfg: Config, params, norm: ObsNormalizer, env_state: envs.EnvState,
                key: jax.Array) -> tuple[envs.EnvState, rollout.Trajectory]:
        """``num_steps`` steps in ``num_envs`` environments (only the actor and the environment
        inside the loop)."""
        # the value head's output is unused here, so XLA removes it from the loop
        policy = self.dp.policy(lambda obs: self.model.apply(params, norm(obs))[0])
        return rollout.collect(self.dp.env(self.env), policy, key, env_state, cfg.num_steps)

    def gradient(self, cfg: Config, params, norm: ObsNormalizer, traj: rollout.Trajectory,
                 ent_coef) -> tuple[Any, loop.Metrics]:
        """Values and bootstrap values on the whole segment, n-step (or GAE) targets, and the
        gradient of the actor-critic loss with entropy coefficient ``ent_coef``. Data parallel:
        the gradient and statistics of every device's segment (each loss is a per-sample mean
        over equal shares, so the mean over devices is the whole batch's)."""
        dp = self.dp
        obs = norm(traj.obs)
        _, values = self.model.apply(params, obs)
        _, next_values = self.model.apply(params, norm(traj.next_obs))
        advantages, targets = segment_targets(cfg, traj, values, next_values, dp)

        def loss_fn(p):
            dist, v = self.model.apply(p, obs)
            return losses.actor_critic_loss(dist.log_prob(traj.action), dist.entropy(), v,
                                            targets, advantages, cfg.vf_coef, ent_coef)

        grads, info = dp.mean(jax.grad(loss_fn, has_aux=True)(params))
        stats = dp.episode_stats(traj)
        info.update(episode_return=stats.mean_return, episode_count=stats.count,
                    explained_variance=dp.explained_variance(values, targets))
        return grads, info

    def run(self, cfg: Config, params, norm: ObsNormalizer, env_state: envs.EnvState,
            key: jax.Array, ent_coef):
        """``(grads, env_state, traj, metrics)`` of one worker iteration."""
        env_state, traj = self.rollout(cfg, params, norm, env_state, key)
        grads, metrics = self.gradient(cfg, params, norm, traj, ent_coef)
        return grads, env_state, traj, metrics


def segment_targets(cfg: Config, traj: rollout.Trajectory, values: jax.Array,
                    next_values: jax.Array, dp: DataParallel = SINGLE
                    ) -> tuple[jax.Array, jax.Array]:
    """``(advantages, targets)`` of a segment: n-step returns (or GAE with ``use_gae``) from the
    values V(s_t) and V(s'_t) of the real next observations; advantages normalised over every
    device's segment with ``normalize_advantages``."""
    if cfg.use_gae:
        advantages, targets = returns.gae(traj.reward, values, next_values, traj.terminated,
                                          traj.truncated, cfg.gamma, cfg.gae_lambda)
    else:
        targets = returns.n_step_returns(traj.reward, next_values, traj.terminated,
                                         traj.truncated, cfg.gamma)
        advantages = targets - values
    if cfg.normalize_advantages:
        advantages = dp.normalize(advantages)
    return advantages, targets


class RecurrentWorker(NamedTuple):
    """:class:`Worker` with a recurrent policy (``config.memory``): the rollout carries every
    environment's memory, and the gradient replays the segment from the carry it began with
    (backpropagation through the whole segment). One device."""

    net: recurrent.RecurrentActorCritic
    env: envs.Env

    def rollout(self, cfg: Config, params, norm: ObsNormalizer, env_state: envs.EnvState,
                memory: rollout.Memory, key: jax.Array
                ) -> tuple[envs.EnvState, rollout.Memory, rollout.Sequences]:
        def step(carry, obs, start):
            return recurrent.one_step(self.net, params, carry, norm(obs), start)[:2]

        return rollout.collect_recurrent(self.env, rollout.recurrent_policy(step), key,
                                         env_state, memory, cfg.num_steps)

    def gradient(self, cfg: Config, params, norm: ObsNormalizer, seq: rollout.Sequences,
                 ent_coef) -> tuple[Any, loop.Metrics]:
        """One pass of the segment gives the values, the bootstrap values (one more cell step
        on each real next observation) and the loss; the targets are held constant."""
        traj = seq.traj

        def loss_fn(p):
            out = self.net.apply(p, seq.carry, norm(traj.obs), seq.start, norm(traj.next_obs))
            advantages, targets = jax.lax.stop_gradient(
                segment_targets(cfg, traj, out.value, out.next_value))
            loss, info = losses.actor_critic_loss(out.dist.log_prob(traj.action),
                                                  out.dist.entropy(), out.value, targets,
                                                  advantages, cfg.vf_coef, ent_coef)
            info["explained_variance"] = losses.explained_variance(
                jax.lax.stop_gradient(out.value), targets)
            return loss, info

        grads, info = jax.grad(loss_fn, has_aux=True)(params)
        stats = rollout.episode_stats(traj)
        info.update(episode_return=stats.mean_return, episode_count=stats.count)
        return grads, info


def make_worker(config: Config, env: envs.Env, dp: DataParallel = SINGLE) -> Worker:
    return Worker(ActorCritic(env.spec, config.hidden_sizes, config.activation,
                              config.log_std_init, config.shared_torso,
                              torso_for(config.torso, env.spec.obs_shape)), env, dp)


def learning_rate(cfg: Config, step, num_steps):
    """``cfg.lr``, linearly annealed to 0 over ``num_steps`` gradient steps with ``anneal_lr``."""
    return optim.linear_anneal(cfg.lr, step, num_steps) if cfg.anneal_lr else cfg.lr


def apply_gradient(cfg: Config, lr, params, opt_state, grads):
    """One optimiser step (``cfg.optimizer`` with clipping at ``cfg.max_grad_norm``)."""
    tx = optim.OPTIMIZERS[cfg.optimizer](lr, cfg.max_grad_norm)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def policy_act_and_value(worker: Worker):
    """``(act, value)`` of the global parameters ``state.params``."""
    act = rollout.policy_act(lambda state, obs: worker.model.apply(state.params, obs)[0])

    def value(state, obs: jax.Array) -> jax.Array:
        return worker.model.apply(state.params, state.run.obs_norm(obs))[1]

    return act, value


def init_parts(config: Config, worker: Worker, key: jax.Array,
               hparams: Mapping[str, Any] | None):
    """``(hparams, params, opt_state, key, env_key)`` shared by A2C's and A3C's ``init``; the
    run state starts with ``env_key`` and :func:`reset_workers`."""
    hp = config.initial_hparams(hparams)
    key, net_key, env_key = jax.random.split(key, 3)
    params = worker.model.init(net_key, jnp.zeros((1,) + worker.env.spec.obs_shape, jnp.float32))
    opt_state = optim.OPTIMIZERS[config.optimizer](1.0, 1.0).init(params)
    return hp, params, opt_state, key, env_key


def reset_workers(config: Config, env: envs.Env, num_workers: int | None = None):
    """``reset(env_key)`` for :meth:`purerl.loop.RunState.start`: worker k resets its
    ``num_envs`` environments with ``fold_in(env_key, k)``; one worker (A2C) when
    ``num_workers`` is None, else ``num_workers`` of them stacked on a leading axis (A3C)."""
    def reset_worker(env_key: jax.Array, k) -> envs.EnvState:
        return env.reset(jax.random.fold_in(env_key, k), config.num_envs)

    if num_workers is None:
        return lambda env_key: reset_worker(env_key, 0)
    return lambda env_key: jax.vmap(lambda k: reset_worker(env_key, k))(jnp.arange(num_workers))


# ----------------------------------------------------------------------------- the trainer


def make_agent(config: Config | Mapping[str, Any] | None = None,
               data_parallel: DataParallel | None = None) -> loop.Agent:
    """A2C's :class:`purerl.loop.Agent`. ``data_parallel``: the update runs inside
    ``jax.shard_map`` on this device's share of the ``num_envs`` environments, gradients and
    statistics averaged over devices (:mod:`purerl.distributed`)."""
    config = Config.coerce(config)
    dp = data_parallel or SINGLE
    dp.check(config)
    recurrent.check_data_parallel(config, dp)
    env = envs.trainer_env(config).env
    if config.memory != "none":
        return make_recurrent_agent(config, env)
    worker = make_worker(config, env, dp)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp, params, opt_state, key, env_key = init_parts(config, worker, key, hparams)
        return TrainState(params=params, opt_state=opt_state, run=loop.RunState.start(
            key, hp, config, env, env_key, reset_workers(config, env)))

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        cfg = config.with_hparams(state.run.hparams)
        key, rollout_key = jax.random.split(state.run.key)
        norm = state.run.obs_norm
        grads, env_state, traj, metrics = worker.run(
            cfg, state.params, norm, state.run.env_state, jax.random.fold_in(rollout_key, 0),
            cfg.ent_coef)
        lr = learning_rate(cfg, state.run.update_step, cfg.num_updates)
        params, opt_state = apply_gradient(cfg, lr, state.params, state.opt_state, grads)
        metrics.update(lr=jnp.asarray(lr, jnp.float32))
        run = state.run.advance(key, cfg.steps_per_update, env_state=env_state,
                                obs_norm=norm.update(traj.obs, axis_name=dp.axis_name))
        return state.replace(params=params, opt_state=opt_state, run=run), metrics

    act, value = policy_act_and_value(worker)
    return loop.Agent(init, update, act, loop.make_evaluate(act, env, config.eval_episodes),
                      config.num_updates, config.eval_every, value)


@struct.dataclass
class RecurrentTrainState(TrainState):
    memory: rollout.Memory  # every environment's carry between updates


def make_recurrent_agent(config: Config, env: envs.Env) -> loop.Agent:
    """A2C with a recurrent policy (``config.memory``)."""
    spec = env.spec
    net = recurrent.make_network(config, spec, torso_for(config.torso, spec.obs_shape))
    worker = RecurrentWorker(net, env)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> RecurrentTrainState:
        hp = config.initial_hparams(hparams)
        key, net_key, env_key = jax.random.split(key, 3)
        params = recurrent.init_params(net, net_key, spec)
        opt_state = optim.OPTIMIZERS[config.optimizer](1.0, 1.0).init(params)
        return RecurrentTrainState(
            params=params, opt_state=opt_state,
            run=loop.RunState.start(key, hp, config, env, env_key, reset_workers(config, env)),
            memory=rollout.Memory.create(net.initial_carry(config.num_envs)))

    def update(state: RecurrentTrainState) -> tuple[RecurrentTrainState, loop.Metrics]:
        cfg = config.with_hparams(state.run.hparams)
        key, rollout_key = jax.random.split(state.run.key)
        norm = state.run.obs_norm
        env_state, memory, seq = worker.rollout(cfg, state.params, norm, state.run.env_state,
                                                state.memory, jax.random.fold_in(rollout_key, 0))
        grads, metrics = worker.gradient(cfg, state.params, norm, seq, cfg.ent_coef)
        lr = learning_rate(cfg, state.run.update_step, cfg.num_updates)
        params, opt_state = apply_gradient(cfg, lr, state.params, state.opt_state, grads)
        metrics.update(lr=jnp.asarray(lr, jnp.float32))
        run = state.run.advance(key, cfg.steps_per_update, env_state=env_state,
                                obs_norm=norm.update(seq.traj.obs))
        return state.replace(params=params, opt_state=opt_state, run=run, memory=memory), metrics

    act, value = recurrent.act_and_value(net)
    return loop.Agent(init, update, act,
                      loop.make_evaluate(act, env, config.eval_episodes, net.initial_carry),
                      config.num_updates, config.eval_every, value, net.initial_carry)


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see "The trainer contract" in
    docs/contract.md."""
    return loop.make_train_fn(make_agent(config))
