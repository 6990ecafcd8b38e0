"""Actor-critic with a state-value critic, in a batch and an online form, with a TD or a
Monte-Carlo advantage.

``mode="batch"``: each update samples ``num_envs`` whole episodes with the current policy, fits
V_phi to their Monte-Carlo returns (``vf_iters`` full-batch Adam steps on the L2 loss),
evaluates the advantage with the fitted critic, and takes one policy-gradient step on

    L(theta) = -(1/N) sum_i sum_t [ log pi_theta(a_t^i|s_t^i) A_t^i + beta H[pi_theta(.|s_t^i)] ].

``mode="online"`` (one-step actor-critic, Sutton & Barto 2018, section 13.5, run synchronously
over ``num_envs`` parallel environments): every environment step updates the critic by one
semi-gradient TD(0) step on 0.5 E[(r + gamma V(s') - V(s))^2] (target held constant) and then
the actor by one step along E[grad log pi(a|s) A] with the advantage evaluated by the
just-updated critic. An update of the trainer is ``num_steps`` such online steps (a
``lax.scan``); the environments persist across updates.

``advantage``:

* ``td``: A_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t), bootstrapping from the real next
  observation at a truncation;
* ``mc``: A_t = Q_t - V(s_t) with the Monte-Carlo reward-to-go Q_t (batch mode only).

With ``memory="gru"`` or ``"lstm"`` (:mod:`purerl.recurrent`; batch mode only, online mode
refuses it) the actor and the critic are two recurrent networks (the actor's policy head and the
critic's value head are used): each environment's episode is collected with the actor's carry
from zero (:func:`purerl.rollout.collect_episodes_recurrent`), and every critic fitting step,
the advantages (V(s'_t) one more cell step on the real next observation) and the policy step
replay the whole episodes from the initial carry, over the steps up to the longest episode
(:func:`purerl.reinforce.replay_episodes`); the padding after an episode's end is masked out of
every mean. Nothing is carried between updates, so the train state is the feed-forward one.

Budget: in batch mode ``total_timesteps`` is an upper bound, ``num_envs`` x the environment's
time limit per update, and the ``env_steps`` metric counts the steps actually taken (the
unmasked ones); online, an update takes ``num_envs * num_steps`` steps.

Metrics besides the common ones: ``policy_loss``, ``entropy``, ``value_loss``, ``td_error``
(mean |A|) and in batch mode ``explained_variance`` (of the fitted critic on the MC returns).
Online, the per-step metrics are averaged over the update's steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from purerl import envs, losses, loop, optim, recurrent, reinforce, returns, rollout
from purerl.config import (MEMORY_ALGOS, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, BaseConfig,
                           choice, hparam, static)
from purerl.networks import ActorCriticParams as Params
from purerl.networks import Actor, ValueCritic, torso_for
from purerl.normalize import ObsNormalizer


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
    """Actor-critic hyperparameters. The defaults (batch mode, TD advantage) solve
    CartPole-v1; :data:`ONLINE` holds settings for the online mode."""

    algo = "actor_critic"

    mode: str = choice("batch", ("batch", "online"),
                       "batch: whole episodes per update; online: a critic and an actor step "
                       "on every env step")
    advantage: str = choice("td", ("td", "mc"),
                            "advantage: TD error r + gamma V(s') - V(s), or MC return minus "
                            "V(s) (batch mode only)")
    num_envs: int = static(16, "parallel environments (batch mode: episodes per update)",
                           POSITIVE)
    num_steps: int = static(32, "online mode: env steps per environment and update", POSITIVE)
    vf_iters: int = static(50, "batch mode: full-batch Adam steps fitting V per update",
                           POSITIVE)
    log_std_init: float = static(0.0, "initial log-std of the Gaussian policy",
                                 only="continuous")

    lr: float = hparam(3e-3, "policy Adam learning rate", POSITIVE)
    vf_lr: float = hparam(3e-3, "value-function Adam learning rate", POSITIVE)
    gamma: float = hparam(0.99, "discount factor", UNIT_INTERVAL)
    ent_coef: float = hparam(0.0, "entropy bonus coefficient beta", NON_NEGATIVE)

    def validate(self) -> None:
        if self.mode == "online" and self.memory != "none":
            raise ValueError(f"actor_critic config field 'memory'={self.memory!r}: the online "
                             "mode has no recurrent policy (use mode='batch'); memory is "
                             f"supported by {', '.join(MEMORY_ALGOS)} (actor_critic in batch "
                             "mode only)")
        super().validate()
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
    run: loop.RunState  # env_state: online mode's environments; None in batch mode


class Nets(NamedTuple):
    actor: Actor
    critic: ValueCritic


class OnlineCarry(NamedTuple):
    """What an online step changes (the carry of the step scan)."""

    params: Params
    actor_opt: Any
    critic_opt: Any
    env_state: envs.EnvState
    obs_norm: ObsNormalizer


def td_advantages(rewards: jax.Array, values: jax.Array, next_values: jax.Array,
                  terminated: jax.Array, gamma: float) -> jax.Array:
    """A_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t) (the TD error as the advantage)."""
    return returns.td_errors(rewards, values, next_values, terminated.astype(rewards.dtype), gamma)


def actor_step(actor: Actor, cfg: Config, params: Any, opt_state: Any, obs: jax.Array,
               action: jax.Array, advantages: jax.Array, mask: jax.Array | None,
               normalizer: int | None) -> tuple[Any, Any, dict[str, jax.Array]]:
    """One Adam step on -(1/Z) sum mask [log pi(a|s) A + beta H] (Z: ``normalizer``, the number
    of episodes, or None for the number of samples)."""
    def loss(p):
        dist = actor.apply(p, obs)
        pg = losses.policy_gradient_loss(dist.log_prob(action), advantages, mask, normalizer)
        entropy = dist.entropy()
        return (pg - cfg.ent_coef * losses.masked_sum(entropy, mask, normalizer),
                {"policy_loss": pg, "entropy": losses.masked_sum(entropy, mask)})

    grads, info = jax.grad(loss, has_aux=True)(params)
    updates, opt_state = optim.adam(cfg.lr).update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, info


def batch_update(nets: Nets, env: envs.Env, cfg: Config, state: TrainState, key: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array], jax.Array]:
    """Whole episodes, the critic fit, one policy step. Returns the state (run not advanced),
    the metrics and the env steps taken."""
    norm = state.run.obs_norm
    policy = rollout.stochastic_policy(lambda obs: nets.actor.apply(state.params.actor, norm(obs)))
    traj, mask = rollout.collect_episodes(env, policy, key, cfg.num_envs)
    obs, next_obs = norm(traj.obs), norm(traj.next_obs)

    # 1. fit V to the sampled (Monte-Carlo) returns
    mc_returns = returns.reward_to_go(traj.reward, traj.done, cfg.gamma)
    critic_params, critic_opt, fit_losses = optim.fit(
        lambda p: losses.value_loss(nets.critic.apply(p, obs), mc_returns, mask=mask),
        state.params.critic, state.critic_opt, optim.adam(cfg.vf_lr), cfg.vf_iters)

    # 2. evaluate the advantage with the fitted critic
    values = nets.critic.apply(critic_params, obs)
    if cfg.advantage == "td":
        adv = td_advantages(traj.reward, values, nets.critic.apply(critic_params, next_obs),
                            traj.terminated, cfg.gamma)
    else:
        adv = mc_returns - values

    # 3. one policy-gradient step, (1/N) sum_i sum_t over the N episodes
    actor_params, actor_opt, info = actor_step(nets.actor, cfg, state.params.actor,
                                               state.actor_opt, obs, traj.action, adv, mask,
                                               cfg.num_envs)
    stats = rollout.episode_stats(traj, mask)
    info.update(value_loss=fit_losses[-1], episode_return=stats.mean_return,
                episode_count=stats.count,
                explained_variance=losses.explained_variance(values, mc_returns, mask),
                td_error=losses.masked_sum(jnp.abs(adv), mask))
    state = state.replace(params=Params(actor_params, critic_params), actor_opt=actor_opt,
                          critic_opt=critic_opt,
                          run=state.run.replace(obs_norm=norm.update(traj.obs, mask)))
    return state, info, mask.sum()


def online_step(nets: Nets, env: envs.Env, cfg: Config, carry: OnlineCarry, key: jax.Array
                ) -> tuple[OnlineCarry, tuple[dict[str, jax.Array], rollout.Trajectory]]:
    """One env step in every environment, a TD(0) critic step, then an actor step with the
    updated critic's TD error."""
    act_key, env_key = jax.random.split(key)
    norm = carry.obs_norm  # the running normaliser moves with every online step
    obs = norm(carry.env_state.obs)
    dist = nets.actor.apply(carry.params.actor, obs)
    u = dist.sample(act_key)
    env_state, tr = env.step(env_key, carry.env_state, dist.env_action(u))
    next_obs = norm(tr.next_obs)

    def critic_loss(p):
        target = losses.td_target(tr.reward, tr.terminated, nets.critic.apply(p, next_obs),
                                  cfg.gamma)
        return losses.value_loss(nets.critic.apply(p, obs), target)

    critic_loss_value, grads = jax.value_and_grad(critic_loss)(carry.params.critic)
    updates, critic_opt = optim.adam(cfg.vf_lr).update(grads, carry.critic_opt)
    critic_params = optax.apply_updates(carry.params.critic, updates)

    adv = td_advantages(tr.reward, nets.critic.apply(critic_params, obs),
                        nets.critic.apply(critic_params, next_obs), tr.terminated, cfg.gamma)
    actor_params, actor_opt, info = actor_step(nets.actor, cfg, carry.params.actor,
                                               carry.actor_opt, obs, u, adv, None, None)
    info.update(value_loss=critic_loss_value, td_error=jnp.mean(jnp.abs(adv)))
    out = rollout.Trajectory(carry.env_state.obs, u, tr.reward, tr.terminated, tr.truncated,
                             tr.next_obs, tr.completed_return)
    return OnlineCarry(Params(actor_params, critic_params), actor_opt, critic_opt, env_state,
                       norm.update(carry.env_state.obs)), (info, out)


