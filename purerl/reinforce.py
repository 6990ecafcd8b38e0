"""REINFORCE / vanilla policy gradient (Williams 1992; seeds 000, 002 and 003).

One update samples N = ``num_episodes`` whole episodes with the current policy (every
environment is reset and run to the end of its first episode; later steps are masked out, so
every return is a true Monte-Carlo return, never bootstrapped) and takes one gradient step on
seed 000's entropy-regularised loss

    L(theta) = -(1/N) sum_i sum_t [ log pi_theta(a_t^i|s_t^i) Phi_t^i + beta H[pi_theta(.|s_t^i)] ]

with the weight Phi_t chosen by ``weighting``

* ``total``:        R(tau) = sum_t gamma^t r_t on every step of the episode (seed 000's first
                    estimator; gamma = 1 gives the undiscounted sum);
* ``reward_to_go``: Q_t = sum_{t' >= t} gamma^(t' - t) r_t' (causality);
* ``advantage``:    GAE(gamma, lambda) with a learned V (Spinning Up's VPG),

minus a ``baseline`` b(s_t): ``none``, ``mean`` (the batch mean of Phi) or ``value`` (a learned
V_phi(s_t)). The value function, when used, is fitted afterwards by ``vf_iters`` full-batch Adam
steps on the L2 loss to the reward-to-go Q_t.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import struct

from purerl import envs, losses, loop, optim, returns, rollout
from purerl.config import (BaseConfig, hparam, non_negative, one_of, positive, static,
                           unit_interval)
from purerl.networks import ActorCriticParams as Params
from purerl.networks import Actor, ValueCritic


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
    """REINFORCE hyperparameters. The defaults (reward-to-go with a value baseline) solve
    CartPole-v1."""

    algo = "reinforce"

    # an upper bound: each update simulates num_episodes * (the env's time limit) steps at most;
    # the metric env_steps counts the steps actually taken
    total_timesteps: int = static(1_000_000, check=positive, why="must be > 0")
    num_episodes: int = static(16, check=positive, why="must be > 0")
    weighting: str = static("reward_to_go", check=one_of("total", "reward_to_go", "advantage"),
                            why="must be 'total', 'reward_to_go' or 'advantage'")
    baseline: str = static("value", check=one_of("none", "mean", "value"),
                           why="must be 'none', 'mean' or 'value'")
    normalize_advantages: bool = static(False)
    vf_iters: int = static(20, check=positive, why="must be > 0")
    log_std_init: float = static(0.0, continuous_only=True)

    lr: float = hparam(3e-3, check=positive, why="must be > 0")
    vf_lr: float = hparam(3e-3, check=positive, why="must be > 0")
    gamma: float = hparam(0.99, check=unit_interval, why="must be in [0, 1]")
    gae_lambda: float = hparam(0.97, check=unit_interval, why="must be in [0, 1]")
    ent_coef: float = hparam(0.0, check=non_negative, why="must be >= 0")

    def validate(self) -> None:
        if self.weighting == "advantage" and self.baseline != "value":
            raise ValueError(
                f"reinforce config field 'baseline'={self.baseline!r}: weighting='advantage' "
                "subtracts the learned value function already; set baseline='value'")

    @property
    def uses_critic(self) -> bool:
        return self.baseline == "value"


@struct.dataclass
class TrainState:
    params: Params  # the critic is initialised but unused without a value baseline
    actor_opt: Any
    critic_opt: Any
    obs_norm: envs.ObsNormState
    key: jax.Array
    update_step: jax.Array
    env_steps: jax.Array
    hparams: dict[str, jax.Array]


def policy_weights(traj: rollout.Trajectory, mask: jax.Array, values: jax.Array,
                   next_values: jax.Array, weighting: str, baseline: str, gamma: float,
                   gae_lambda: float) -> jax.Array:
    """Phi_t - b(s_t) for a batch of whole episodes ``[T, N]`` (see the module docstring);
    ``mask`` marks the steps that belong to each column's episode.

    ``values``/``next_values`` are V(s_t) and V(s'_t); they are read only by the ``value``
    baseline and the ``advantage`` weighting. The ``mean`` baseline is the mean of Phi over the
    unmasked steps of the batch."""
    done = traj.done
    if weighting == "total":
        phi = returns.episode_returns(traj.reward, done, gamma)
    elif weighting == "reward_to_go":
        phi = returns.reward_to_go(traj.reward, done, gamma)
    else:
        return returns.gae(traj.reward, values, next_values, traj.terminated, traj.truncated,
                           gamma, gae_lambda)[0]
    if baseline == "value":
        return phi - values
    if baseline == "mean":
        return phi - losses.masked_sum(phi, mask)
    return phi


def reinforce_loss(log_prob: jax.Array, entropy: jax.Array, weights: jax.Array, mask: jax.Array,
                   ent_coef: float) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Seed 000's L(theta) = -(1/N) sum_i sum_t [log pi(a_t^i|s_t^i) Phi_t^i + beta H_t^i] over
    the unmasked steps of N = ``weights.shape[1]`` episodes."""
    num_episodes = weights.shape[1]
    pg = losses.policy_gradient_loss(log_prob, weights, mask, num_episodes)
    ent = losses.masked_sum(entropy, mask, num_episodes)
    return pg - ent_coef * ent, {"policy_loss": pg, "entropy": losses.masked_sum(entropy, mask)}


def make_agent(config: Config | Mapping[str, Any] | None = None) -> loop.Agent:
    cfg = Config.coerce(config)
    env, env_params, spec = envs.make_env(cfg.env)
    cfg.check_action_space(spec.discrete, cfg.env)
    max_steps = spec.max_episode_steps
    num_updates = cfg.num_updates_for(cfg.num_episodes * max_steps,
                                      "num_episodes * the env's time limit")
    actor = Actor(spec, cfg.hidden_sizes, cfg.activation, cfg.log_std_init)
    critic = ValueCritic(cfg.hidden_sizes, cfg.activation, len(spec.obs_shape))

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp = cfg.initial_hparams(hparams)
        key, actor_key, critic_key = jax.random.split(key, 3)
        dummy = jnp.zeros((1,) + spec.obs_shape)
        params = Params(actor.init(actor_key, dummy), critic.init(critic_key, dummy))
        return TrainState(
            params=params,
            actor_opt=optim.adam(1.0).init(params.actor),
            critic_opt=optim.adam(1.0).init(params.critic),
            obs_norm=envs.obs_norm_init(spec.obs_shape),
            key=key,
            update_step=jnp.asarray(0, jnp.int32),
            env_steps=jnp.asarray(0, jnp.int32),
            hparams=hp,
        )

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        c = cfg.with_hparams(state.hparams)
        key, rollout_key = jax.random.split(state.key)
        norm = envs.normalizer(state.obs_norm if cfg.normalize_obs else None)

        # --- sample N whole episodes
        policy = rollout.stochastic_policy(lambda obs: actor.apply(state.params.actor, norm(obs)))

        traj, mask = rollout.collect_episodes(env, env_params, policy, rollout_key,
                                              cfg.num_episodes, max_steps)

        # --- weights Phi_t - b(s_t), with the critic as it was before this update
        obs = norm(traj.obs)
        values = critic.apply(state.params.critic, obs)
        next_values = critic.apply(state.params.critic, norm(traj.next_obs))
        weights = policy_weights(traj, mask, values, next_values, cfg.weighting, cfg.baseline,
                                 c.gamma, c.gae_lambda)
        if cfg.normalize_advantages:
            weights = losses.normalize(weights, mask=mask)

        # --- one policy-gradient step
        def actor_loss(actor_params):
            dist = actor.apply(actor_params, obs)
            return reinforce_loss(dist.log_prob(traj.action), dist.entropy(), weights, mask,
                                  c.ent_coef)

        grads, info = jax.grad(actor_loss, has_aux=True)(state.params.actor)
        updates, actor_opt = optim.adam(c.lr).update(grads, state.actor_opt)
        actor_params = optax.apply_updates(state.params.actor, updates)

        # --- fit V to the Monte-Carlo reward-to-go
        targets = returns.reward_to_go(traj.reward, traj.done, c.gamma)
        critic_params, critic_opt = state.params.critic, state.critic_opt
        if cfg.uses_critic:
            critic_params, critic_opt, fit_losses = optim.fit(
                lambda p: losses.value_loss(critic.apply(p, obs), targets, mask=mask),
                critic_params, critic_opt, optim.adam(c.vf_lr), cfg.vf_iters)
            info.update(value_loss=fit_losses[-1],
                        explained_variance=losses.explained_variance(values, targets, mask))

        obs_norm = (envs.obs_norm_update(state.obs_norm, traj.obs, mask) if cfg.normalize_obs
                    else state.obs_norm)
        stats = rollout.episode_stats(traj, mask)
        env_steps = state.env_steps + mask.sum()
        info.update(episode_return=stats.mean_return, episode_count=stats.count,
                    episode_length=mask.sum() / cfg.num_episodes, env_steps=env_steps)
        new_state = state.replace(params=Params(actor_params, critic_params),
                                  actor_opt=actor_opt, critic_opt=critic_opt, obs_norm=obs_norm,
                                  key=key, update_step=state.update_step + 1,
                                  env_steps=env_steps)
        return new_state, info

    act, evaluate = loop.policy_act_and_evaluate(lambda p, obs: actor.apply(p.actor, obs),
                                                 env, env_params, spec, cfg)
    return loop.Agent(init, update, act, evaluate, num_updates, cfg.eval_every)


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see the trainer contract."""
    return loop.make_train_fn(make_agent(config))
