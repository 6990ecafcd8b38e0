"""Soft actor-critic (Haarnoja et al. 2018a, arXiv:1801.01290; 2018b, arXiv:1812.05905), for
continuous actions and, after Christodoulou (2019, arXiv:1910.07207), for discrete ones.

SAC maximises the maximum-entropy objective E[sum_t gamma^t (r_t + alpha H(pi(.|s_t)))]
(2018a, eq. 1). One update:

1. act in each of ``num_envs`` environments with a ~ pi(.|s) (uniformly random actions while
   fewer than ``learning_starts`` env steps are stored and ``random_warmup`` is set), step, and
   ``replay.add`` the transitions (real s', ``terminated``: truncations bootstrap);
2. once ``learning_starts`` env steps are stored, ``num_gradient_steps`` gradient steps (a
   ``lax.scan``; the update-to-data ratio is ``num_gradient_steps / num_envs``) on uniform
   minibatches, each minimising

   * the twin soft Q losses (2018b, section 4)  J_Q(theta_i) = E[1/2 (Q_i(s, a) - y)^2],
     i = 1, 2, with y = r + gamma (1 - terminated) V'(s') and the soft value of the next state
     V'(s') = min_i Q'_i(s', a') - alpha log pi(a'|s'), a' ~ pi(.|s') (target critics Q'_i);
     with ``value_network=True`` (the 2018a variant) y = r + gamma (1 - terminated) V_bar(s');
   * the policy loss (2018b, section 4)  J_pi(phi) = E[alpha log pi(a~|s) - min_i Q_i(s, a~)],
     a~ = f_phi(eps; s) reparameterised (u = mean + std eps, a~ = scale(tanh(u))), so the
     gradient flows through the sampled action into the critics;
   * with ``value_network=True``, J_V(psi) = E[1/2 (V_psi(s) - [min_i Q_i(s, a~) -
     alpha log pi(a~|s)])^2] (2018a, section 4.2), a~ ~ pi fresh from the current policy (not the
     buffer);
   * with ``autotune_alpha``, the temperature loss J(alpha) = E[alpha (H - H_target)]
     (2018b, section 5; ``losses.temperature_loss``), H = -log pi(a~|s);

   then Polyak-averages the target networks (the twin Q critics, or V_bar with
   ``value_network=True``) by ``tau``.

All four gradients of a step are taken at the same parameters and then applied (each network
with its own Adam), as in the authors' softlearning implementation; one backward pass computes
them. The actor's loss holds the critics constant and the critics' target holds everything
constant.

log pi is the log-density of the squashed action tanh(u) in (-1, 1)^d (the Gaussian's minus
sum_i log(1 - tanh(u_i)^2), in the stable form 2 (log 2 - u - softplus(-2u))), so the default
target entropy H_target = -target_entropy_scale |A| does not depend on the env's action units.
The environment receives low + (tanh(u) + 1)(high - low)/2 and the critics see that action.

Discrete actions (``CartPole-v1`` etc.): a categorical policy and twin Q(s, .) networks; every
expectation over actions is exact, V(s) = sum_a pi(a|s) [min_i Q_i(s, a) - alpha log pi(a|s)]
(``losses.expected_soft_value``) for the target, the policy loss -E[V(s)] and the value
network's target, and H is the exact entropy, with H_target = target_entropy_ratio log |A|.
:data:`DISCRETE` is its CartPole-v1 preset (:mod:`purerl.presets`).

Deterministic evaluation (and ``act(deterministic=True)``) takes scale(tanh(mean)) or the most
probable action. Metrics besides the common ones: ``alpha``, ``entropy`` (the policy's entropy
estimate on sampled states), ``q_mean`` (mean Q_1(s, a) on the minibatches), ``td_error``,
``critic_loss``, ``actor_loss``, ``alpha_loss`` (with ``autotune_alpha``), ``value_loss`` (with
``value_network``); the learning metrics are NaN on warm-up updates.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from purerl import envs, loop, optim, presets, replay, rollout
from purerl.parallel import SINGLE, DataParallel
from purerl.config import (ANY_NUMBER, POSITIVE, UNIT_INTERVAL, OffPolicyConfig, hparam,
                           redefault, static)
from purerl.distributions import Categorical, TanhGaussian
from purerl.losses import expected_soft_value, soft_value, td_target, temperature_loss
from purerl.networks import (Actor, SquashedGaussianActor, TwinQCritic, TwinQNetwork,
                             ValueCritic, torso_for)
from purerl.normalize import ObsNormalizer
from purerl.spaces import EnvSpec, random_action


@dataclasses.dataclass(frozen=True)
class Config(OffPolicyConfig):
    """SAC hyperparameters. The defaults learn Pendulum-v1 in 15k env steps: final deterministic
    evaluation -148 (mean of 4 random seeds from ``jax.random.key(0)``) and -136 (8 seeds from
    ``key(1)``, worst -190); :data:`DISCRETE` is the CartPole-v1 preset."""

    algo = "sac"

    env: str = redefault("env", "Pendulum-v1")
    total_timesteps: int = redefault("total_timesteps", 15_000)
    hidden_sizes: tuple[int, ...] = redefault("hidden_sizes", (64, 64))
    activation: str = redefault("activation", "relu")
    eval_every: int = redefault("eval_every", 5_000)

    batch_size: int = redefault("batch_size", 256)
    random_warmup: bool = static(True, "uniformly random actions before learning_starts")
    value_network: bool = static(False, "the 2018a variant: a soft value network V and its "
                                 "Polyak-averaged target V_bar")
    autotune_alpha: bool = static(True, "learn the temperature toward the target entropy")

    actor_lr: float = hparam(1e-3, "actor Adam learning rate", POSITIVE)
    critic_lr: float = hparam(1e-3, "Adam learning rate of the critics and the value network",
                              POSITIVE)
    alpha_lr: float = hparam(1e-3, "temperature Adam learning rate", POSITIVE)
    gamma: float = hparam(0.99, "discount factor", UNIT_INTERVAL)
    tau: float = hparam(0.005, "Polyak coefficient of the target networks", UNIT_INTERVAL)
    alpha: float = hparam(1.0, "initial temperature (fixed without autotune_alpha)", POSITIVE)
    target_entropy_scale: float = hparam(
        1.0, "H_target = -target_entropy_scale * action_dim", ANY_NUMBER, only="continuous")
    target_entropy_ratio: float = hparam(
        0.7, "H_target = target_entropy_ratio * log(num_actions)", UNIT_INTERVAL,
        only="discrete")


# The CartPole-v1 preset as a dict (``sac.Config(**sac.DISCRETE)`` equals
# ``sac.Config.for_env("CartPole-v1")``); see purerl/presets.py for why these settings.
DISCRETE: dict[str, Any] = dict(presets.lookup("sac", "CartPole-v1").overrides, env="CartPole-v1")


class Params(NamedTuple):
    actor: Any
    critic: Any  # twin Q(s, a) (continuous) or twin Q(s, .) (discrete)
    value: Any  # V_psi(s) with value_network=True, else None
    log_alpha: jax.Array


@struct.dataclass
class TrainState:
    params: Params
    target: Any  # target twin-Q parameters, or V_bar's with value_network=True
    opt_state: Params  # one Adam state per network (None where there is no network)
    buffer: replay.ReplayBuffer
    run: loop.RunState


class Learner(NamedTuple):
    """What a gradient step changes (the carry of the gradient-step scan)."""

    params: Params
    target: Any
    opt_state: Params


class Nets(NamedTuple):
    """The networks, fixed when the agent is built."""

    spec: EnvSpec
    actor: Actor | SquashedGaussianActor
    critic: TwinQNetwork | TwinQCritic  # Q(s, .) for discrete actions, Q(s, a) otherwise
    value: ValueCritic


def target_entropy(spec: EnvSpec, cfg: Config):
    """-target_entropy_scale |A| (continuous), target_entropy_ratio log |A| (discrete)."""
    if spec.discrete:
        return cfg.target_entropy_ratio * math.log(spec.num_actions)
    return -cfg.target_entropy_scale * spec.action_dim


def sampled_soft_value(dist: TanhGaussian, q_fn: Callable[[jax.Array], jax.Array],
                       key: jax.Array, alpha, dp: DataParallel = SINGLE
                       ) -> tuple[jax.Array, jax.Array]:
    """(V(s), H(s)) for a continuous policy from one reparameterised sample per state:
    u = mean + std eps, a~ = scale(tanh(u)), V = min_i Q_i(s, a~) - alpha log pi(a~|s) and
    H = -log pi(a~|s), with ``q_fn(a~)`` returning ``[2, B]`` twin values (or ``[B]``). Data
    parallel: the states are this device's rows of the minibatch and eps theirs of the
    single-device draw (:meth:`~purerl.parallel.DataParallel.sample`)."""
    u = dp.sample(dist, key)
    log_prob = dist.squashed_log_prob(u)
    q = q_fn(dist.env_action(u))
    if q.ndim > log_prob.ndim:
        q = q.min(0)
    return soft_value(q, log_prob, alpha), -log_prob


def exact_soft_value(dist: Categorical, q_all: jax.Array, alpha
                     ) -> tuple[jax.Array, jax.Array]:
    """(V(s), H(s)) for a categorical policy, exactly:
    V = sum_a pi(a|s) [min_i Q_i(s, a) - alpha log pi(a|s)], H = -sum_a pi(a|s) log pi(a|s);
    ``q_all`` is ``[2, B, A]`` twin values (or ``[B, A]``)."""
    if q_all.ndim > dist.logits.ndim:
        q_all = q_all.min(0)
    return expected_soft_value(q_all, dist.log_probs(), alpha), dist.entropy()


def q_taken(nets: Nets, critic_params: Any, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Q_i(s, a) of the stored actions, ``[2, B]``."""
    if nets.spec.discrete:  # a one-hot contraction: its gradient is not a scatter
        q_all = nets.critic.apply(critic_params, obs)
        return jnp.sum(q_all * jax.nn.one_hot(action, nets.spec.num_actions), -1)
    return nets.critic.apply(critic_params, obs, action)


