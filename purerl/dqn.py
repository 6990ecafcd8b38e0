"""Deep Q-Networks (Mnih et al. 2015) with the usual options: double DQN (van Hasselt et al. 2016),
a dueling head (Wang et al. 2016), Huber or squared TD loss, hard or Polyak target updates.

One update: one epsilon-greedy step in each of ``num_envs`` environments, written to a uniform
replay buffer (:mod:`purerl.replay`), then ``num_gradient_steps`` gradient steps (a
``lax.scan``) on minibatches of ``batch_size`` transitions drawn from the buffer, each on

    L = E[l(Q(s, a) - y)],  y = r + gamma (1 - terminated) Q_target(s', a*),

with a* = argmax_a' Q_target(s', a') (DQN) or argmax_a' Q(s', a') (double DQN), and l the Huber
loss or x^2 / 2. Targets bootstrap through time-limit truncations (the buffer keeps the real
next observation and ``terminated``, not ``done``).

Target network: after every ``target_update_every``-th gradient step,
theta_target <- (1 - tau) theta_target + tau theta; ``tau = 1`` is the classic hard copy.

Exploration: epsilon decays linearly from ``epsilon_start`` to ``epsilon_end`` over the first
``exploration_fraction`` of ``total_timesteps`` env steps, then stays at ``epsilon_end``.

``learning_starts``: until the buffer has received that many env steps, updates take no gradient
steps (``optim.gradient_steps`` behind a ``lax.cond`` on the update counter, which stays a branch
under ``vmap(train)``).

Metrics besides the common ones: ``q_mean`` (mean Q(s, a) of the sampled minibatches),
``td_error`` (mean |y - Q(s, a)|), ``loss`` (NaN on warm-up updates), ``epsilon`` (used for this
update's env step), ``lr``. Discrete action spaces only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import struct

from purerl import envs, losses, loop, optim, replay, rollout
from purerl.config import (OffPolicyConfig, hparam, redefault, one_of, positive, static,
                           unit_interval)
from purerl.networks import QNetwork


@dataclasses.dataclass(frozen=True)
class Config(OffPolicyConfig):
    """DQN hyperparameters. The defaults learn CartPole-v1 in 100k env steps (0.5 gradient steps
    of batch 64 per env step): final deterministic evaluation 500 on 17 of 20 seeds tried, mean
    469 (the others 343, 342 and 203)."""

    algo = "dqn"

    total_timesteps: int = redefault("total_timesteps", 100_000)
    hidden_sizes: tuple[int, ...] = redefault("hidden_sizes", (120, 84))
    activation: str = redefault("activation", "relu")
    eval_every: int = redefault("eval_every", 500)

    num_envs: int = redefault("num_envs", 16)
    num_gradient_steps: int = redefault("num_gradient_steps", 8)
    batch_size: int = redefault("batch_size", 64)
    buffer_size: int = redefault("buffer_size", 50_000)
    target_update_every: int = static(256, check=positive,
                                      why="must be > 0 (gradient steps between target updates)")
    double_dqn: bool = static(True)
    dueling: bool = static(False)
    loss: str = static("mse", check=one_of("huber", "mse"), why="must be 'huber' or 'mse'")
    anneal_lr: bool = static(True)

    lr: float = hparam(1e-3, check=positive, why="must be > 0")
    gamma: float = hparam(0.99, check=unit_interval, why="must be in [0, 1]")
    tau: float = hparam(1.0, check=lambda x: 0.0 < x <= 1.0,
                        why="must be in (0, 1] (1 is a hard target copy)")
    epsilon_start: float = hparam(1.0, check=unit_interval, why="must be in [0, 1]")
    epsilon_end: float = hparam(0.04, check=unit_interval, why="must be in [0, 1]")
    exploration_fraction: float = hparam(0.16, check=unit_interval, why="must be in [0, 1]")
    max_grad_norm: float = hparam(10.0, check=positive, why="must be > 0")
    huber_delta: float = hparam(1.0, check=positive, why="must be > 0")


@struct.dataclass
class TrainState:
    params: Any
    target_params: Any
    opt_state: Any
    buffer: replay.ReplayBuffer
    env_state: envs.EnvState
    obs_norm: envs.ObsNormState
    key: jax.Array
    update_step: jax.Array  # updates done (each one env step in every environment)
    grad_step: jax.Array  # gradient steps taken (none before learning_starts)
    hparams: dict[str, jax.Array]


def epsilon_schedule(env_steps, total_timesteps: int, epsilon_start, epsilon_end,
                     exploration_fraction):
    """Linear decay from ``epsilon_start`` at 0 env steps to ``epsilon_end`` at
    ``exploration_fraction * total_timesteps`` env steps, constant afterwards."""
    horizon = jnp.maximum(exploration_fraction * total_timesteps, 1.0)
    progress = jnp.clip(env_steps / horizon, 0.0, 1.0)
    return epsilon_start + (epsilon_end - epsilon_start) * progress


def epsilon_greedy(key: jax.Array, q_values: jax.Array, epsilon) -> jax.Array:
    """argmax_a Q(s, a) with probability 1 - epsilon, else a uniformly random action."""
    explore_key, action_key = jax.random.split(key)
    greedy = jnp.argmax(q_values, -1)
    random = jax.random.randint(action_key, greedy.shape, 0, q_values.shape[-1])
    explore = jax.random.uniform(explore_key, greedy.shape) < epsilon
    return jnp.where(explore, random, greedy).astype(jnp.int32)


def make_agent(config: Config | Mapping[str, Any] | None = None) -> loop.Agent:
    cfg = Config.coerce(config)
    env, env_params, spec = envs.make_env(cfg.env)
    if not spec.discrete:
        raise ValueError(f"{cfg.algo} needs a discrete action space, but {cfg.env} has "
                         "continuous actions; use ddpg, td3 or another continuous-action trainer")
    cfg.check_action_space(spec.discrete, cfg.env)
    network = QNetwork(spec.num_actions, cfg.hidden_sizes, cfg.activation, len(spec.obs_shape),
                       cfg.dueling)
    example = replay.Transition(
        obs=jnp.zeros(spec.obs_shape, jnp.float32), action=jnp.zeros((), jnp.int32),
        reward=jnp.zeros((), jnp.float32), next_obs=jnp.zeros(spec.obs_shape, jnp.float32),
        terminated=jnp.zeros((), bool))

    def normalizer(obs_norm):
        return envs.normalizer(obs_norm if cfg.normalize_obs else None)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp = cfg.initial_hparams(hparams)
        key, net_key, env_key = jax.random.split(key, 3)
        params = network.init(net_key, jnp.zeros((1,) + spec.obs_shape))
        return TrainState(
            params=params,
            target_params=params,
            opt_state=optim.adam(1.0, 1.0).init(params),
            buffer=replay.init(cfg.buffer_capacity, example),
            env_state=envs.reset(env, env_params, env_key, cfg.num_envs),
            obs_norm=envs.obs_norm_init(spec.obs_shape),
            key=key,
            update_step=jnp.asarray(0, jnp.int32),
            grad_step=jnp.asarray(0, jnp.int32),
            hparams=hp,
        )

    def loss_fn(params, target_params, mb: replay.Transition, c: Config):
        n = mb.obs.shape[0]
        if cfg.double_dqn:  # one forward pass of the online network on s and s'
            q_both = network.apply(params, jnp.concatenate([mb.obs, mb.next_obs]))
            q_all, next_q_online = q_both[:n], jax.lax.stop_gradient(q_both[n:])
        else:
            q_all, next_q_online = network.apply(params, mb.obs), None
        next_q_target = network.apply(target_params, mb.next_obs)
        y = losses.q_learning_target(mb.reward, mb.terminated, next_q_target, c.gamma,
                                     next_q_online)
        q = jnp.take_along_axis(q_all, mb.action[:, None], -1)[:, 0]
        err = q - y
        if cfg.loss == "huber":
            loss = losses.huber(err, c.huber_delta).mean()
        else:
            loss = 0.5 * jnp.square(err).mean()
        return loss, {"loss": loss, "q_mean": q.mean(), "td_error": jnp.abs(err).mean()}

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        c = cfg.with_hparams(state.hparams)
        key, act_key, env_key, learn_key = jax.random.split(state.key, 4)
        norm = normalizer(state.obs_norm)

        # --- act and store one step of every environment
        steps_before = state.update_step * cfg.num_envs
        epsilon = epsilon_schedule(steps_before, cfg.total_timesteps, c.epsilon_start,
                                   c.epsilon_end, c.exploration_fraction)
        q_values = network.apply(state.params, norm(state.env_state.obs))
        action = epsilon_greedy(act_key, q_values, epsilon)
        env_state, transitions, step = rollout.step_transitions(env, env_params, env_key,
                                                                state.env_state, action)
        buffer = replay.add(state.buffer, transitions)
        obs_norm = envs.obs_norm_update(state.obs_norm, transitions.obs) if cfg.normalize_obs \
            else state.obs_norm
        norm = normalizer(obs_norm)
        env_steps = steps_before + cfg.num_envs

        # --- learn: num_gradient_steps minibatch steps (kept only once learning has started)
        lr = c.lr
        if cfg.anneal_lr:
            lr = optim.linear_anneal(c.lr, state.update_step, cfg.num_updates)
        tx = optim.adam(lr, c.max_grad_norm)

        def gradient_step(carry, step_key):
            params, target_params, opt_state, grad_step = carry
            mb = replay.sample(buffer, step_key, cfg.batch_size)
            mb = mb._replace(obs=norm(mb.obs), next_obs=norm(mb.next_obs))
            grads, info = grad_fn(params, target_params, mb, c)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            grad_step = grad_step + 1
            due = grad_step % cfg.target_update_every == 0
            target_params = jax.tree.map(lambda t, o: jnp.where(due, (1.0 - c.tau) * t + c.tau * o,
                                                                t), target_params, params)
            return (params, target_params, opt_state, grad_step), info

        carry = (state.params, state.target_params, state.opt_state, state.grad_step)
        (params, target_params, opt_state, grad_step), info = optim.gradient_steps(
            gradient_step, carry, learn_key, cfg.num_gradient_steps,
            cfg.learning(state.update_step))

        stats = rollout.episode_stats(step)
        metrics = dict(info)
        metrics.update(
            episode_return=stats.mean_return,
            episode_count=stats.count,
            epsilon=jnp.asarray(epsilon, jnp.float32),
            lr=jnp.asarray(lr, jnp.float32),
            env_steps=env_steps,
        )
        new_state = state.replace(params=params, target_params=target_params,
                                  opt_state=opt_state, buffer=buffer, env_state=env_state,
                                  obs_norm=obs_norm, key=key,
                                  update_step=state.update_step + 1, grad_step=grad_step)
        return new_state, metrics

    def act(params, obs: jax.Array, key: jax.Array | None = None, deterministic: bool = True,
            obs_norm: Any = None, epsilon=0.0) -> jax.Array:
        """Greedy actions argmax_a Q(obs, a); with ``deterministic=False``, epsilon-greedy."""
        if obs_norm is not None:
            obs = envs.obs_normalize(obs_norm, obs)
        q_values = network.apply(params, obs)
        if deterministic:
            return jnp.argmax(q_values, -1).astype(jnp.int32)
        return epsilon_greedy(key, q_values, epsilon)

    evaluate = loop.make_evaluate(act, env, env_params, spec, cfg)
    return loop.Agent(init, update, act, evaluate, cfg.num_updates, cfg.eval_every)


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see the trainer contract."""
    return loop.make_train_fn(make_agent(config))
