"""REINFORCE / vanilla policy gradient (Williams 1992; Sutton & Barto 2018, sections 13.3-13.4;
Achiam 2018, Spinning Up, for VPG).

One update samples N = ``num_episodes`` whole episodes with the current policy (every
environment is reset and run to the end of its first episode; later steps are masked out, so
every return is a true Monte-Carlo return, never bootstrapped) and takes one gradient step on
the entropy-regularised loss

    L(theta) = -(1/N) sum_i sum_t [ log pi_theta(a_t^i|s_t^i) Phi_t^i + beta H[pi_theta(.|s_t^i)] ]

(a sum over each episode's steps, averaged over episodes) with the weight Phi_t chosen by
``weighting``

* ``total``:        R(tau) = sum_t gamma^t r_t on every step of the episode (Williams' original
                    estimator; gamma = 1 gives the undiscounted sum);
* ``reward_to_go``: Q_t = sum_{t' >= t} gamma^(t' - t) r_t' (causality: an action does not
                    change the rewards before it);
* ``advantage``:    GAE(gamma, lambda) with a learned V (Schulman et al. 2016 (GAE),
                    arXiv:1506.02438; Spinning Up's VPG),

minus a ``baseline`` b(s_t): ``none``, ``mean`` (the batch mean of Phi) or ``value`` (a learned
V_phi(s_t)). The value function, when used, is fitted afterwards by ``vf_iters`` full-batch Adam
steps on the L2 loss to the reward-to-go Q_t.

Budget: ``total_timesteps`` is an upper bound, ``num_episodes`` x the environment's time limit
per update; the ``env_steps`` metric counts the steps actually taken (the unmasked ones).

Metrics besides the common ones: ``policy_loss``, ``entropy``, ``episode_length`` (mean over the
update's episodes) and, with the value baseline, ``value_loss`` (after the last fitting step)
and ``explained_variance`` (of the critic before the update).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import struct

from purerl import envs, losses, loop, optim, returns, rollout
from purerl.config import (NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, BaseConfig, choice, hparam,
                           redefault, static)
from purerl.networks import ActorCriticParams as Params
from purerl.networks import Actor, ValueCritic, torso_for


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
    """REINFORCE hyperparameters. The defaults (reward-to-go with a value baseline) solve
    CartPole-v1."""

    algo = "reinforce"

    # an upper bound: each update simulates num_episodes * (the env's time limit) steps at most;
    # the metric env_steps counts the steps actually taken
    total_timesteps: int = redefault("total_timesteps", 1_000_000)
    num_episodes: int = static(16, "whole episodes sampled per update (one environment each)",
                               POSITIVE)
    weighting: str = choice("reward_to_go", ("total", "reward_to_go", "advantage"),
                            "weight Phi_t of log pi: episode return R(tau), reward-to-go Q_t, "
                            "or the GAE advantage of a learned V")
    baseline: str = choice("value", ("none", "mean", "value"),
                           "baseline b(s_t) subtracted from Phi_t: none, the batch mean of "
                           "Phi, or a learned V(s_t)")
    normalize_advantages: bool = static(False, "normalise Phi_t - b(s_t) over the batch's real "
                                        "(unmasked) steps")
    vf_iters: int = static(20, "full-batch Adam steps fitting V per update (value baseline)",
                           POSITIVE)
    log_std_init: float = static(0.0, "initial log-std of the Gaussian policy",
                                 only="continuous")

    lr: float = hparam(3e-3, "policy Adam learning rate", POSITIVE)
    vf_lr: float = hparam(3e-3, "value-function Adam learning rate", POSITIVE)
    gamma: float = hparam(0.99, "discount factor", UNIT_INTERVAL)
    gae_lambda: float = hparam(0.97, "GAE lambda (weighting='advantage')", UNIT_INTERVAL)
    ent_coef: float = hparam(0.0, "entropy bonus coefficient beta", NON_NEGATIVE)

    def validate(self) -> None:
        super().validate()
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
    run: loop.RunState  # env_state is None: every update resets its environments


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
    """L(theta) = -(1/N) sum_i sum_t [log pi(a_t^i|s_t^i) Phi_t^i + beta H_t^i] over the unmasked
    steps of N = ``weights.shape[1]`` episodes. The ``entropy`` metric is the per-step mean."""
    num_episodes = weights.shape[1]
    pg = losses.policy_gradient_loss(log_prob, weights, mask, num_episodes)
    ent = losses.masked_sum(entropy, mask, num_episodes)
    return pg - ent_coef * ent, {"policy_loss": pg, "entropy": losses.masked_sum(entropy, mask)}


def learn(actor: Actor, critic: ValueCritic, cfg: Config, state: TrainState,
          traj: rollout.Trajectory, mask: jax.Array
          ) -> tuple[Params, Any, Any, dict[str, jax.Array]]:
    """One policy-gradient step on a batch of whole episodes, then (value baseline) the fit of V
    to the reward-to-go. Returns ``(params, actor_opt, critic_opt, info)``."""
    norm = state.run.obs_norm
    # the weights use the critic as it was before this update
    obs = norm(traj.obs)
    values = critic.apply(state.params.critic, obs)
    next_values = critic.apply(state.params.critic, norm(traj.next_obs))
    weights = policy_weights(traj, mask, values, next_values, cfg.weighting, cfg.baseline,
                             cfg.gamma, cfg.gae_lambda)
    if cfg.normalize_advantages:
        weights = losses.normalize(weights, mask=mask)

    def actor_loss(actor_params):
        dist = actor.apply(actor_params, obs)
        return reinforce_loss(dist.log_prob(traj.action), dist.entropy(), weights, mask,
                              cfg.ent_coef)

    grads, info = jax.grad(actor_loss, has_aux=True)(state.params.actor)
    updates, actor_opt = optim.adam(cfg.lr).update(grads, state.actor_opt)
    actor_params = optax.apply_updates(state.params.actor, updates)

    critic_params, critic_opt = state.params.critic, state.critic_opt
    if cfg.uses_critic:
        targets = returns.reward_to_go(traj.reward, traj.done, cfg.gamma)
        critic_params, critic_opt, fit_losses = optim.fit(
            lambda p: losses.value_loss(critic.apply(p, obs), targets, mask=mask),
            critic_params, critic_opt, optim.adam(cfg.vf_lr), cfg.vf_iters)
        info.update(value_loss=fit_losses[-1],
                    explained_variance=losses.explained_variance(values, targets, mask))
    return Params(actor_params, critic_params), actor_opt, critic_opt, info


def make_agent(config: Config | Mapping[str, Any] | None = None) -> loop.Agent:
    config = Config.coerce(config)
    env, _, spec = envs.trainer_env(config)
    num_updates = config.num_updates_for(config.num_episodes * spec.max_episode_steps,
                                         "num_episodes * the env's time limit")
    torso = torso_for(config.torso, spec.obs_shape)
    actor = Actor(spec, config.hidden_sizes, config.activation, config.log_std_init, torso)
    critic = ValueCritic(config.hidden_sizes, config.activation, len(spec.obs_shape), torso)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp = config.initial_hparams(hparams)
        key, actor_key, critic_key = jax.random.split(key, 3)
        dummy = jnp.zeros((1,) + spec.obs_shape, jnp.float32)
        params = Params(actor.init(actor_key, dummy), critic.init(critic_key, dummy))
        return TrainState(
            params=params,
            actor_opt=optim.adam(1.0).init(params.actor),
            critic_opt=optim.adam(1.0).init(params.critic),
            run=loop.RunState.start(key, hp, config, env),  # every update resets its envs
        )

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        cfg = config.with_hparams(state.run.hparams)
        key, rollout_key = jax.random.split(state.run.key)
        norm = state.run.obs_norm

        policy = rollout.stochastic_policy(lambda obs: actor.apply(state.params.actor, norm(obs)))
        traj, mask = rollout.collect_episodes(env, policy, rollout_key, cfg.num_episodes)
        params, actor_opt, critic_opt, info = learn(actor, critic, cfg, state, traj, mask)

        stats = rollout.episode_stats(traj, mask)
        info.update(episode_return=stats.mean_return, episode_count=stats.count,
                    episode_length=(mask.sum() / cfg.num_episodes).astype(jnp.float32))
        run = state.run.advance(key, mask.sum(), obs_norm=norm.update(traj.obs, mask))
        return state.replace(params=params, actor_opt=actor_opt, critic_opt=critic_opt,
                             run=run), info

    def value(state: TrainState, obs: jax.Array) -> jax.Array:
        return critic.apply(state.params.critic, state.run.obs_norm(obs))

    act = rollout.policy_act(lambda state, obs: actor.apply(state.params.actor, obs))
    return loop.Agent(init, update, act, loop.make_evaluate(act, env, config.eval_episodes),
                      num_updates, config.eval_every, value if config.uses_critic else None)


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see "The trainer contract" in
    docs/contract.md."""
    return loop.make_train_fn(make_agent(config))