def policy_soft_value(nets: Nets, actor_params: Any, critic_params: Any, obs: jax.Array,
                      key: jax.Array, alpha, dp: DataParallel = SINGLE
                      ) -> tuple[jax.Array, jax.Array]:
    """(V(s), H(s)) of the current policy under the critics ``critic_params``: exact for
    discrete actions, from one reparameterised sample for continuous ones."""
    dist = nets.actor.apply(actor_params, obs)
    if nets.spec.discrete:
        return exact_soft_value(dist, nets.critic.apply(critic_params, obs), alpha)
    return sampled_soft_value(dist, lambda a: nets.critic.apply(critic_params, obs, a), key,
                              alpha, dp)


def loss_fn(params: Params, target: Any, batch: replay.Transition, key: jax.Array,
            nets: Nets, cfg: Config, dp: DataParallel = SINGLE
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The sum of the critic, actor, (value) and (temperature) losses of the module docstring,
    with stop-gradients so that each network's gradient is that of its own loss. Every loss is
    a mean over the minibatch (data parallel: over this device's rows of it)."""
    next_key, pi_key = jax.random.split(key)
    alpha = jnp.exp(params.log_alpha) if cfg.autotune_alpha else cfg.alpha
    alpha = jax.lax.stop_gradient(alpha)
    if cfg.value_network:
        next_value = nets.value.apply(target, batch.next_obs)
    else:
        next_value, _ = policy_soft_value(nets, params.actor, target, batch.next_obs, next_key,
                                          alpha, dp)
    y = td_target(batch.reward, batch.terminated, next_value, cfg.gamma)
    q = q_taken(nets, params.critic, batch.obs, batch.action)
    critic_loss = 0.5 * jnp.sum(jnp.mean(jnp.square(q - y), -1))

    v_pi, entropy = policy_soft_value(nets, params.actor, jax.lax.stop_gradient(params.critic),
                                      batch.obs, pi_key, alpha, dp)
    actor_loss = -jnp.mean(v_pi)
    info = {"critic_loss": critic_loss, "actor_loss": actor_loss, "q_mean": q[0].mean(),
            "td_error": jnp.abs(q[0] - y).mean(), "entropy": entropy.mean(), "alpha": alpha}
    total = critic_loss + actor_loss
    if cfg.value_network:
        v = nets.value.apply(params.value, batch.obs)
        info["value_loss"] = 0.5 * jnp.mean(jnp.square(v - jax.lax.stop_gradient(v_pi)))
        total = total + info["value_loss"]
    if cfg.autotune_alpha:
        info["alpha_loss"] = temperature_loss(params.log_alpha, entropy,
                                              target_entropy(nets.spec, cfg))
        total = total + info["alpha_loss"]
    return total, info


def gradient_step(nets: Nets, cfg: Config, buffer: replay.ReplayBuffer, norm: ObsNormalizer,
                  learner: Learner, key: jax.Array, dp: DataParallel = SINGLE
                  ) -> tuple[Learner, dict[str, jax.Array]]:
    """All losses' gradients at the same parameters, one Adam step per learned network, then
    the Polyak step of the target (twin Q', or V_bar with ``value_network``). Data parallel:
    each device holds its environments' share of the buffer and computes the gradients of its
    ``1/D`` of the single-device minibatch
    (:meth:`purerl.parallel.DataParallel.sample_replay`); gradients and losses are averaged
    over devices."""
    sample_key, loss_key = jax.random.split(key)
    batch = dp.sample_replay(buffer, sample_key, cfg.batch_size, cfg.num_envs)
    batch = batch._replace(obs=norm(batch.obs), next_obs=norm(batch.next_obs))
    grads, info = dp.mean(jax.grad(loss_fn, has_aux=True)(learner.params, learner.target, batch,
                                                          loss_key, nets, cfg, dp))
    txs = Params(optim.adam(cfg.actor_lr), optim.adam(cfg.critic_lr), optim.adam(cfg.critic_lr),
                 optim.adam(cfg.alpha_lr))
    learned = (True, True, cfg.value_network, cfg.autotune_alpha)
    new_params, new_opt = learner.params._asdict(), learner.opt_state._asdict()
    for name, on in zip(Params._fields, learned):
        if on:
            updates, new_opt[name] = getattr(txs, name).update(
                getattr(grads, name), new_opt[name], new_params[name])
            new_params[name] = optax.apply_updates(new_params[name], updates)
    params = Params(**new_params)
    target = optim.polyak(learner.target, params.value if cfg.value_network else params.critic,
                          cfg.tau)
    return Learner(params, target, Params(**new_opt)), info


def make_nets(config: Config, spec: EnvSpec) -> Nets:
    """Categorical actor and twin Q(s, .) networks for discrete actions, a squashed-Gaussian
    actor and twin Q(s, a) critics for continuous ones; V_psi(s) for ``value_network``."""
    sizes, activation, obs_ndim = config.hidden_sizes, config.activation, len(spec.obs_shape)
    torso = torso_for(config.torso, spec.obs_shape)
    value = ValueCritic(sizes, activation, obs_ndim, torso)
    if spec.discrete:
        return Nets(spec, Actor(spec, sizes, activation, torso=torso),
                    TwinQNetwork(spec.num_actions, sizes, activation, obs_ndim, torso), value)
    return Nets(spec, SquashedGaussianActor(spec, sizes, activation, torso=torso),
                TwinQCritic(sizes, activation, obs_ndim, torso), value)


def state_value(nets: Nets, config: Config, state: TrainState, obs: jax.Array) -> jax.Array:
    """The soft value V(s) = E[min_i Q_i(s, a) - alpha log pi(a|s)] of the current policy (one
    reparameterised sample for continuous actions, exact for discrete ones; V_psi(s) with
    ``value_network``)."""
    obs = state.run.obs_norm(obs)
    if config.value_network:
        return nets.value.apply(state.params.value, obs)
    alpha = (jnp.exp(state.params.log_alpha) if config.autotune_alpha
             else state.run.hparams["alpha"])
    return policy_soft_value(nets, state.params.actor, state.params.critic, obs,
                             jax.random.fold_in(state.run.key, 0x5AC), alpha)[0]


def make_agent(config: Config | Mapping[str, Any] | None = None,
               data_parallel: DataParallel | None = None) -> loop.Agent:
    """SAC's :class:`purerl.loop.Agent`. ``data_parallel``: the update runs inside
    ``jax.shard_map`` on this device's share of the ``num_envs`` environments and of the replay
    buffer (:mod:`purerl.distributed`)."""
    config = Config.coerce(config)
    dp = data_parallel or SINGLE
    dp.check_replay(config)
    env, step_env, spec = envs.trainer_env(config, dp)
    nets = make_nets(config, spec)
    example = replay.example_transition(spec)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp = config.initial_hparams(hparams)
        key, actor_key, critic_key, value_key, env_key = jax.random.split(key, 5)
        dummy_obs = jnp.zeros((1,) + spec.obs_shape, jnp.float32)
        critic_params = (nets.critic.init(critic_key, dummy_obs) if spec.discrete else
                         nets.critic.init(critic_key, dummy_obs, example.action[None]))
        value_params = nets.value.init(value_key, dummy_obs) if config.value_network else None
        params = Params(nets.actor.init(actor_key, dummy_obs), critic_params, value_params,
                        jnp.log(hp["alpha"]))
        return TrainState(
            params=params,
            target=value_params if config.value_network else critic_params,
            opt_state=Params(*(None if p is None else optim.adam(1.0).init(p) for p in params)),
            buffer=replay.init(config.buffer_capacity, example),
            run=loop.RunState.start(key, hp, config, env, env_key),
        )

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        cfg = config.with_hparams(state.run.hparams)
        key, act_key, warmup_key, env_key, learn_key = jax.random.split(state.run.key, 5)

        # --- act, step, store
        dist = nets.actor.apply(state.params.actor, state.run.obs_norm(state.run.env_state.obs))
        action = dist.env_action(dp.sample(dist, act_key))
        if cfg.random_warmup and cfg.learning_starts > 0:
            action = jnp.where(cfg.warming_up(state.run.update_step),
                               dp.local(random_action(spec, warmup_key, cfg.num_envs)), action)
        env_state, transitions, step = rollout.step_transitions(step_env, env_key,
                                                                state.run.env_state, action)
        buffer = replay.add(state.buffer, transitions)
        norm = state.run.obs_norm.update(transitions.obs, axis_name=dp.axis_name)

        # --- learn
        learner, metrics = optim.gradient_steps(
            lambda learner, k: gradient_step(nets, cfg, buffer, norm, learner, k, dp),
            Learner(state.params, state.target, state.opt_state), learn_key,
            cfg.num_gradient_steps, cfg.learning(state.run.update_step))

        stats = dp.episode_stats(step)
        metrics.update(episode_return=stats.mean_return, episode_count=stats.count)
        run = state.run.advance(key, cfg.num_envs, env_state=env_state, obs_norm=norm)
        return state.replace(**learner._asdict(), buffer=buffer, run=run), metrics

    act = rollout.policy_act(lambda state, obs: nets.actor.apply(state.params.actor, obs))
    return loop.Agent(init, update, act, loop.make_evaluate(act, env, config.eval_episodes),
                      config.num_updates, config.eval_every,
                      lambda state, obs: state_value(nets, config, state, obs))


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see "The trainer contract" in
    docs/contract.md."""
    return loop.make_train_fn(make_agent(config))
