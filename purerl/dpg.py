"""Deterministic policy gradient with replay: the shared core of DDPG and TD3.

DDPG (Lillicrap et al. 2016; seeds 000, 003) and TD3 (Fujimoto et al. 2018; seeds 000, 004) are
the same collect-add-learn loop; TD3 adds twin critics with a min target, target-policy
smoothing and delayed actor / target updates. :mod:`purerl.ddpg` and :mod:`purerl.td3` are
thin configurations of :func:`make_agent`.

One update:

1. act in each of ``num_envs`` environments with a = clip(mu(s) + noise, low, high), the noise
   Gaussian or Ornstein-Uhlenbeck (:mod:`purerl.noise`; the OU state lives in the train state,
   one row per environment, reset when that environment's episode ends); while fewer than
   ``learning_starts`` env steps have been taken and ``random_warmup`` is set, the action is
   uniform in the bounds instead;
2. step the environments and ``replay.add`` the transitions (real s', ``terminated``);
3. once ``learning_starts`` env steps are stored, ``num_gradient_steps`` gradient steps (a
   ``lax.scan``) on uniformly sampled minibatches:

   * critic(s): minimise sum_i E[(Q_i(s, a) - y)^2] with
     y = r + gamma (1 - terminated) min_i Q'_i(s', a'), a' = mu'(s') (DDPG: one critic) or
     a' = clip(mu'(s') + clip(N(0, sigma~^2), -c, c), low, high) (TD3's smoothing);
   * every ``policy_delay``-th gradient step: the actor ascends E[Q_1(s, mu(s))], then the
     target networks move by Polyak averaging theta' <- (1 - tau) theta' + tau theta.

Whether an update learns and whether a gradient step updates the actor are ``lax.cond``s whose
predicates depend only on the update / gradient-step counters, which are the same for every
seed: under ``jax.vmap(train)`` the counters stay unbatched and the conds stay branches (the
warm-up costs no gradient work); where a counter is batched (e.g. ``loop.run_chunked``'s
vmapped init) JAX evaluates both branches and selects, with the same result.

Noise scales (``exploration_noise``, TD3's ``policy_noise`` and ``noise_clip``) are fractions
of the action half-range (high - low) / 2, i.e. of ``max_action`` for symmetric bounds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from purerl import envs, loop, noise, optim, replay, rollout
from purerl.config import (OffPolicyConfig, hparam, non_negative, one_of, positive, redefault,
                           static, unit_interval)
from purerl.losses import td_target
from purerl.networks import ActorCriticParams as Params
from purerl.networks import DeterministicActor, QCritic, TwinQCritic


@dataclasses.dataclass(frozen=True)
class DPGConfig(OffPolicyConfig):
    """Fields DDPG and TD3 share; each trainer's Config sets its algorithm name and defaults.

    The defaults (seed 004's settings with 64x64 relu networks and batch 128) learn
    Pendulum-v1 in 20k env steps. Final deterministic evaluation over 16 seeds (8 each from
    ``jax.random.key(0)`` and ``key(1)``): TD3 mean -148, worst seed -193; DDPG mean -149,
    worst seed -213."""

    env: str = redefault("env", "Pendulum-v1")
    total_timesteps: int = redefault("total_timesteps", 20_000)
    hidden_sizes: tuple[int, ...] = redefault("hidden_sizes", (64, 64))
    activation: str = redefault("activation", "relu")
    eval_every: int = redefault("eval_every", 5_000)

    policy_delay: int = static(1, check=positive, why="must be > 0")
    random_warmup: bool = static(True)
    exploration: str = static("gaussian", check=one_of("gaussian", "ou"),
                              why="must be 'gaussian' or 'ou'")

    actor_lr: float = hparam(1e-3, check=positive, why="must be > 0")
    critic_lr: float = hparam(1e-3, check=positive, why="must be > 0")
    gamma: float = hparam(0.99, check=unit_interval, why="must be in [0, 1]")
    tau: float = hparam(0.005, check=unit_interval, why="must be in [0, 1]")
    exploration_noise: float = hparam(
        0.1, check=non_negative,
        why="must be >= 0 (Gaussian std / OU sigma, a fraction of the action half-range)")
    ou_theta: float = hparam(0.15, check=positive, why="must be > 0")
    ou_dt: float = hparam(1e-2, check=positive, why="must be > 0")


@struct.dataclass
class TrainState:
    params: Params
    target: Params
    actor_opt: Any
    critic_opt: Any
    buffer: replay.ReplayBuffer
    env_state: envs.EnvState
    ou_state: jax.Array  # [num_envs, action_dim]; zeros and unused with Gaussian noise
    obs_norm: envs.ObsNormState
    key: jax.Array
    update_step: jax.Array
    grad_step: jax.Array  # gradient steps taken so far
    hparams: dict[str, jax.Array]


def critic_target(reward: jax.Array, terminated: jax.Array, next_q: jax.Array,
                  gamma) -> jax.Array:
    """y = r + gamma (1 - terminated) min_i Q'_i(s', a'); ``next_q`` is ``[B]`` (one critic) or
    ``[num_critics, B]`` (the min is taken over the leading axis). Truncated transitions
    bootstrap (only ``terminated`` stops it)."""
    if next_q.ndim == reward.ndim + 1:
        next_q = next_q.min(0)
    return td_target(reward, terminated, next_q, gamma)


def target_action(target_actor: Callable[[jax.Array], jax.Array], next_obs: jax.Array,
                  key: jax.Array, low, high, noise_std=None, noise_clip=None) -> jax.Array:
    """a' = mu'(s'), or with ``noise_std`` TD3's smoothed
    a' = clip(mu'(s') + clip(noise_std N(0, I), -noise_clip, noise_clip), low, high)
    (the noise drawn as ``noise.clipped_gaussian(key, a'.shape, ...)``)."""
    action = target_actor(next_obs)
    if noise_std is None:
        return action
    eps = noise.clipped_gaussian(key, action.shape, noise_std, noise_clip)
    return noise.perturb(action, eps, low, high)


def make_agent(cfg: DPGConfig, *, twin_critics: bool, target_smoothing: bool) -> loop.Agent:
    env, env_params, spec = envs.make_env(cfg.env)
    if spec.discrete:
        raise ValueError(f"{cfg.algo} needs continuous actions, but {cfg.env} has discrete "
                         f"actions ({spec.num_actions} of them); use a continuous environment "
                         "such as Pendulum-v1")
    obs_ndim = len(spec.obs_shape)
    actor = DeterministicActor(spec, cfg.hidden_sizes, cfg.activation)
    critic = (TwinQCritic if twin_critics else QCritic)(cfg.hidden_sizes, cfg.activation, obs_ndim)
    first_critic = QCritic(cfg.hidden_sizes, cfg.activation, obs_ndim)
    low = jnp.asarray(spec.action_low, jnp.float32)
    high = jnp.asarray(spec.action_high, jnp.float32)
    half_range = (high - low) / 2.0
    action_shape = (cfg.num_envs,) + tuple(spec.action_shape)

    def q1(critic_params, obs, action):
        """Q_1(s, a) alone (the actor's objective), without evaluating a twin."""
        if not twin_critics:
            return critic.apply(critic_params, obs, action)
        return first_critic.apply({"params": critic_params["params"]["QCritic_0"]}, obs, action)

    def init(key: jax.Array, hparams=None) -> TrainState:
        hp = cfg.initial_hparams(hparams)
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        dummy_obs = jnp.zeros((1,) + spec.obs_shape)
        dummy_action = jnp.zeros((1,) + tuple(spec.action_shape))
        params = Params(actor.init(actor_key, dummy_obs),
                        critic.init(critic_key, dummy_obs, dummy_action))
        example = replay.Transition(jnp.zeros(spec.obs_shape), jnp.zeros(spec.action_shape),
                                    jnp.zeros(()), jnp.zeros(spec.obs_shape),
                                    jnp.zeros((), bool))
        return TrainState(
            params=params,
            target=params,
            actor_opt=optim.adam(1.0).init(params.actor),
            critic_opt=optim.adam(1.0).init(params.critic),
            buffer=replay.init(cfg.buffer_capacity, example),
            env_state=envs.reset(env, env_params, env_key, cfg.num_envs),
            ou_state=noise.ou_init(action_shape),
            obs_norm=envs.obs_norm_init(spec.obs_shape),
            key=key,
            update_step=jnp.asarray(0, jnp.int32),
            grad_step=jnp.asarray(0, jnp.int32),
            hparams=hp,
        )

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        c = cfg.with_hparams(state.hparams)
        key, noise_key, warmup_key, env_key, learn_key = jax.random.split(state.key, 5)
        norm = envs.normalizer(state.obs_norm if cfg.normalize_obs else None)
        noise_scale = c.exploration_noise * half_range

        # --- act, step, store
        mu = actor.apply(state.params.actor, norm(state.env_state.obs))
        if cfg.exploration == "ou":
            ou_state = noise.ou_step(state.ou_state, noise_key, c.ou_theta, noise_scale, c.ou_dt)
            eps = ou_state
        else:
            ou_state = state.ou_state
            eps = noise.gaussian(noise_key, action_shape, noise_scale)
        action = noise.perturb(mu, eps, low, high)
        if cfg.random_warmup and cfg.learning_starts > 0:
            action = jnp.where(state.update_step * cfg.num_envs < cfg.learning_starts,
                               envs.random_action(spec, warmup_key, cfg.num_envs), action)
        env_state, transitions, step = rollout.step_transitions(
            env, env_params, env_key, state.env_state, action)
        if cfg.exploration == "ou":
            ou_state = noise.ou_reset(ou_state, step.terminated | step.truncated)
        buffer = replay.add(state.buffer, transitions)
        obs_norm = (envs.obs_norm_update(state.obs_norm, transitions.obs) if cfg.normalize_obs
                    else state.obs_norm)
        norm = envs.normalizer(obs_norm if cfg.normalize_obs else None)

        # --- learn
        actor_tx, critic_tx = optim.adam(c.actor_lr), optim.adam(c.critic_lr)

        def critic_loss_fn(critic_params, obs, action, y):
            q = critic.apply(critic_params, obs, action)
            err = q - y
            return jnp.sum(jnp.mean(jnp.square(err), -1)), (q, err)

        def actor_loss_fn(actor_params, critic_params, obs):
            return -jnp.mean(q1(critic_params, obs, actor.apply(actor_params, obs)))

        def actor_and_targets(args):
            params, target, actor_opt, obs = args
            loss, grads = jax.value_and_grad(actor_loss_fn)(params.actor, params.critic, obs)
            updates, actor_opt = actor_tx.update(grads, actor_opt, params.actor)
            params = params._replace(actor=optax.apply_updates(params.actor, updates))
            return params, optim.polyak(target, params, c.tau), actor_opt, loss

        def grad_step(carry, step_key):
            params, target, actor_opt, critic_opt, count = carry
            sample_key, smooth_key = jax.random.split(step_key)
            batch = replay.sample(buffer, sample_key, cfg.batch_size)
            obs, next_obs = norm(batch.obs), norm(batch.next_obs)
            next_action = target_action(
                lambda o: actor.apply(target.actor, o), next_obs, smooth_key, low, high,
                *((c.policy_noise * half_range, c.noise_clip * half_range)
                  if target_smoothing else ()))
            y = critic_target(batch.reward, batch.terminated,
                              critic.apply(target.critic, next_obs, next_action), c.gamma)
            (critic_loss, (q, err)), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
                params.critic, obs, batch.action, y)
            updates, critic_opt = critic_tx.update(grads, critic_opt, params.critic)
            params = params._replace(critic=optax.apply_updates(params.critic, updates))
            args = (params, target, actor_opt, obs)
            if cfg.policy_delay == 1:
                params, target, actor_opt, actor_loss = actor_and_targets(args)
            else:
                params, target, actor_opt, actor_loss = jax.lax.cond(
                    count % cfg.policy_delay == 0, actor_and_targets,
                    lambda a: (a[0], a[1], a[2], jnp.asarray(jnp.nan, jnp.float32)), args)
            q_first = q[0] if twin_critics else q
            info = {"q_mean": q_first.mean(), "td_error": jnp.abs(err).mean(),
                    "critic_loss": critic_loss, "actor_loss": actor_loss}
            return (params, target, actor_opt, critic_opt, count + 1), info

        carry = (state.params, state.target, state.actor_opt, state.critic_opt, state.grad_step)
        carry, metrics = optim.gradient_steps(grad_step, carry, learn_key, cfg.num_gradient_steps,
                                              cfg.learning(state.update_step))
        params, target, actor_opt, critic_opt, grad_count = carry

        stats = rollout.episode_stats(step)
        metrics.update(
            episode_return=stats.mean_return,
            episode_count=stats.count,
            env_steps=(state.update_step + 1) * cfg.num_envs,
            noise_scale=jnp.mean(noise_scale),
        )
        new_state = state.replace(
            params=params, target=target, actor_opt=actor_opt, critic_opt=critic_opt,
            buffer=buffer, env_state=env_state, ou_state=ou_state, obs_norm=obs_norm, key=key,
            update_step=state.update_step + 1, grad_step=grad_count)
        return new_state, metrics

    def act(params: Params, obs: jax.Array, key: jax.Array | None = None,
            deterministic: bool = True, obs_norm: Any = None) -> jax.Array:
        """mu(s), or with ``deterministic=False`` mu(s) plus Gaussian exploration noise of the
        config's ``exploration_noise`` (clipped to the bounds)."""
        if obs_norm is not None:
            obs = envs.obs_normalize(obs_norm, obs)
        mu = actor.apply(params.actor, obs)
        if deterministic:
            return mu
        eps = noise.gaussian(key, mu.shape, cfg.exploration_noise * half_range)
        return noise.perturb(mu, eps, low, high)

    evaluate = loop.make_evaluate(act, env, env_params, spec, cfg)
    return loop.Agent(init, update, act, evaluate, cfg.num_updates, cfg.eval_every)
