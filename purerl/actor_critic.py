"""Actor-critic with a state-value critic: seed 003's batch and online algorithms, with seed
000's two advantage estimates.

``mode="batch"`` (seed 003's batch actor-critic): each update samples ``num_envs`` whole
episodes with the current policy, fits V_phi to their Monte-Carlo returns (``vf_iters``
full-batch Adam steps on the L2 loss), evaluates the advantage with the fitted critic, and takes
one policy-gradient step on

    L(theta) = -(1/N) sum_i sum_t [ log pi_theta(a_t^i|s_t^i) A_t^i + beta H[pi_theta(.|s_t^i)] ].

``mode="online"`` (seed 003's online algorithm, run as its synchronised parallel actor-critic
over ``num_envs`` environments): every environment step updates the critic by one semi-gradient
TD(0) step on 0.5 E[(r + gamma V(s') - V(s))^2] (target held constant) and then the actor by one
step along E[grad log pi(a|s) A] with the advantage evaluated by the just-updated critic.
An update of the trainer is ``num_steps`` such online steps (a ``lax.scan``).

``advantage`` (seed 000's two approaches):

* ``td``: A_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t), bootstrapping from the real next
  observation at a truncation;
* ``mc``: A_t = Q_t - V(s_t) with the Monte-Carlo reward-to-go Q_t (batch mode only).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

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
    """Actor-critic hyperparameters. The defaults (batch mode, TD advantage) solve
    CartPole-v1."""

    algo = "actor_critic"

    # batch mode: an upper bound (num_envs * the env's time limit per update), as in reinforce
    total_timesteps: int = static(500_000, check=positive, why="must be > 0")
    mode: str = static("batch", check=one_of("batch", "online"), why="must be 'batch' or 'online'")
    advantage: str = static("td", check=one_of("td", "mc"), why="must be 'td' or 'mc'")
    num_envs: int = static(16, check=positive, why="must be > 0")
    num_steps: int = static(32, check=positive, why="must be > 0 (online mode: steps per update)")
    vf_iters: int = static(50, check=positive, why="must be > 0 (batch mode)")
    log_std_init: float = static(0.0, continuous_only=True)

    lr: float = hparam(3e-3, check=positive, why="must be > 0")
    vf_lr: float = hparam(3e-3, check=positive, why="must be > 0")
    gamma: float = hparam(0.99, check=unit_interval, why="must be in [0, 1]")
    ent_coef: float = hparam(0.0, check=non_negative, why="must be >= 0")

    def validate(self) -> None:
        if self.mode == "online" and self.advantage == "mc":
            raise ValueError("actor_critic config field 'advantage'='mc' needs whole episodes: "
                             "use mode='batch', or advantage='td' for the online algorithm")


# Online mode takes many small steps: these settings solve CartPole-v1 in about 100k env steps.
ONLINE = dict(mode="online", num_envs=32, num_steps=16, lr=3e-4, vf_lr=3e-3)


@struct.dataclass
class TrainState:
    params: Params
    actor_opt: Any
    critic_opt: Any
    env_state: envs.EnvState  # online mode's environments (batch mode resets every update)
    obs_norm: envs.ObsNormState
    key: jax.Array
    update_step: jax.Array
    env_steps: jax.Array
    hparams: dict[str, jax.Array]


def td_advantages(rewards: jax.Array, values: jax.Array, next_values: jax.Array,
                  terminated: jax.Array, gamma: float) -> jax.Array:
    """A_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t) (the TD error as the advantage)."""
    return returns.td_errors(rewards, values, next_values, terminated.astype(rewards.dtype), gamma)


def make_agent(config: Config | Mapping[str, Any] | None = None) -> loop.Agent:
    cfg = Config.coerce(config)
    env, env_params, spec = envs.make_env(cfg.env)
    cfg.check_action_space(spec.discrete, cfg.env)
    max_steps = spec.max_episode_steps
    num_updates = cfg.num_updates_for(
        cfg.num_envs * (max_steps if cfg.mode == "batch" else cfg.num_steps),
        "num_envs * (the time limit in batch mode, num_steps online)")
    actor = Actor(spec, cfg.hidden_sizes, cfg.activation, cfg.log_std_init)
    critic = ValueCritic(cfg.hidden_sizes, cfg.activation, len(spec.obs_shape))

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp = cfg.initial_hparams(hparams)
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        dummy = jnp.zeros((1,) + spec.obs_shape)
        params = Params(actor.init(actor_key, dummy), critic.init(critic_key, dummy))
        return TrainState(
            params=params,
            actor_opt=optim.adam(1.0).init(params.actor),
            critic_opt=optim.adam(1.0).init(params.critic),
            env_state=envs.reset(env, env_params, env_key, cfg.num_envs),
            obs_norm=envs.obs_norm_init(spec.obs_shape),
            key=key,
            update_step=jnp.asarray(0, jnp.int32),
            env_steps=jnp.asarray(0, jnp.int32),
            hparams=hp,
        )

    def actor_step(params, opt_state, obs, action, advantages, mask, normalizer, c: Config):
        """One step on -(1/Z) sum mask [log pi(a|s) A + beta H] (Z: episodes or samples)."""
        def loss(p):
            dist = actor.apply(p, obs)
            pg = losses.policy_gradient_loss(dist.log_prob(action), advantages, mask, normalizer)
            entropy = dist.entropy()
            return (pg - c.ent_coef * losses.masked_sum(entropy, mask, normalizer),
                    {"policy_loss": pg, "entropy": losses.masked_sum(entropy, mask)})

        grads, info = jax.grad(loss, has_aux=True)(params)
        updates, opt_state = optim.adam(c.lr).update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, info

    def batch_update(state: TrainState, c: Config, key: jax.Array, norm):
        policy = rollout.stochastic_policy(lambda obs: actor.apply(state.params.actor, norm(obs)))

        traj, mask = rollout.collect_episodes(env, env_params, policy, key, cfg.num_envs,
                                              max_steps)
        obs, next_obs = norm(traj.obs), norm(traj.next_obs)

        # 1. fit V to the sampled (Monte-Carlo) returns
        mc_returns = returns.reward_to_go(traj.reward, traj.done, c.gamma)
        critic_params, critic_opt, fit_losses = optim.fit(
            lambda p: losses.value_loss(critic.apply(p, obs), mc_returns, mask=mask),
            state.params.critic, state.critic_opt, optim.adam(c.vf_lr), cfg.vf_iters)

        # 2. evaluate the advantage with the fitted critic
        values = critic.apply(critic_params, obs)
        if cfg.advantage == "td":
            adv = td_advantages(traj.reward, values, critic.apply(critic_params, next_obs),
                                traj.terminated, c.gamma)
        else:
            adv = mc_returns - values

        # 3. one policy-gradient step, seed 000's (1/N) sum_i sum_t
        actor_params, actor_opt, info = actor_step(state.params.actor, state.actor_opt, obs,
                                                   traj.action, adv, mask, cfg.num_envs, c)
        obs_norm = (envs.obs_norm_update(state.obs_norm, traj.obs, mask) if cfg.normalize_obs
                    else state.obs_norm)
        stats = rollout.episode_stats(traj, mask)
        info.update(value_loss=fit_losses[-1], episode_return=stats.mean_return,
                    episode_count=stats.count,
                    explained_variance=losses.explained_variance(values, mc_returns, mask),
                    td_error=losses.masked_sum(jnp.abs(adv), mask))
        return state.replace(params=Params(actor_params, critic_params), actor_opt=actor_opt,
                             critic_opt=critic_opt, obs_norm=obs_norm,
                             env_steps=state.env_steps + mask.sum()), info

    def online_update(state: TrainState, c: Config, key: jax.Array, norm):
        del norm  # the running normaliser moves with every online step
        class Carry(NamedTuple):
            params: Params
            actor_opt: Any
            critic_opt: Any
            env_state: envs.EnvState
            obs_norm: envs.ObsNormState

        def online_step(carry: Carry, step_key):
            act_key, env_key = jax.random.split(step_key)
            norm = envs.normalizer(carry.obs_norm if cfg.normalize_obs else None)
            obs = norm(carry.env_state.obs)
            dist = actor.apply(carry.params.actor, obs)
            u = dist.sample(act_key)
            env_state, tr = envs.step(env, env_params, env_key, carry.env_state,
                                      dist.env_action(u))
            next_obs = norm(tr.next_obs)

            # critic: one semi-gradient TD(0) step
            def critic_loss(p):
                target = tr.reward + c.gamma * (1.0 - tr.terminated) * critic.apply(p, next_obs)
                return losses.value_loss(critic.apply(p, obs), target)

            critic_loss_value, grads = jax.value_and_grad(critic_loss)(carry.params.critic)
            updates, critic_opt = optim.adam(c.vf_lr).update(grads, carry.critic_opt)
            critic_params = optax.apply_updates(carry.params.critic, updates)

            # actor: advantage from the updated critic
            adv = td_advantages(tr.reward, critic.apply(critic_params, obs),
                                critic.apply(critic_params, next_obs), tr.terminated, c.gamma)
            actor_params, actor_opt, info = actor_step(carry.params.actor, carry.actor_opt, obs,
                                                       u, adv, None, None, c)
            obs_norm = (envs.obs_norm_update(carry.obs_norm, carry.env_state.obs)
                        if cfg.normalize_obs else carry.obs_norm)
            info.update(value_loss=critic_loss_value, td_error=jnp.mean(jnp.abs(adv)))
            out = rollout.Trajectory(carry.env_state.obs, u, tr.reward, tr.terminated,
                                     tr.truncated, tr.next_obs, tr.completed_return)
            return Carry(Params(actor_params, critic_params), actor_opt, critic_opt, env_state,
                         obs_norm), (info, out)

        carry = Carry(state.params, state.actor_opt, state.critic_opt, state.env_state,
                      state.obs_norm)
        carry, (info, traj) = jax.lax.scan(online_step, carry,
                                           jax.random.split(key, cfg.num_steps))
        info = jax.tree.map(jnp.mean, info)
        stats = rollout.episode_stats(traj)
        info.update(episode_return=stats.mean_return, episode_count=stats.count)
        return state.replace(params=carry.params, actor_opt=carry.actor_opt,
                             critic_opt=carry.critic_opt, env_state=carry.env_state,
                             obs_norm=carry.obs_norm,
                             env_steps=state.env_steps + cfg.num_envs * cfg.num_steps), info

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        c = cfg.with_hparams(state.hparams)
        key, step_key = jax.random.split(state.key)
        norm = envs.normalizer(state.obs_norm if cfg.normalize_obs else None)
        run = batch_update if cfg.mode == "batch" else online_update
        state, info = run(state, c, step_key, norm)
        info["env_steps"] = state.env_steps
        return state.replace(key=key, update_step=state.update_step + 1), info

    act, evaluate = loop.policy_act_and_evaluate(lambda p, obs: actor.apply(p.actor, obs),
                                                 env, env_params, spec, cfg)
    return loop.Agent(init, update, act, evaluate, num_updates, cfg.eval_every)


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see the trainer contract."""
    return loop.make_train_fn(make_agent(config))
