"""Soft actor-critic (Haarnoja et al. 2018a, 2018b; seed 003; the maximum-entropy objective of
seed 001), for continuous actions and, after Christodoulou (2019), for discrete ones.

SAC maximises E[sum_t gamma^t (r_t + alpha H(pi(.|s_t)))]. One update:

1. act in each of ``num_envs`` environments with a ~ pi(.|s) (uniformly random actions while
   fewer than ``learning_starts`` env steps are stored and ``random_warmup`` is set), step, and
   ``replay.add`` the transitions (real s', ``terminated``: truncations bootstrap);
2. once ``learning_starts`` env steps are stored, ``num_gradient_steps`` gradient steps (a
   ``lax.scan``; the update-to-data ratio is ``num_gradient_steps / num_envs``) on uniform
   minibatches, each minimising

   * the twin soft Q losses  J_Q(theta_i) = E[1/2 (Q_i(s, a) - y)^2], i = 1, 2, with
     y = r + gamma (1 - terminated) V'(s') and the soft value of the next state
     V'(s') = min_i Q'_i(s', a') - alpha log pi(a'|s'), a' ~ pi(.|s') (target critics Q'_i);
     with ``value_network=True`` (the 2018a variant) y = r + gamma (1 - terminated) V_bar(s');
   * the policy loss  J_pi(phi) = E[alpha log pi(a~|s) - min_i Q_i(s, a~)], a~ = f_phi(eps; s)
     reparameterised (u = mean + std eps, a~ = scale(tanh(u))), so the gradient flows
     through the sampled action into the critics;
   * with ``value_network=True``, J_V(psi) = E[1/2 (V_psi(s) - [min_i Q_i(s, a~) -
     alpha log pi(a~|s)])^2], a~ ~ pi fresh from the current policy (not the buffer);
   * with ``autotune_alpha``, the temperature loss J(alpha) = E[alpha (H - H_target)]
     (``losses.temperature_loss``), H = -log pi(a~|s);

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
:data:`DISCRETE` holds settings that learn CartPole-v1.

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

from purerl import envs, loop, optim, replay, rollout
from purerl.config import (OffPolicyConfig, hparam, redefault, positive, static,
                           unit_interval)
from purerl.distributions import Categorical, TanhGaussian
from purerl.losses import expected_soft_value, soft_value, td_target, temperature_loss
from purerl.networks import (Actor, SquashedGaussianActor, TwinQCritic, TwinQNetwork,
                             ValueCritic)


@dataclasses.dataclass(frozen=True)
class Config(OffPolicyConfig):
    """SAC hyperparameters. The defaults learn Pendulum-v1 in 15k env steps: final deterministic
    evaluation -148 (mean of 4 seeds from ``jax.random.key(0)``) and -136 (8 seeds from
    ``key(1)``, worst -190); :data:`DISCRETE` holds settings for CartPole-v1."""

    algo = "sac"

    env: str = redefault("env", "Pendulum-v1")
    total_timesteps: int = redefault("total_timesteps", 15_000)
    hidden_sizes: tuple[int, ...] = redefault("hidden_sizes", (64, 64))
    activation: str = redefault("activation", "relu")
    eval_every: int = redefault("eval_every", 5_000)

    batch_size: int = redefault("batch_size", 256)
    random_warmup: bool = static(True)
    value_network: bool = static(False)
    autotune_alpha: bool = static(True)

    actor_lr: float = hparam(1e-3, check=positive, why="must be > 0")
    critic_lr: float = hparam(1e-3, check=positive,
                              why="must be > 0 (also the value network's learning rate)")
    alpha_lr: float = hparam(1e-3, check=positive, why="must be > 0")
    gamma: float = hparam(0.99, check=unit_interval, why="must be in [0, 1]")
    tau: float = hparam(0.005, check=unit_interval, why="must be in [0, 1]")
    alpha: float = hparam(1.0, check=positive,
                          why="must be > 0 (initial temperature; fixed without autotune_alpha)")
    target_entropy_scale: float = hparam(
        1.0, continuous_only=True,
        why="(continuous actions: H_target = -target_entropy_scale * action_dim)")
    target_entropy_ratio: float = hparam(
        0.7, check=unit_interval, discrete_only=True,
        why="must be in [0, 1] (discrete actions: H_target = ratio * log(num_actions))")


# Settings that learn CartPole-v1 with discrete SAC: ``sac.Config(**sac.DISCRETE)``. Five envs
# and two gradient steps per update (update-to-data ratio 0.4), a recent-experience buffer of 10k
# transitions and fast targets (tau 0.05), as in rejax's tuned CartPole config. Measured: 500 on
# all 12 seeds tried (4 from key 0, 8 from key 1), from about 20k env steps on.
DISCRETE: dict[str, Any] = dict(env="CartPole-v1", total_timesteps=30_000, num_envs=5,
                                num_gradient_steps=2, buffer_size=10_000, tau=0.05,
                                activation="tanh", eval_every=1_000)


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
    env_state: envs.EnvState
    obs_norm: envs.ObsNormState
    key: jax.Array
    update_step: jax.Array
    hparams: dict[str, jax.Array]


def target_entropy(spec: envs.EnvSpec, cfg: Config):
    """-target_entropy_scale |A| (continuous), target_entropy_ratio log |A| (discrete)."""
    if spec.discrete:
        return cfg.target_entropy_ratio * math.log(spec.num_actions)
    return -cfg.target_entropy_scale * spec.action_dim


def sampled_soft_value(dist: TanhGaussian, q_fn: Callable[[jax.Array], jax.Array],
                       key: jax.Array, alpha) -> tuple[jax.Array, jax.Array]:
    """(V(s), H(s)) for a continuous policy from one reparameterised sample per state:
    u = mean + std eps, a~ = scale(tanh(u)), V = min_i Q_i(s, a~) - alpha log pi(a~|s) and
    H = -log pi(a~|s), with ``q_fn(a~)`` returning ``[2, B]`` twin values (or ``[B]``)."""
    u = dist.sample(key)
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


def make_agent(config: Config | Mapping[str, Any] | None = None) -> loop.Agent:
    cfg = Config.coerce(config)
    env, env_params, spec = envs.make_env(cfg.env)
    cfg.check_action_space(spec.discrete, cfg.env)
    obs_ndim = len(spec.obs_shape)
    if spec.discrete:
        actor = Actor(spec, cfg.hidden_sizes, cfg.activation)
        critic = TwinQNetwork(spec.num_actions, cfg.hidden_sizes, cfg.activation, obs_ndim)
        stored_action = jnp.zeros((), jnp.int32)
    else:
        actor = SquashedGaussianActor(spec, cfg.hidden_sizes, cfg.activation)
        critic = TwinQCritic(cfg.hidden_sizes, cfg.activation, obs_ndim)
        stored_action = jnp.zeros(spec.action_shape, jnp.float32)
    value_net = ValueCritic(cfg.hidden_sizes, cfg.activation, obs_ndim)
    example = replay.Transition(jnp.zeros(spec.obs_shape), stored_action, jnp.zeros(()),
                                jnp.zeros(spec.obs_shape), jnp.zeros((), bool))

    def q_taken(critic_params, obs, action):
        """Q_i(s, a) of the stored actions, ``[2, B]``."""
        if spec.discrete:  # a one-hot contraction: its gradient is not a scatter
            q_all = critic.apply(critic_params, obs)
            return jnp.sum(q_all * jax.nn.one_hot(action, spec.num_actions), -1)
        return critic.apply(critic_params, obs, action)

    def policy_soft_value(actor_params, critic_params, obs, key, alpha):
        """(V(s), H(s)) of the current policy under the critics ``critic_params``."""
        dist = actor.apply(actor_params, obs)
        if spec.discrete:
            return exact_soft_value(dist, critic.apply(critic_params, obs), alpha)
        return sampled_soft_value(dist, lambda a: critic.apply(critic_params, obs, a), key,
                                  alpha)

    def loss_fn(params: Params, target, batch: replay.Transition, key, c: Config):
        next_key, pi_key = jax.random.split(key)
        alpha = jnp.exp(params.log_alpha) if cfg.autotune_alpha else c.alpha
        alpha = jax.lax.stop_gradient(alpha)
        if cfg.value_network:
            next_value = value_net.apply(target, batch.next_obs)
        else:
            next_value, _ = policy_soft_value(params.actor, target, batch.next_obs, next_key,
                                              alpha)
        y = td_target(batch.reward, batch.terminated, next_value, c.gamma)
        q = q_taken(params.critic, batch.obs, batch.action)
        critic_loss = 0.5 * jnp.sum(jnp.mean(jnp.square(q - y), -1))

        v_pi, entropy = policy_soft_value(params.actor, jax.lax.stop_gradient(params.critic),
                                          batch.obs, pi_key, alpha)
        actor_loss = -jnp.mean(v_pi)
        info = {"critic_loss": critic_loss, "actor_loss": actor_loss, "q_mean": q[0].mean(),
                "td_error": jnp.abs(q[0] - y).mean(), "entropy": entropy.mean(),
                "alpha": alpha}
        total = critic_loss + actor_loss
        if cfg.value_network:
            v = value_net.apply(params.value, batch.obs)
            info["value_loss"] = 0.5 * jnp.mean(jnp.square(v - jax.lax.stop_gradient(v_pi)))
            total = total + info["value_loss"]
        if cfg.autotune_alpha:
            info["alpha_loss"] = temperature_loss(params.log_alpha, entropy,
                                                  target_entropy(spec, c))
            total = total + info["alpha_loss"]
        return total, info

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp = cfg.initial_hparams(hparams)
        key, actor_key, critic_key, value_key, env_key = jax.random.split(key, 5)
        dummy_obs = jnp.zeros((1,) + spec.obs_shape)
        critic_params = (critic.init(critic_key, dummy_obs) if spec.discrete else
                         critic.init(critic_key, dummy_obs, stored_action[None]))
        value_params = value_net.init(value_key, dummy_obs) if cfg.value_network else None
        params = Params(actor.init(actor_key, dummy_obs), critic_params, value_params,
                        jnp.log(hp["alpha"]))
        return TrainState(
            params=params,
            target=value_params if cfg.value_network else critic_params,
            opt_state=Params(*(None if p is None else optim.adam(1.0).init(p) for p in params)),
            buffer=replay.init(cfg.buffer_capacity, example),
            env_state=envs.reset(env, env_params, env_key, cfg.num_envs),
            obs_norm=envs.obs_norm_init(spec.obs_shape),
            key=key,
            update_step=jnp.asarray(0, jnp.int32),
            hparams=hp,
        )

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        c = cfg.with_hparams(state.hparams)
        key, act_key, warmup_key, env_key, learn_key = jax.random.split(state.key, 5)
        norm = envs.normalizer(state.obs_norm if cfg.normalize_obs else None)

        # --- act, step, store
        dist = actor.apply(state.params.actor, norm(state.env_state.obs))
        action = dist.env_action(dist.sample(act_key))
        if cfg.random_warmup and cfg.learning_starts > 0:
            action = jnp.where(state.update_step * cfg.num_envs < cfg.learning_starts,
                               envs.random_action(spec, warmup_key, cfg.num_envs), action)
        env_state, transitions, step = rollout.step_transitions(
            env, env_params, env_key, state.env_state, action)
        buffer = replay.add(state.buffer, transitions)
        obs_norm = (envs.obs_norm_update(state.obs_norm, transitions.obs) if cfg.normalize_obs
                    else state.obs_norm)
        norm = envs.normalizer(obs_norm if cfg.normalize_obs else None)

        # --- learn
        txs = Params(optim.adam(c.actor_lr), optim.adam(c.critic_lr), optim.adam(c.critic_lr),
                     optim.adam(c.alpha_lr))
        learned = [name for name, on in zip(Params._fields, (
            True, True, cfg.value_network, cfg.autotune_alpha)) if on]

        def grad_step(carry, step_key):
            params, target, opt_state = carry
            sample_key, loss_key = jax.random.split(step_key)
            batch = replay.sample(buffer, sample_key, cfg.batch_size)
            batch = batch._replace(obs=norm(batch.obs), next_obs=norm(batch.next_obs))
            grads, info = grad_fn(params, target, batch, loss_key, c)
            new_params, new_opt = params._asdict(), opt_state._asdict()
            for name in learned:
                tx = getattr(txs, name)
                updates, new_opt[name] = tx.update(getattr(grads, name), new_opt[name],
                                                   new_params[name])
                new_params[name] = optax.apply_updates(new_params[name], updates)
            params, opt_state = Params(**new_params), Params(**new_opt)
            target = optim.polyak(target, params.value if cfg.value_network else params.critic,
                                  c.tau)
            return (params, target, opt_state), info

        (params, target, opt_state), metrics = optim.gradient_steps(
            grad_step, (state.params, state.target, state.opt_state), learn_key,
            cfg.num_gradient_steps, cfg.learning(state.update_step))

        stats = rollout.episode_stats(step)
        metrics.update(episode_return=stats.mean_return, episode_count=stats.count,
                       env_steps=(state.update_step + 1) * cfg.num_envs)
        new_state = state.replace(params=params, target=target, opt_state=opt_state,
                                  buffer=buffer, env_state=env_state, obs_norm=obs_norm, key=key,
                                  update_step=state.update_step + 1)
        return new_state, metrics

    act, evaluate = loop.policy_act_and_evaluate(
        lambda params, obs: actor.apply(params.actor, obs), env, env_params, spec, cfg)
    return loop.Agent(init, update, act, evaluate, cfg.num_updates, cfg.eval_every)


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see the trainer contract."""
    return loop.make_train_fn(make_agent(config))
