"""PQN, parallelised Q-learning (Gallici et al. 2025, "Simplifying Deep Temporal Difference
Learning", ICLR 2025, arXiv:2407.04811): Q-learning without a replay buffer or a target network,
made stable by LayerNorm in the Q-network (the paper's analysis of regularised TD) and by many
synchronised environments decorrelating each batch (its PQN algorithm with lambda-returns).

One update:

1. collect ``num_steps`` epsilon-greedy steps in each of ``num_envs`` environments with the
   current network (one epsilon per rollout, the linear schedule at the env steps taken before
   it);
2. compute Peng's Q(lambda) returns backwards over the rollout with that same network
   (:func:`purerl.returns.q_lambda_returns`):

       G_t = r_t + gamma (1 - terminated_t) [(1 - lambda c_t) M_t + lambda c_t G_{t+1}],
       M_t = max_a Q(s'_t, a),

   c_t = 0 where the episode ends at t or the rollout does; bootstrapping at time-outs from
   the real next observation, not at terminations;
3. ``update_epochs`` passes of ``num_minibatches`` shuffled minibatches of Adam steps on

       L(theta) = E[l(Q_theta(s_t, a_t) - G_t)],

   l the squared error / 2 or the Huber loss; the targets stay those of step 2 (computed once
   per rollout, so they play the part of DQN's target network for the update's epochs).

The rollout is then dropped. The Q-network applies Dense -> LayerNorm -> activation at every
hidden layer (``layer_norm=False`` removes it, for the ablation); on MinAtar the conv torso
(``torso=cnn``) feeds the same layers.

Metrics besides the common ones: ``loss``, ``q_mean`` (mean Q(s, a) of the minibatches),
``td_error`` (mean |G - Q(s, a)|), ``epsilon`` (this rollout's), ``lr``. Discrete action
spaces only.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from purerl import envs, losses, loop, optim, returns, rollout
from purerl.config import (ANNEAL_LR_SCHEDULE, POSITIVE, UNIT_INTERVAL, RolloutConfig, choice,
                           hparam, redefault, static)
from purerl.networks import QNetwork, torso_for
from purerl.noise import (epsilon_greedy, epsilon_schedule, greedy_or_epsilon_greedy,
                          max_q_value)
from purerl.parallel import SINGLE, DataParallel


@dataclasses.dataclass(frozen=True)
class Config(RolloutConfig):
    """PQN hyperparameters. The defaults are rejax's CartPole-v1 PQN config (16 envs x 128
    steps, 5 epochs x 16 minibatches, lr 3e-4, lambda 0.9, epsilon 1 -> 0.05 over half the
    run)."""

    algo = "pqn"

    total_timesteps: int = redefault("total_timesteps", 524_288)
    activation: str = redefault("activation", "relu")
    num_envs: int = redefault("num_envs", 16)
    num_steps: int = redefault("num_steps", 128)
    eval_every: int = redefault("eval_every", 32)

    update_epochs: int = static(5, "passes over each rollout", POSITIVE)
    num_minibatches: int = static(16, "minibatches per pass; must divide num_envs * num_steps",
                                  POSITIVE)
    layer_norm: bool = static(True, "LayerNorm after every hidden layer of the Q-network")
    loss: str = choice("mse", ("huber", "mse"), "TD loss: Huber or squared error / 2")
    anneal_lr: bool = static(False, "anneal lr linearly to 0 over the run")

    lr: float = hparam(3e-4, "Adam learning rate", POSITIVE)
    gamma: float = hparam(0.99, "discount factor", UNIT_INTERVAL)
    q_lambda: float = hparam(0.9, "lambda of the Q(lambda) returns (0: one-step Q-learning)",
                             UNIT_INTERVAL)
    epsilon_start: float = hparam(1.0, "exploration rate at the first env step", UNIT_INTERVAL)
    epsilon_end: float = hparam(0.05, "exploration rate after the decay", UNIT_INTERVAL)
    exploration_fraction: float = hparam(
        0.5, "fraction of total_timesteps over which epsilon decays linearly", UNIT_INTERVAL)
    max_grad_norm: float = hparam(10.0, "global gradient-norm clip", POSITIVE)
    huber_delta: float = hparam(1.0, "Huber loss threshold (loss='huber')", POSITIVE)

    def validate(self) -> None:
        self.check_order("epsilon_end", "epsilon_start")
        self.check_divides("num_minibatches", self.steps_per_update, "num_envs * num_steps")
        super().validate()

    def budget_schedules(self) -> tuple[str, ...]:
        out = [ANNEAL_LR_SCHEDULE] if self.anneal_lr else []
        if self.exploration_fraction > 0 and self.epsilon_start != self.epsilon_end:
            out.append(f"epsilon decays over exploration_fraction={self.exploration_fraction} "
                       "of total_timesteps")
        return tuple(out)

    def epsilon(self, env_steps: Any) -> Any:
        """The exploration rate after ``env_steps`` env steps (the linear schedule of
        :func:`purerl.noise.epsilon_schedule`)."""
        return epsilon_schedule(env_steps, self.total_timesteps, self.epsilon_start,
                                self.epsilon_end, self.exploration_fraction)


@struct.dataclass
class TrainState:
    params: Any
    opt_state: Any
    run: loop.RunState


class Batch(NamedTuple):
    """Flattened learning batch ``[num_envs * num_steps, ...]``."""

    obs: jax.Array  # normalised
    action: jax.Array
    target: jax.Array  # Q(lambda) return G_t


def make_network(config: Config, spec: Any) -> QNetwork:
    return QNetwork(spec.num_actions, config.hidden_sizes, config.activation,
                    len(spec.obs_shape), torso=torso_for(config.torso, spec.obs_shape),
                    layer_norm=config.layer_norm)


def td_loss(network: QNetwork, cfg: Config, params: Any, mb: Batch
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """E[l(Q(s, a) - G)] on one minibatch, and its metrics."""
    q = jnp.take_along_axis(network.apply(params, mb.obs), mb.action[:, None], -1)[:, 0]
    return losses.q_regression_loss(q, mb.target, cfg.loss, cfg.huber_delta)


def make_batch(network: QNetwork, cfg: Config, params: Any, norm: Any,
               traj: rollout.Trajectory) -> Batch:
    """The rollout's normalised observations, actions and Q(lambda) returns, flattened."""
    next_max_q = network.apply(params, norm(traj.next_obs)).max(-1)
    target = returns.q_lambda_returns(traj.reward, next_max_q, traj.terminated, traj.truncated,
                                      cfg.gamma, cfg.q_lambda)
    batch = Batch(norm(traj.obs), traj.action, target)
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)