def online_update(nets: Nets, env: envs.Env, cfg: Config, state: TrainState, key: jax.Array
                  ) -> tuple[TrainState, dict[str, jax.Array], int]:
    """``num_steps`` online steps (a ``lax.scan``). Returns the state (run not advanced), the
    metrics averaged over the steps and the env steps taken."""
    carry = OnlineCarry(state.params, state.actor_opt, state.critic_opt, state.run.env_state,
                        state.run.obs_norm)
    carry, (info, traj) = jax.lax.scan(lambda c, k: online_step(nets, env, cfg, c, k), carry,
                                       jax.random.split(key, cfg.num_steps))
    info = jax.tree.map(jnp.mean, info)
    stats = rollout.episode_stats(traj)
    info.update(episode_return=stats.mean_return, episode_count=stats.count)
    state = state.replace(params=carry.params, actor_opt=carry.actor_opt,
                          critic_opt=carry.critic_opt,
                          run=state.run.replace(env_state=carry.env_state,
                                                obs_norm=carry.obs_norm))
    return state, info, cfg.num_envs * cfg.num_steps


def make_agent(config: Config | Mapping[str, Any] | None = None) -> loop.Agent:
    config = Config.coerce(config)
    env, _, spec = envs.trainer_env(config)
    batch = config.mode == "batch"
    num_updates = config.num_updates_for(
        config.num_envs * (spec.max_episode_steps if batch else config.num_steps),
        "num_envs * (the time limit in batch mode, num_steps online)")
    if config.memory != "none":  # batch mode (Config refuses memory online)
        return make_recurrent_agent(config, env, num_updates)
    torso = torso_for(config.torso, spec.obs_shape)
    nets = Nets(Actor(spec, config.hidden_sizes, config.activation, config.log_std_init, torso),
                ValueCritic(config.hidden_sizes, config.activation, len(spec.obs_shape), torso))

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp = config.initial_hparams(hparams)
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        dummy = jnp.zeros((1,) + spec.obs_shape, jnp.float32)
        params = Params(nets.actor.init(actor_key, dummy), nets.critic.init(critic_key, dummy))
        return TrainState(
            params=params,
            actor_opt=optim.adam(1.0).init(params.actor),
            critic_opt=optim.adam(1.0).init(params.critic),
            # batch mode resets the environments in every update
            run=loop.RunState.start(key, hp, config, env, None if batch else env_key),
        )

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        cfg = config.with_hparams(state.run.hparams)
        key, step_key = jax.random.split(state.run.key)
        run = batch_update if cfg.mode == "batch" else online_update
        state, info, env_steps = run(nets, env, cfg, state, step_key)
        return state.replace(run=state.run.advance(key, env_steps)), info

    def value(state: TrainState, obs: jax.Array) -> jax.Array:
        return nets.critic.apply(state.params.critic, state.run.obs_norm(obs))

    act = rollout.policy_act(lambda state, obs: nets.actor.apply(state.params.actor, obs))
    return loop.Agent(init, update, act, loop.make_evaluate(act, env, config.eval_episodes),
                      num_updates, config.eval_every, value)


