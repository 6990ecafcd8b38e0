"""Off-policy actor-critic: a score-function actor and a Q critic learned from a replay buffer,
as taught in Sergey Levine's deep RL course (CS 285, "actor-critic algorithms"); the family is
Degris, White & Sutton's (2012, "Off-Policy Actor-Critic", ICML). Discrete and continuous
actions. One update:

1. act with a ~ pi_theta(.|s) in each of ``num_envs`` environments (uniformly random before
   ``learning_starts`` with ``random_warmup``), store (s, a, r, s', terminated) in the buffer R;
2. then ``num_gradient_steps`` times, sample a minibatch {s_i, a_i, r_i, s'_i} of B =
   ``batch_size`` transitions from R and take steps 3-5 (all gradients at the same parameters);
3. fit Q^pi by TD -- Q, not V: r_i + gamma V(s'_i) estimates V^pi(s_i) only if a_i ~ pi, and
   the buffer's a_i came from older policies, while Q^pi(s_i, a_i) is defined for any a_i:

       L_Q(phi) = 1/B sum_i 1/2 (Q_phi(s_i, a_i) - y_i)^2,
       y_i = r_i + gamma (1 - terminated_i) Q_phi'(s'_i, a'_i),  a'_i ~ pi_theta(.|s'_i),

   a'_i drawn fresh from the current policy (never the buffer's action, never a max), or with
   ``critic_target="expected"`` (discrete) the exact sum_a' pi(a'|s'_i) Q_phi'(s'_i, a');
   Q_phi' is the Polyak average phi' <- (1 - tau) phi' + tau phi;
4. estimate the policy gradient at the replayed states from N = ``num_action_samples``
   actions a^pi_ij ~ pi_theta(.|s_i) sampled FRESH from the current policy (not the buffer's),
   the critic held fixed (:func:`score_function_loss`):

       grad J ~ 1/(B N) sum_i sum_j grad log pi_theta(a^pi_ij|s_i) (Q_phi(s_i, a^pi_ij) - b_ij)
                + ent_coef 1/B sum_i grad H(pi_theta(.|s_i));

   ``actor_gradient="expected"`` (discrete) sums over the actions instead,
   1/B sum_i sum_a pi_theta(a|s_i) grad log pi_theta(a|s_i) (Q_phi(s_i, a) - b(s_i))
   (:func:`expected_score_loss`; the all-action gradient of Ciosek & Whiteson 2018);
5. theta <- theta + actor_lr grad J, phi <- phi - critic_lr grad L_Q (Adam each, global-norm
   clipping at ``max_grad_norm``), then the Polyak step of phi'.

The baseline (``baseline``): ``"none"`` (b = 0, as in the lecture) or ``"expected"``,
b(s) = E_{a~pi} Q_phi(s, a): exactly sum_a pi(a|s) Q_phi(s, a) for discrete actions; for
continuous ones a Monte Carlo estimate independent of a_ij, so that the estimator stays
unbiased: the leave-one-out mean of the other samples, b_ij = 1/(N-1) sum_{k != j}
Q_phi(s_i, a^pi_ik), when N > 1 (:func:`leave_one_out_baseline`), else Q_phi at one more
independent sample.

Unlike Off-PAC (Degris et al. 2012), whose gradient uses the behaviour policy's action a_i
reweighted by the importance ratio pi(a_i|s_i) / mu(a_i|s_i), the actions here come from pi_theta
itself: no importance weights, a gradient on-policy in the action given the state and off-policy
only in the state distribution, which is the buffer's (older policies' visitation), not pi's.

Continuous actions: the tanh-squashed Gaussian :class:`purerl.networks.Actor` (state-independent
log-std, as PPO's), a = scale(tanh(u)), u ~ N(mean(s), std), sampled without reparameterisation
(u held constant): the score is grad log pi(u|s) (the tanh Jacobian does not depend on theta)
and Q_phi(s, a) sees the environment's action. The entropy bonus uses the categorical entropy
or the Gaussian's (pre-squash) one, as the other trainers; the critic's target has no entropy
term. Evaluation takes the most probable action or scale(tanh(mean)); ``value`` is
E_{a~pi} Q_phi(s, a) (exact for discrete actions, one sample for continuous ones).

Metrics besides the common ones: ``critic_loss``, ``actor_loss`` (the surrogate, entropy bonus
included), ``q_mean`` (mean Q_phi(s_i, a_i) on the minibatches), ``td_error`` (mean
|y_i - Q_phi(s_i, a_i)|), ``entropy``; NaN on the warm-up updates before ``learning_starts``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from purerl import envs, loop, optim, replay, rollout
from purerl.config import (NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, OffPolicyConfig, Rule, choice,
                           hparam, redefault, static)
from purerl.distributions import Categorical, TanhGaussian
from purerl.losses import td_target
from purerl.networks import Actor, QCritic, QNetwork, torso_for
from purerl.normalize import ObsNormalizer
from purerl.parallel import SINGLE, DataParallel
from purerl.spaces import EnvSpec, random_action


@dataclasses.dataclass(frozen=True)
class Config(OffPolicyConfig):
    """Off-policy actor-critic hyperparameters. The defaults learn CartPole-v1 in 50k env
    steps: final deterministic evaluation 500 on 4 of 4 seeds from ``jax.random.key(0)``; 8
    seeds from ``key(1)``: 500 on 7, one 131 (mean 454); from ``key(2)``: 500 on 7, one 442.
    Pendulum-v1 wants no entropy bonus and slower targets (tests/test_off_policy_ac.py's
    ``PENDULUM``)."""

    algo = "off_policy_ac"

    total_timesteps: int = redefault("total_timesteps", 50_000)
    eval_every: int = redefault("eval_every", 1_000)

    # a recent-experience buffer and fast targets, as SAC's discrete preset (presets.py)
    num_envs: int = redefault("num_envs", 5)
    num_gradient_steps: int = redefault("num_gradient_steps", 2)
    buffer_size: int = redefault("buffer_size", 10_000)
    random_warmup: bool = static(True, "uniformly random actions before learning_starts")
    num_action_samples: int = static(
        1, "fresh actions a ~ pi(.|s) per replayed state in the actor's estimator", POSITIVE)
    baseline: str = choice("expected", ("none", "expected"),
                           "b(s) subtracted from Q in the actor's estimator: none, or expected "
                           "E_pi Q(s, a) (exact for discrete actions; leave-one-out over the "
                           "samples, or one extra sample, for continuous ones)")
    critic_target: str = choice("sample", ("sample", "expected"),
                                "a' in the TD target: one sample a' ~ pi(.|s'), or the exact "
                                "expectation sum_a' pi(a'|s') Q'(s', a')", only="discrete")
    actor_gradient: str = choice("sample", ("sample", "expected"),
                                 "the actor's estimator: sampled actions, or the exact sum over "
                                 "every action", only="discrete")

    actor_lr: float = hparam(3e-3, "actor Adam learning rate", POSITIVE)
    critic_lr: float = hparam(1e-3, "critic Adam learning rate", POSITIVE)
    gamma: float = hparam(0.99, "discount factor", UNIT_INTERVAL)
    tau: float = hparam(0.05, "Polyak coefficient of the target critic", UNIT_INTERVAL)
    ent_coef: float = hparam(0.05, "entropy bonus coefficient of the actor (continuous "
                             "actions: the pre-squash Gaussian's entropy, unbounded, which "
                             "widens the policy into bang-bang actions; use 0 or little)",
                             NON_NEGATIVE)
    max_grad_norm: float = hparam(10.0, "global gradient-norm clip of each network", POSITIVE)

    rules = OffPolicyConfig.rules + (
        Rule("num_action_samples",
             lambda c: c.actor_gradient == "sample" or c.num_action_samples == 1,
             "has no effect with actor_gradient='expected' (every action is summed over); "
             "leave it at 1"),
    )


class Params(NamedTuple):
    actor: Any
    critic: Any  # Q(s, .) (discrete) or Q(s, a) (continuous)


@struct.dataclass
class TrainState:
    params: Params
    target: Any  # the target critic's parameters
    opt_state: Params  # one Adam state per network
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
    actor: Actor
    critic: QNetwork | QCritic


def score_function_loss(log_prob: jax.Array, q: jax.Array,
                        baseline: jax.Array | None = None) -> jax.Array:
    """The actor's surrogate for N sampled actions per state, negated:

        L = -1/(B N) sum_i sum_j log pi(a_ij|s_i) [Q(s_i, a_ij) - b_ij],

    the bracket held constant, so that -grad L is the estimator
    1/(B N) sum_ij grad log pi(a_ij|s_i) (Q(s_i, a_ij) - b_ij). ``log_prob``, ``q`` and
    ``baseline`` (None: b = 0) are ``[B, N]``."""
    chex.assert_rank(log_prob, 2)
    chex.assert_equal_shape([log_prob, q] + ([] if baseline is None else [baseline]))
    weight = q if baseline is None else q - baseline
    return -jnp.mean(log_prob * jax.lax.stop_gradient(weight))


def expected_score_loss(log_probs: jax.Array, q_all: jax.Array,
                        baseline: jax.Array | None = None) -> jax.Array:
    """The all-action surrogate of a categorical policy, negated:

        L = -1/B sum_i sum_a pi(a|s_i) [Q(s_i, a) - b(s_i)],

    the bracket held constant, so that -grad L = 1/B sum_i sum_a pi(a|s_i) grad log pi(a|s_i)
    (Q(s_i, a) - b(s_i)), the exact expectation of :func:`score_function_loss`'s estimator.
    ``log_probs`` and ``q_all`` are ``[B, A]``, ``baseline`` ``[B]`` (None: b = 0)."""
    chex.assert_rank(log_probs, 2)
    chex.assert_equal_shape([log_probs, q_all])
    weight = q_all if baseline is None else q_all - baseline[:, None]
    return -jnp.mean(jnp.sum(jnp.exp(log_probs) * jax.lax.stop_gradient(weight), -1))


def leave_one_out_baseline(q: jax.Array) -> jax.Array:
    """b_ij = 1/(N-1) sum_{k != j} q_ik for ``q`` ``[B, N]``, N >= 2: a baseline for sample j
    that does not depend on a_ij."""
    chex.assert_rank(q, 2)
    n = q.shape[1]
    if n < 2:
        raise ValueError(f"a leave-one-out baseline needs >= 2 samples per state, got {n}")
    return (q.sum(1, keepdims=True) - q) / (n - 1)


def sample_actions(dist: Categorical | TanhGaussian, key: jax.Array, n: int,
                   dp: DataParallel = SINGLE) -> jax.Array:
    """``n`` draws per state from ``dist`` (batch ``[B]``), ``[B, n, ...]``, held constant (no
    reparameterisation gradient). Data parallel: this device's rows of the whole minibatch's
    draw."""
    keys = jax.random.split(key, n)  # closed over: dp.rows widens arguments, not closures
    draws = dp.rows(lambda d: jax.vmap(d.sample, out_axes=1)(keys), dist)
    return jax.lax.stop_gradient(draws)


def _per_sample(dist: Categorical | TanhGaussian) -> Categorical | TanhGaussian:
    """``dist`` with a sample axis after the batch axis, for ``[B, N, ...]`` actions."""
    return jax.tree.map(lambda x: x[:, None], dist)


def _take(q_all: jax.Array, actions: jax.Array) -> jax.Array:
    """Q(s, a) from ``q_all [B, A]`` for integer ``actions [B, ...]`` (a one-hot contraction:
    its gradient is not a scatter)."""
    q_all = q_all.reshape(q_all.shape[:1] + (1,) * (actions.ndim - 1) + q_all.shape[1:])
    return jnp.sum(q_all * jax.nn.one_hot(actions, q_all.shape[-1]), -1)


def discrete_actor_loss(dist: Categorical, q_all: jax.Array, key: jax.Array, num_samples: int,
                        baseline: str, exact: bool = False, dp: DataParallel = SINGLE
                        ) -> jax.Array:
    """The actor's surrogate for a categorical policy and critic values ``q_all [B, A]`` (held
    constant): ``num_samples`` fresh actions per state, or every action with ``exact``;
    ``baseline="expected"`` subtracts b(s) = sum_a pi(a|s) Q(s, a)."""
    q_all = jax.lax.stop_gradient(q_all)
    b = None
    if baseline == "expected":
        b = jnp.sum(jax.lax.stop_gradient(jnp.exp(dist.log_probs())) * q_all, -1)
    if exact:
        return expected_score_loss(dist.log_probs(), q_all, b)
    actions = sample_actions(dist, key, num_samples, dp)
    return score_function_loss(_per_sample(dist).log_prob(actions), _take(q_all, actions),
                               None if b is None else jnp.broadcast_to(b[:, None],
                                                                      actions.shape))


def continuous_actor_loss(dist: TanhGaussian, q_fn: Callable[[jax.Array], jax.Array],
                          key: jax.Array, num_samples: int, baseline: str,
                          dp: DataParallel = SINGLE) -> jax.Array:
    """The actor's surrogate for a squashed Gaussian: ``num_samples`` pre-squash draws u per
    state, scored by ``q_fn(env actions [B, N, d]) -> [B, N]`` (held constant);
    ``baseline="expected"``: the leave-one-out mean of the other samples' Q, or Q at one extra
    draw when ``num_samples`` is 1."""
    extra = baseline == "expected" and num_samples == 1
    u = sample_actions(dist, key, num_samples + extra, dp)
    q = jax.lax.stop_gradient(q_fn(dist.env_action(u)))
    b = None
    if extra:
        u, q, b = u[:, :1], q[:, :1], q[:, 1:]
    elif baseline == "expected":
        b = leave_one_out_baseline(q)
    return score_function_loss(_per_sample(dist).log_prob(u), q, b)


def critic_targets(nets: Nets, cfg: Config, params: Params, target: Any,
                   batch: replay.Transition, key: jax.Array, dp: DataParallel = SINGLE
                   ) -> jax.Array:
    """y = r + gamma (1 - terminated) Q'(s', a') with a' ~ pi(.|s') drawn from the current
    policy, or (``critic_target="expected"``) sum_a' pi(a'|s') Q'(s', a'); held constant,
    ``[B]``."""
    dist = nets.actor.apply(params.actor, batch.next_obs)
    if not nets.spec.discrete:
        v = nets.critic.apply(target, batch.next_obs, dist.env_action(dp.sample(dist, key)))
    elif cfg.critic_target == "expected":
        v = jnp.sum(jnp.exp(dist.log_probs()) * nets.critic.apply(target, batch.next_obs), -1)
    else:
        v = _take(nets.critic.apply(target, batch.next_obs), dp.sample(dist, key))
    return jax.lax.stop_gradient(td_target(batch.reward, batch.terminated, v, cfg.gamma))


def loss_fn(params: Params, target: Any, batch: replay.Transition, key: jax.Array,
            nets: Nets, cfg: Config, dp: DataParallel = SINGLE
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L_Q + the actor's surrogate - ent_coef H, with stop-gradients so that each network's
    gradient is that of its own loss; means over the minibatch (data parallel: over this
    device's rows of it)."""
    target_key, actor_key = jax.random.split(key)
    y = critic_targets(nets, cfg, params, target, batch, target_key, dp)
    dist = nets.actor.apply(params.actor, batch.obs)
    if nets.spec.discrete:  # one forward pass: Q(s, .) also scores the actor's actions
        q_all = nets.critic.apply(params.critic, batch.obs)
        q = _take(q_all, batch.action)
        pg = discrete_actor_loss(dist, q_all, actor_key, cfg.num_action_samples, cfg.baseline,
                                 cfg.actor_gradient == "expected", dp)
    else:
        q = nets.critic.apply(params.critic, batch.obs, batch.action)
        critic = jax.lax.stop_gradient(params.critic)

        def q_fn(actions):  # every sample of state i is scored at s_i
            obs = jnp.broadcast_to(batch.obs[:, None], actions.shape[:2] + batch.obs.shape[1:])
            return nets.critic.apply(critic, obs, actions)

        pg = continuous_actor_loss(dist, q_fn, actor_key, cfg.num_action_samples, cfg.baseline,
                                   dp)
    critic_loss = 0.5 * jnp.mean(jnp.square(q - y))
    entropy = dist.entropy().mean()
    actor_loss = pg - cfg.ent_coef * entropy
    info = {"critic_loss": critic_loss, "actor_loss": actor_loss, "q_mean": q.mean(),
            "td_error": jnp.abs(q - y).mean(), "entropy": entropy}
    return critic_loss + actor_loss, info


def gradient_step(nets: Nets, cfg: Config, buffer: replay.ReplayBuffer, norm: ObsNormalizer,
                  learner: Learner, key: jax.Array, dp: DataParallel = SINGLE
                  ) -> tuple[Learner, dict[str, jax.Array]]:
    """Both gradients at the same parameters, one Adam step per network, then the Polyak step
    of the target critic. Data parallel: each device computes the gradients of its ``1/D`` of
    the single-device minibatch (:meth:`purerl.parallel.DataParallel.sample_replay`), averaged
    over devices."""
    sample_key, loss_key = jax.random.split(key)
    batch = dp.sample_replay(buffer, sample_key, cfg.batch_size, cfg.num_envs)
    batch = batch._replace(obs=norm(batch.obs), next_obs=norm(batch.next_obs))
    grads, info = dp.mean(jax.grad(loss_fn, has_aux=True)(learner.params, learner.target, batch,
                                                          loss_key, nets, cfg, dp))
    new_params, new_opt = {}, {}
    for name, lr in zip(Params._fields, (cfg.actor_lr, cfg.critic_lr)):
        p = getattr(learner.params, name)
        updates, new_opt[name] = optim.adam(lr, cfg.max_grad_norm).update(
            getattr(grads, name), getattr(learner.opt_state, name), p)
        new_params[name] = optax.apply_updates(p, updates)
    params = Params(**new_params)
    return Learner(params, optim.polyak(learner.target, params.critic, cfg.tau),
                   Params(**new_opt)), info


def make_nets(config: Config, spec: EnvSpec) -> Nets:
    """The :class:`purerl.networks.Actor` (categorical or squashed Gaussian) and one critic:
    Q(s, .) for discrete actions, Q(s, a) for continuous ones."""
    sizes, activation, obs_ndim = config.hidden_sizes, config.activation, len(spec.obs_shape)
    torso = torso_for(config.torso, spec.obs_shape)
    actor = Actor(spec, sizes, activation, torso=torso)
    if spec.discrete:
        return Nets(spec, actor, QNetwork(spec.num_actions, sizes, activation, obs_ndim,
                                          torso=torso))
    return Nets(spec, actor, QCritic(sizes, activation, obs_ndim, torso))


def state_value(nets: Nets, state: TrainState, obs: jax.Array) -> jax.Array:
    """V(s) = E_{a~pi} Q(s, a): exact for discrete actions, one sample for continuous ones."""
    obs = state.run.obs_norm(obs)
    dist = nets.actor.apply(state.params.actor, obs)
    if nets.spec.discrete:
        return jnp.sum(jnp.exp(dist.log_probs()) * nets.critic.apply(state.params.critic, obs),
                       -1)
    u = dist.sample(jax.random.fold_in(state.run.key, 0x0AC))
    return nets.critic.apply(state.params.critic, obs, dist.env_action(u))


def make_agent(config: Config | Mapping[str, Any] | None = None,
               data_parallel: DataParallel | None = None) -> loop.Agent:
    """The off-policy actor-critic's :class:`purerl.loop.Agent`. ``data_parallel``: the update
    runs inside ``jax.shard_map`` on this device's share of the ``num_envs`` environments and
    of the replay buffer (:mod:`purerl.distributed`)."""
    config = Config.coerce(config)
    dp = data_parallel or SINGLE
    dp.check_replay(config)
    env, step_env, spec = envs.trainer_env(config, dp)
    nets = make_nets(config, spec)
    example = replay.example_transition(spec)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp = config.initial_hparams(hparams)
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        dummy_obs = jnp.zeros((1,) + spec.obs_shape, jnp.float32)
        critic = (nets.critic.init(critic_key, dummy_obs) if spec.discrete else
                  nets.critic.init(critic_key, dummy_obs, example.action[None]))
        params = Params(nets.actor.init(actor_key, dummy_obs), critic)
        # the clip's (empty) state is part of the structure; the values are rebuilt per step
        opt = optim.adam(1.0, 1.0)
        return TrainState(params=params, target=critic,
                          opt_state=Params(*(opt.init(p) for p in params)),
                          buffer=replay.init(config.buffer_capacity, example),
                          run=loop.RunState.start(key, hp, config, env, env_key))

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        cfg = config.with_hparams(state.run.hparams)
        key, act_key, warmup_key, env_key, learn_key = jax.random.split(state.run.key, 5)

        # --- 1. act with a ~ pi(.|s), step, store
        dist = nets.actor.apply(state.params.actor, state.run.obs_norm(state.run.env_state.obs))
        action = dist.env_action(dp.sample(dist, act_key))
        if cfg.random_warmup and cfg.learning_starts > 0:
            action = jnp.where(cfg.warming_up(state.run.update_step),
                               dp.local(random_action(spec, warmup_key, cfg.num_envs)), action)
        env_state, transitions, step = rollout.step_transitions(step_env, env_key,
                                                                state.run.env_state, action)
        buffer = replay.add(state.buffer, transitions)
        norm = state.run.obs_norm.update(transitions.obs, axis_name=dp.axis_name)

        # --- 2.-5. sample minibatches, fit Q, step the actor
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
                      lambda state, obs: state_value(nets, state, obs))


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see "The trainer contract" in
    docs/contract.md."""
    return loop.make_train_fn(make_agent(config))