def learn(network: QNetwork, cfg: Config, state: TrainState, batch: Batch, key: jax.Array,
          dp: DataParallel = SINGLE) -> tuple[TrainState, loop.Metrics]:
    """``update_epochs`` passes of shuffled minibatch Adam steps on the TD loss. Data parallel:
    each device shuffles its own share; gradients and losses are averaged over devices."""
    lr = cfg.lr
    if cfg.anneal_lr:
        lr = optim.linear_anneal(cfg.lr, state.run.update_step, cfg.num_updates)
    tx = optim.adam(lr, cfg.max_grad_norm)
    grad_fn = jax.grad(functools.partial(td_loss, network, cfg), has_aux=True)

    def minibatch_step(carry, mb: Batch):
        params, opt_state = carry
        grads, info = dp.mean(grad_fn(params, mb))
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), info

    (params, opt_state), info = optim.minibatch_epochs(
        minibatch_step, (state.params, state.opt_state), batch, dp.fold(key), cfg.update_epochs,
        cfg.num_minibatches)
    metrics = jax.tree.map(jnp.mean, info)
    metrics["lr"] = jnp.asarray(lr, jnp.float32)
    return state.replace(params=params, opt_state=opt_state), metrics


def make_agent(config: Config | Mapping[str, Any] | None = None,
               data_parallel: DataParallel | None = None) -> loop.Agent:
    """PQN's :class:`purerl.loop.Agent`. ``data_parallel``: the update runs inside
    ``jax.shard_map`` on this device's share of the ``num_envs`` environments
    (:mod:`purerl.distributed`)."""
    config = Config.coerce(config)
    dp = data_parallel or SINGLE
    dp.check(config)
    env, step_env, spec = envs.trainer_env(config, dp, discrete=True)
    network = make_network(config, spec)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp = config.initial_hparams(hparams)
        key, net_key, env_key = jax.random.split(key, 3)
        params = network.init(net_key, jnp.zeros((1,) + spec.obs_shape, jnp.float32))
        return TrainState(params=params, opt_state=optim.adam(1.0, 1.0).init(params),
                          run=loop.RunState.start(key, hp, config, env, env_key))

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        cfg = config.with_hparams(state.run.hparams)
        key, rollout_key, shuffle_key = jax.random.split(state.run.key, 3)
        norm = state.run.obs_norm
        epsilon = cfg.epsilon(state.run.env_steps)

        # --- collect epsilon-greedily, then the Q(lambda) returns of the whole rollout
        def policy(obs: jax.Array, act_key: jax.Array) -> tuple[jax.Array, jax.Array]:
            q_values = network.apply(state.params, norm(obs))
            action = dp.rows(lambda q: epsilon_greedy(act_key, q, epsilon), q_values)
            return action, action

        env_state, traj = rollout.collect(step_env, policy, rollout_key, state.run.env_state,
                                          cfg.num_steps)
        batch = make_batch(network, cfg, state.params, norm, traj)

        # --- learn: epochs of shuffled minibatches, no target network, no buffer
        new_state, metrics = learn(network, cfg, state, batch, shuffle_key, dp)

        stats = dp.episode_stats(traj)
        metrics.update(episode_return=stats.mean_return, episode_count=stats.count,
                       epsilon=jnp.asarray(epsilon, jnp.float32))
        run = state.run.advance(key, cfg.steps_per_update, env_state=env_state,
                                obs_norm=norm.update(traj.obs, axis_name=dp.axis_name))
        return new_state.replace(run=run), metrics

    act = functools.partial(greedy_or_epsilon_greedy, network, config)
    return loop.Agent(init, update, act, loop.make_evaluate(act, env, config.eval_episodes),
                      config.num_updates, config.eval_every,
                      functools.partial(max_q_value, network))


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see "The trainer contract" in
    docs/contract.md."""
    return loop.make_train_fn(make_agent(config))