# ----------------------------------------------------------------------------- with memory


def batch_update_recurrent(net: recurrent.RecurrentActorCritic, collect: Any, cfg: Config,
                           state: TrainState, key: jax.Array
                           ) -> tuple[TrainState, dict[str, jax.Array], jax.Array]:
    """:func:`batch_update` with recurrent networks: ``state.params.actor`` and ``.critic`` are
    two :class:`~purerl.recurrent.RecurrentActorCritic` parameter sets (the policy head of one,
    the value head of the other); ``collect(params, norm, key) -> (traj, mask)`` samples whole
    episodes carrying the actor's memory, and each episode is replayed from the initial carry
    (:func:`purerl.reinforce.replay_episodes`) in every critic step, for the advantages (V of
    the real next observation: one more cell step) and in the policy step."""
    norm = state.run.obs_norm
    traj, mask = collect(state.params, norm, key)
    obs = norm(traj.obs)
    length = reinforce.longest_episode(mask)

    # 1. fit V to the sampled (Monte-Carlo) returns
    mc_returns = returns.reward_to_go(traj.reward, traj.done, cfg.gamma)
    critic_params, critic_opt, fit_losses = optim.fit(
        lambda p: losses.value_loss(reinforce.replay_episodes(net, p, obs, length)["value"],
                                    mc_returns, mask=mask),
        state.params.critic, state.critic_opt, optim.adam(cfg.vf_lr), cfg.vf_iters)

    # 2. evaluate the advantage with the fitted critic
    if cfg.advantage == "td":
        out = reinforce.replay_episodes(net, critic_params, obs, length,
                                        next_obs=norm(traj.next_obs),
                                        outputs=("value", "next_value"))
        values = out["value"]
        adv = td_advantages(traj.reward, values, out["next_value"], traj.terminated, cfg.gamma)
    else:
        values = reinforce.replay_episodes(net, critic_params, obs, length)["value"]
        adv = mc_returns - values

    # 3. one policy-gradient step, (1/N) sum_i sum_t over the N episodes
    def loss(p):
        out = reinforce.replay_episodes(net, p, obs, length, traj.action,
                                        outputs=("log_prob", "entropy"))
        pg = losses.policy_gradient_loss(out["log_prob"], adv, mask, cfg.num_envs)
        entropy = out["entropy"]
        return (pg - cfg.ent_coef * losses.masked_sum(entropy, mask, cfg.num_envs),
                {"policy_loss": pg, "entropy": losses.masked_sum(entropy, mask)})

    grads, info = jax.grad(loss, has_aux=True)(state.params.actor)
    updates, actor_opt = optim.adam(cfg.lr).update(grads, state.actor_opt)
    actor_params = optax.apply_updates(state.params.actor, updates)

    stats = rollout.episode_stats(traj, mask)
    info.update(value_loss=fit_losses[-1], episode_return=stats.mean_return,
                episode_count=stats.count,
                explained_variance=losses.explained_variance(values, mc_returns, mask),
                td_error=losses.masked_sum(jnp.abs(adv), mask))
    state = state.replace(params=Params(actor_params, critic_params), actor_opt=actor_opt,
                          critic_opt=critic_opt,
                          run=state.run.replace(obs_norm=norm.update(traj.obs, mask)))
    return state, info, mask.sum()


def make_recurrent_agent(config: Config, env: envs.Env, num_updates: int) -> loop.Agent:
    """Batch actor-critic with a recurrent policy and critic (``config.memory``; module
    docstring)."""
    net, init_params, collect, act, value = reinforce.recurrent_agent_parts(config, env,
                                                                            config.num_envs)
    init = reinforce.recurrent_init(config, env, init_params, TrainState)

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        cfg = config.with_hparams(state.run.hparams)
        key, step_key = jax.random.split(state.run.key)
        state, info, env_steps = batch_update_recurrent(net, collect, cfg, state, step_key)
        return state.replace(run=state.run.advance(key, env_steps)), info

    return loop.Agent(init, update, act,
                      loop.make_evaluate(act, env, config.eval_episodes, net.initial_carry),
                      num_updates, config.eval_every, value, net.initial_carry)


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see "The trainer contract" in
    docs/contract.md."""
    return loop.make_train_fn(make_agent(config))
