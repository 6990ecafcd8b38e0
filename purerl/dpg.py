"""Deterministic policy gradient with replay: the shared core of DDPG and TD3.

DDPG (Lillicrap et al. 2016, Algorithm 1) and TD3 (Fujimoto et al. 2018, Algorithm 1) are the
same collect-add-learn loop; TD3 adds twin critics with a min target (clipped double-Q learning,
section 4.2), target-policy smoothing (section 5.3) and delayed actor / target updates (section
5.2). :mod:`purerl.ddpg` and :mod:`purerl.td3` are thin Configs of :func:`make_agent`: the
variant is the Config's ``twin_critics`` and :meth:`DPGConfig.smoothing`.

One update:

1. act in each of ``num_envs`` environments with a = clip(mu(s) + noise, low, high), the noise
   Gaussian or Ornstein-Uhlenbeck (:mod:`purerl.noise`; the OU state lives in the train state,
   one row per environment, reset when that environment's episode ends); while fewer than
   ``learning_starts`` env steps have been taken and ``random_warmup`` is set, the action is
   uniform in the bounds instead;
2. step the environments and ``replay.add`` the transitions (real s', ``terminated``);
3. once ``learning_starts`` env steps are stored, ``num_gradient_steps`` gradient steps (a
   ``lax.scan``) on uniformly sampled minibatches, each a :func:`gradient_step`:

   * :func:`critic_step`: minimise sum_i E[(Q_i(s, a) - y)^2] with
     y = r + gamma (1 - terminated) min_i Q'_i(s', a'), a' = mu'(s') (DDPG: one critic) or
     a' = clip(mu'(s') + clip(N(0, sigma~^2), -c, c), low, high) (TD3's smoothing);
   * every ``policy_delay``-th gradient step, :func:`actor_and_target_step`: the actor ascends
     E[Q_1(s, mu(s))], then the target networks move by Polyak averaging
     theta' <- (1 - tau) theta' + tau theta.

Whether an update learns and whether a gradient step updates the actor are ``lax.cond``s whose
predicates depend only on the update / gradient-step counters, which are the same for every
seed: under ``jax.vmap(train)`` (and ``loop.run_chunked``) the counters stay unbatched and the
conds stay branches, so the warm-up costs no gradient work.

Noise scales (``exploration_noise``, TD3's ``policy_noise`` and ``noise_clip``) are fractions
of the action half-range (high - low) / 2, i.e. of ``max_action`` for symmetric bounds.
Metrics besides the common ones: ``q_mean``, ``td_error``, ``critic_loss``, ``actor_loss`` (NaN
on warm-up updates; the actor loss is averaged over the gradient steps that updated the actor)
and ``noise_scale``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from purerl import envs, loop, noise, optim, replay, rollout
from purerl.config import (NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, OffPolicyConfig, choice,
                           hparam, redefault, static)
from purerl.losses import td_target
from purerl.networks import ActorCriticParams as Params
from purerl.networks import DeterministicActor, QCritic, TwinQCritic, torso_for
from purerl.normalize import ObsNormalizer
from purerl.spaces import EnvSpec, random_action


@dataclasses.dataclass(frozen=True)
class DPGConfig(OffPolicyConfig):
    """Fields DDPG and TD3 share; each trainer's Config sets its algorithm name, its variant
    (``twin_critics``, :meth:`smoothing`) and its defaults.

    The defaults (Fujimoto et al. 2018's settings with 64x64 relu networks and batch 128) learn
    Pendulum-v1 in 20k env steps. Final deterministic evaluation over 16 random seeds (8 each
    from ``jax.random.key(0)`` and ``key(1)``): TD3 mean -148, worst seed -193; DDPG mean -149,
    worst seed -213."""

    # the variant, fixed per trainer
    twin_critics: ClassVar[bool] = False

    env: str = redefault("env", "Pendulum-v1")
    total_timesteps: int = redefault("total_timesteps", 20_000)
    hidden_sizes: tuple[int, ...] = redefault("hidden_sizes", (64, 64))
    activation: str = redefault("activation", "relu")
    eval_every: int = redefault("eval_every", 5_000)

    policy_delay: int = static(1, "gradient steps per actor and target update", POSITIVE)
    random_warmup: bool = static(True, "uniformly random actions before learning_starts")
    exploration: str = choice("gaussian", ("gaussian", "ou"),
                              "exploration noise: Gaussian or Ornstein-Uhlenbeck")

    actor_lr: float = hparam(1e-3, "actor Adam learning rate", POSITIVE)
    critic_lr: float = hparam(1e-3, "critic Adam learning rate", POSITIVE)
    gamma: float = hparam(0.99, "discount factor", UNIT_INTERVAL)
    tau: float = hparam(0.005, "Polyak coefficient of the target networks", UNIT_INTERVAL)
    exploration_noise: float = hparam(
        0.1, "Gaussian std / OU sigma, a fraction of the action half-range", NON_NEGATIVE)
    ou_theta: float = hparam(0.15, "OU mean-reversion rate theta", POSITIVE)
    ou_dt: float = hparam(1e-2, "OU time step dt", POSITIVE)

    def smoothing(self) -> tuple[Any, Any] | None:
        """(std, clip) of the target-policy smoothing noise, as fractions of the action
        half-range, or None (DDPG: a' = mu'(s'))."""
        return None


@struct.dataclass
class TrainState:
    params: Params
    target: Params
    actor_opt: Any
    critic_opt: Any
    grad_step: jax.Array  # gradient steps taken so far
    buffer: replay.ReplayBuffer
    ou_state: jax.Array  # [num_envs, action_dim]; zeros and unused with Gaussian noise
    run: loop.RunState


class Learner(NamedTuple):
    """What a gradient step changes (the carry of the gradient-step scan)."""

    params: Params
    target: Params
    actor_opt: Any
    critic_opt: Any
    grad_step: jax.Array


class Nets(NamedTuple):
    """The networks and the action space, fixed when the agent is built."""

    spec: EnvSpec
    actor: DeterministicActor
    critic: QCritic | TwinQCritic

    @property
    def low(self) -> jax.Array:
        return jnp.asarray(self.spec.action_low, jnp.float32)

    @property
    def high(self) -> jax.Array:
        return jnp.asarray(self.spec.action_high, jnp.float32)

    @property
    def half_range(self) -> jax.Array:
        return (self.high - self.low) / 2.0


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


def critic_step(nets: Nets, cfg: DPGConfig, learner: Learner, batch: replay.Transition,
                key: jax.Array) -> tuple[Learner, dict[str, jax.Array]]:
    """One Adam step of the critic(s) on sum_i E[(Q_i(s, a) - y)^2] (``batch`` normalised)."""
    smoothing = cfg.smoothing()
    noise_args = () if smoothing is None else tuple(s * nets.half_range for s in smoothing)
    next_action = target_action(lambda o: nets.actor.apply(learner.target.actor, o),
                                batch.next_obs, key, nets.low, nets.high, *noise_args)
    y = critic_target(batch.reward, batch.terminated,
                      nets.critic.apply(learner.target.critic, batch.next_obs, next_action),
                      cfg.gamma)

    def loss_fn(critic_params):
        q = nets.critic.apply(critic_params, batch.obs, batch.action)
        return jnp.sum(jnp.mean(jnp.square(q - y), -1)), q

    (loss, q), grads = jax.value_and_grad(loss_fn, has_aux=True)(learner.params.critic)
    updates, critic_opt = optim.adam(cfg.critic_lr).update(grads, learner.critic_opt,
                                                           learner.params.critic)
    params = learner.params._replace(critic=optax.apply_updates(learner.params.critic, updates))
    q1 = q[0] if cfg.twin_critics else q
    info = {"q_mean": q1.mean(), "td_error": jnp.abs(q - y).mean(), "critic_loss": loss}
    return learner._replace(params=params, critic_opt=critic_opt), info


def actor_and_target_step(nets: Nets, cfg: DPGConfig, learner: Learner, obs: jax.Array
                          ) -> tuple[Learner, jax.Array]:
    """One Adam step of the actor on -E[Q_1(s, mu(s))], then Polyak-average the targets;
    returns the learner and the actor loss."""
    def loss_fn(actor_params):
        action = nets.actor.apply(actor_params, obs)
        return -jnp.mean(nets.critic.apply(learner.params.critic, obs, action, method="q1"))

    loss, grads = jax.value_and_grad(loss_fn)(learner.params.actor)
    updates, actor_opt = optim.adam(cfg.actor_lr).update(grads, learner.actor_opt,
                                                         learner.params.actor)
    params = learner.params._replace(actor=optax.apply_updates(learner.params.actor, updates))
    return learner._replace(params=params, target=optim.polyak(learner.target, params, cfg.tau),
                            actor_opt=actor_opt), loss


def gradient_step(nets: Nets, cfg: DPGConfig, buffer: replay.ReplayBuffer,
                  norm: ObsNormalizer, learner: Learner, key: jax.Array
                  ) -> tuple[Learner, dict[str, jax.Array]]:
    """A critic step on a sampled minibatch and, every ``policy_delay``-th step, an actor and
    target step (a ``lax.cond`` on the unbatched step counter)."""
    sample_key, smooth_key = jax.random.split(key)
    batch = replay.sample(buffer, sample_key, cfg.batch_size)
    batch = batch._replace(obs=norm(batch.obs), next_obs=norm(batch.next_obs))
    learner, info = critic_step(nets, cfg, learner, batch, smooth_key)

    def delayed(learner: Learner) -> tuple[Learner, jax.Array]:
        return actor_and_target_step(nets, cfg, learner, batch.obs)

    if cfg.policy_delay == 1:
        learner, actor_loss = delayed(learner)
    else:
        learner, actor_loss = jax.lax.cond(
            learner.grad_step % cfg.policy_delay == 0, delayed,
            lambda learner: (learner, jnp.asarray(jnp.nan, jnp.float32)), learner)
    return learner._replace(grad_step=learner.grad_step + 1), {**info, "actor_loss": actor_loss}


def behaviour_action(nets: Nets, cfg: DPGConfig, state: TrainState, noise_key: jax.Array,
                     warmup_key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a = clip(mu(s) + noise, low, high), the new OU state) for the training environments'
    observations; uniformly random actions during the warm-up with ``random_warmup``."""
    noise_scale = cfg.exploration_noise * nets.half_range
    mu = nets.actor.apply(state.params.actor, state.run.obs_norm(state.run.env_state.obs))
    if cfg.exploration == "ou":
        ou_state = noise.ou_step(state.ou_state, noise_key, cfg.ou_theta, noise_scale, cfg.ou_dt)
        eps = ou_state
    else:
        ou_state, eps = state.ou_state, noise.gaussian(noise_key, mu.shape, noise_scale)
    action = noise.perturb(mu, eps, nets.low, nets.high)
    if cfg.random_warmup and cfg.learning_starts > 0:
        action = jnp.where(cfg.warming_up(state.run.update_step),
                           random_action(nets.spec, warmup_key, cfg.num_envs), action)
    return action, ou_state


def policy_action(nets: Nets, config: DPGConfig, state: TrainState, obs: jax.Array,
                  key: jax.Array | None = None, deterministic: bool = True) -> jax.Array:
    """The agent's ``act``: mu(s), or with ``deterministic=False`` mu(s) plus Gaussian noise of
    the state's ``exploration_noise`` (clipped to the bounds; Gaussian also under OU
    exploration, whose state belongs to the training environments)."""
    mu = nets.actor.apply(state.params.actor, state.run.obs_norm(obs))
    if deterministic:
        return mu
    cfg = config.with_hparams(state.run.hparams)
    eps = noise.gaussian(key, mu.shape, cfg.exploration_noise * nets.half_range)
    return noise.perturb(mu, eps, nets.low, nets.high)


def q1_value(nets: Nets, state: TrainState, obs: jax.Array) -> jax.Array:
    """The agent's ``value``: Q_1(s, mu(s))."""
    obs = state.run.obs_norm(obs)
    return nets.critic.apply(state.params.critic, obs,
                             nets.actor.apply(state.params.actor, obs), method="q1")


def make_nets(config: DPGConfig, spec: EnvSpec) -> Nets:
    """The deterministic actor and the critic (twin critics with ``config.twin_critics``) for
    ``spec``."""
    torso = torso_for(config.torso, spec.obs_shape)
    return Nets(spec, DeterministicActor(spec, config.hidden_sizes, config.activation, torso),
                (TwinQCritic if config.twin_critics else QCritic)(
                    config.hidden_sizes, config.activation, len(spec.obs_shape), torso))


def init_state(nets: Nets, config: DPGConfig, env: envs.Env, key: jax.Array,
               hparams: Mapping[str, Any] | None = None) -> TrainState:
    """The agent's ``init``: fresh networks with their targets equal, an empty buffer and
    ``config.num_envs`` reset environments."""
    spec = nets.spec
    hp = config.initial_hparams(hparams)
    key, actor_key, critic_key, env_key = jax.random.split(key, 4)
    dummy_obs = jnp.zeros((1,) + spec.obs_shape, jnp.float32)
    dummy_action = jnp.zeros((1,) + tuple(spec.action_shape), jnp.float32)
    params = Params(nets.actor.init(actor_key, dummy_obs),
                    nets.critic.init(critic_key, dummy_obs, dummy_action))
    return TrainState(
        params=params,
        target=params,
        actor_opt=optim.adam(1.0).init(params.actor),
        critic_opt=optim.adam(1.0).init(params.critic),
        grad_step=jnp.zeros((), loop.counter_dtype()),
        buffer=replay.init(config.buffer_capacity, replay.example_transition(spec)),
        ou_state=noise.ou_init((config.num_envs,) + tuple(spec.action_shape)),
        run=loop.RunState.start(key, hp, config, env, env_key),
    )


def update_state(nets: Nets, config: DPGConfig, env: envs.Env, state: TrainState
                 ) -> tuple[TrainState, loop.Metrics]:
    """The agent's ``update``: one exploring step of every environment into the buffer, then
    (once learning has started) ``num_gradient_steps`` gradient steps."""
    cfg = config.with_hparams(state.run.hparams)
    key, noise_key, warmup_key, env_key, learn_key = jax.random.split(state.run.key, 5)

    # --- act, step, store
    action, ou_state = behaviour_action(nets, cfg, state, noise_key, warmup_key)
    env_state, transitions, step = rollout.step_transitions(env, env_key, state.run.env_state,
                                                            action)
    if cfg.exploration == "ou":
        ou_state = noise.ou_reset(ou_state, step.terminated | step.truncated)
    buffer = replay.add(state.buffer, transitions)
    norm = state.run.obs_norm.update(transitions.obs)

    # --- learn
    learner = Learner(state.params, state.target, state.actor_opt, state.critic_opt,
                      state.grad_step)
    learner, metrics = optim.gradient_steps(
        lambda learner, k: gradient_step(nets, cfg, buffer, norm, learner, k), learner,
        learn_key, cfg.num_gradient_steps, cfg.learning(state.run.update_step))

    stats = rollout.episode_stats(step)
    metrics.update(episode_return=stats.mean_return, episode_count=stats.count,
                   noise_scale=jnp.mean(cfg.exploration_noise * nets.half_range))
    run = state.run.advance(key, cfg.num_envs, env_state=env_state, obs_norm=norm)
    return state.replace(**learner._asdict(), buffer=buffer, ou_state=ou_state, run=run), metrics


def make_agent(config: DPGConfig) -> loop.Agent:
    """The agent of a DDPG or TD3 Config (``ddpg.make_agent`` and ``td3.make_agent`` take
    dicts too)."""
    if not isinstance(config, DPGConfig):
        raise TypeError(f"dpg.make_agent takes a DPGConfig (ddpg.Config or td3.Config), got "
                        f"{type(config).__name__}; use ddpg.make_agent or td3.make_agent")
    env, _, spec = envs.trainer_env(config, discrete=False)
    nets = make_nets(config, spec)
    act = functools.partial(policy_action, nets, config)
    return loop.Agent(functools.partial(init_state, nets, config, env),
                      functools.partial(update_state, nets, config, env), act,
                      loop.make_evaluate(act, env, config.eval_episodes), config.num_updates,
                      config.eval_every, functools.partial(q1_value, nets))
