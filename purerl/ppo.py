"""Proximal Policy Optimization (Schulman et al. 2017), seeds 001-003.

One update: collect ``num_steps`` steps in each of ``num_envs`` environments, estimate
advantages with GAE (bootstrapping through truncations), then ``update_epochs`` passes of
shuffled minibatch gradient steps on

* ``variant="clip"``:  -E[min(r A, clip(r, 1 - eps, 1 + eps) A)] + c_v L_V - c_H H[pi], or
* ``variant="kl_penalty"``: -E[r A] + beta E[KL(pi_old || pi)] + c_v L_V - c_H H[pi], after
  which beta is halved when the batch's KL d < kl_target / 1.5 and doubled when d > 1.5 kl_target.

Discrete actions use a categorical policy; continuous actions a tanh-squashed diagonal Gaussian
rescaled to the environment's bounds (log-probabilities are those of the action sent to the
environment). Actor and critic are separate MLPs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from purerl import envs, losses, loop, optim, returns, rollout
from purerl.config import (RolloutConfig, hparam, non_negative, one_of, positive, redefault, static,
                           unit_interval)
from purerl.networks import ActorCriticParams as Params
from purerl.networks import Actor, ValueCritic


@dataclasses.dataclass(frozen=True)
class Config(RolloutConfig):
    """PPO hyperparameters. The defaults solve CartPole-v1 in 150k env steps (final deterministic
    evaluation 500 on 23 of 24 seeds tried, 481 on the other)."""

    algo = "ppo"

    total_timesteps: int = redefault("total_timesteps", 150_000)

    update_epochs: int = static(8, check=positive, why="must be > 0")
    num_minibatches: int = static(4, check=positive, why="must be > 0")
    variant: str = static("clip", check=one_of("clip", "kl_penalty"),
                          why="must be 'clip' or 'kl_penalty'")
    anneal_lr: bool = static(True)
    normalize_advantages: bool = static(True)
    clip_value: bool = static(False)
    log_std_init: float = static(0.0, continuous_only=True)

    lr: float = hparam(1e-3, check=positive, why="must be > 0")
    gamma: float = hparam(0.99, check=unit_interval, why="must be in [0, 1]")
    gae_lambda: float = hparam(0.95, check=unit_interval, why="must be in [0, 1]")
    clip_eps: float = hparam(0.2, check=positive, why="must be > 0")
    ent_coef: float = hparam(0.01, check=non_negative, why="must be >= 0")
    vf_coef: float = hparam(0.5, check=non_negative, why="must be >= 0")
    max_grad_norm: float = hparam(0.5, check=positive, why="must be > 0")
    kl_target: float = hparam(0.005, check=positive, why="must be > 0")
    kl_beta_init: float = hparam(1.0, check=positive, why="must be > 0")

    def validate(self) -> None:
        self.check_divides("num_minibatches", self.steps_per_update, "num_envs * num_steps")
        super().validate()


@struct.dataclass
class TrainState:
    params: Params
    opt_state: Any
    env_state: envs.EnvState
    obs_norm: envs.ObsNormState
    key: jax.Array
    update_step: jax.Array
    kl_beta: jax.Array
    hparams: dict[str, jax.Array]


class Batch(NamedTuple):
    """Flattened learning batch ``[num_envs * num_steps, ...]``."""

    obs: jax.Array
    action: jax.Array
    old_log_prob: jax.Array
    old_dist: Any
    old_value: jax.Array
    advantage: jax.Array
    target: jax.Array


def make_agent(config: Config | Mapping[str, Any] | None = None) -> loop.Agent:
    cfg = Config.coerce(config)
    env, env_params, spec = envs.make_env(cfg.env)
    cfg.check_action_space(spec.discrete, cfg.env)
    actor = Actor(spec, cfg.hidden_sizes, cfg.activation, cfg.log_std_init)
    critic = ValueCritic(cfg.hidden_sizes, cfg.activation, len(spec.obs_shape))

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp = cfg.initial_hparams(hparams)
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        dummy = jnp.zeros((1,) + spec.obs_shape)
        params = Params(actor.init(actor_key, dummy), critic.init(critic_key, dummy))
        return TrainState(
            params=params,
            opt_state=optim.adam(1.0, 1.0).init(params),
            env_state=envs.reset(env, env_params, env_key, cfg.num_envs),
            obs_norm=envs.obs_norm_init(spec.obs_shape),
            key=key,
            update_step=jnp.asarray(0, jnp.int32),
            kl_beta=hp["kl_beta_init"],
            hparams=hp,
        )

    def loss_fn(params: Params, mb: Batch, c: Config, kl_beta: jax.Array):
        dist = actor.apply(params.actor, mb.obs)
        log_prob = dist.log_prob(mb.action)
        adv = losses.normalize(mb.advantage) if cfg.normalize_advantages else mb.advantage
        if cfg.variant == "clip":
            pg_loss, clip_fraction = losses.clipped_surrogate_loss(
                log_prob, mb.old_log_prob, adv, c.clip_eps)
        else:
            pg_loss = losses.kl_penalty_loss(log_prob, mb.old_log_prob, adv,
                                             mb.old_dist.kl(dist), kl_beta)
            clip_fraction = losses.clip_fraction(log_prob, mb.old_log_prob, c.clip_eps)
        value = critic.apply(params.critic, mb.obs)
        v_loss = losses.value_loss(value, mb.target, mb.old_value,
                                   c.clip_eps if cfg.clip_value else None)
        entropy = dist.entropy().mean()
        total = pg_loss + c.vf_coef * v_loss - c.ent_coef * entropy
        return total, {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy,
                       "approx_kl": losses.approx_kl(log_prob, mb.old_log_prob),
                       "clip_fraction": clip_fraction}

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        c = cfg.with_hparams(state.hparams)
        key, rollout_key, shuffle_key = jax.random.split(state.key, 3)
        norm = envs.normalizer(state.obs_norm if cfg.normalize_obs else None)

        # --- collect
        policy = rollout.stochastic_policy(lambda obs: actor.apply(state.params.actor, norm(obs)))

        env_state, traj = rollout.collect(env, env_params, policy, rollout_key, state.env_state,
                                          cfg.num_steps)

        # --- targets (whole batch at once)
        obs, next_obs = norm(traj.obs), norm(traj.next_obs)
        old_dist = actor.apply(state.params.actor, obs)
        values = critic.apply(state.params.critic, obs)
        next_values = critic.apply(state.params.critic, next_obs)
        advantages, targets = returns.gae(traj.reward, values, next_values,
                                          traj.terminated, traj.truncated, c.gamma, c.gae_lambda)
        batch = Batch(obs, traj.action, old_dist.log_prob(traj.action), old_dist, values,
                      advantages, targets)
        batch = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)

        # --- learn: epochs of shuffled minibatches
        lr = c.lr
        if cfg.anneal_lr:
            lr = optim.linear_anneal(c.lr, state.update_step, cfg.num_updates)
        tx = optim.adam(lr, c.max_grad_norm)
        grad_fn = jax.grad(loss_fn, has_aux=True)

        def minibatch_step(carry, mb: Batch):
            params, opt_state = carry
            grads, info = grad_fn(params, mb, c, state.kl_beta)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), info

        (params, opt_state), info = optim.minibatch_epochs(
            minibatch_step, (state.params, state.opt_state), batch, shuffle_key,
            cfg.update_epochs, cfg.num_minibatches)
        metrics = jax.tree.map(jnp.mean, info)

        kl_beta = state.kl_beta
        if cfg.variant == "kl_penalty":
            kl = jnp.mean(batch.old_dist.kl(actor.apply(params.actor, batch.obs)))
            kl_beta = losses.adapt_kl_beta(kl_beta, kl, c.kl_target)
            metrics.update(kl=kl, kl_beta=kl_beta)

        obs_norm = envs.obs_norm_update(state.obs_norm, traj.obs) if cfg.normalize_obs \
            else state.obs_norm
        stats = rollout.episode_stats(traj)
        metrics.update(
            episode_return=stats.mean_return,
            episode_count=stats.count,
            explained_variance=losses.explained_variance(values, targets),
            lr=jnp.asarray(lr, jnp.float32),
            env_steps=(state.update_step + 1) * cfg.steps_per_update,
        )
        new_state = state.replace(params=params, opt_state=opt_state, env_state=env_state,
                                  obs_norm=obs_norm, key=key, update_step=state.update_step + 1,
                                  kl_beta=kl_beta)
        return new_state, metrics

    act, evaluate = loop.policy_act_and_evaluate(lambda p, obs: actor.apply(p.actor, obs),
                                                 env, env_params, spec, cfg)

    return loop.Agent(init, update, act, evaluate, cfg.num_updates, cfg.eval_every)


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see the trainer contract."""
    return loop.make_train_fn(make_agent(config))
