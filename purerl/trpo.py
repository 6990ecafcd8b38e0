"""Trust Region Policy Optimization (Schulman et al. 2015, arXiv:1502.05477).

One update collects ``num_steps`` steps in each of ``num_envs`` environments, estimates
advantages A with GAE (Schulman et al. 2016, arXiv:1506.02438; bootstrapping through
truncations), and solves

    maximise_theta'  L(theta') = E[pi_theta'(a|s) / pi_theta(a|s) A(s, a)]
    subject to       KL-bar(theta, theta') = E_s[KL(pi_theta(.|s) || pi_theta'(.|s))] <= delta

approximately, as in the paper's practical algorithm (section 6 and Appendix C): with
g = grad L at theta and H the Hessian of the mean KL at theta (the Fisher matrix),

1. x ~= H^-1 g by ``cg_iters`` steps of conjugate gradient, where every product H v is a
   forward-over-reverse derivative of the mean KL over the flattened policy parameters
   (never a dense matrix), plus ``cg_damping`` v;
2. the full step s = sqrt(2 delta / x^T H x) x, the step along x that reaches the boundary of
   the quadratic model of the KL constraint;
3. a backtracking line search over theta + alpha^j s, j = 0 .. max_backtracks: the first step
   whose mean KL (exact, on the batch) is <= delta and whose surrogate improves is accepted;
   if none is, the old policy is kept and the update is counted as a line-search failure.

The value function is fitted separately, by ``vf_epochs`` epochs of Adam minibatch regression on
the GAE value targets (as in Achiam 2018, Spinning Up's TRPO). The candidates of the line search
are evaluated together (one vmapped pass over the batch), then the first acceptable one is taken.

With ``memory="gru"`` or ``"lstm"`` (:mod:`purerl.recurrent`) the policy is a recurrent network
that keeps every environment's carry between updates (reset where an episode begins); the rollout
stores the carry it began with, and the surrogate, the mean KL (over every step of every
sequence), its Fisher-vector products and the line search's candidates all replay the rollout's
``num_envs`` sequences of ``num_steps`` steps from those carries through the candidate policy
(the KL's Hessian is that of the whole recurrent computation). The Fisher-vector products are
forward-over-reverse derivatives, so the policy's core is differentiated by autodiff of its scan
(``fused_backward=False``). The value function is a **second** recurrent network of the same
shape (its own torso, cell and carry; only its value head is used, and the policy network's value
head and the value network's policy head keep their initial parameters), fitted by Adam as above
with minibatches of whole sequences replayed from its own stored carries (``vf_minibatches``
must divide ``num_envs``); GAE bootstraps from its value one cell step on each real next
observation. Keeping the critic apart keeps TRPO's policy step a pure trust-region step: a core
shared with the critic would move outside the KL constraint whenever the value is fitted. Both
networks' carries are part of the train state (:class:`RecurrentTrainState`). One device (no
data parallelism).

Metrics besides the common ones: ``policy_loss`` (-L at theta), ``value_loss`` (of the last
value-fitting epoch), ``entropy``, ``kl`` (mean KL of the accepted step, 0 when none),
``surrogate_improvement``, ``expected_improvement`` (g . s, the linear model's prediction),
``backtracks`` (j of the accepted step; max_backtracks + 1 on failure),
``line_search_failed`` (0 or 1), ``cg_residual`` (||g - H x|| after CG), ``step_norm``,
``explained_variance``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from purerl import envs, losses, loop, optim, recurrent, returns, rollout
from purerl.parallel import SINGLE, DataParallel
from purerl.config import (NON_NEGATIVE, OPEN_UNIT_INTERVAL, POSITIVE, UNIT_INTERVAL,
                           RolloutConfig, hparam, redefault, static)
from purerl.networks import ActorCriticParams as Params
from purerl.networks import Actor, ValueCritic, torso_for
from purerl.normalize import ObsNormalizer
from purerl.spaces import EnvSpec


@dataclasses.dataclass(frozen=True)
class Config(RolloutConfig):
    """TRPO hyperparameters. The defaults solve CartPole-v1."""

    algo = "trpo"

    total_timesteps: int = redefault("total_timesteps", 200_000)
    num_steps: int = redefault("num_steps", 64)
    cg_iters: int = static(10, "conjugate-gradient iterations per update", POSITIVE)
    max_backtracks: int = static(10, "line-search candidates tried after the full step, each "
                                 "backtrack_coef times the previous", NON_NEGATIVE)
    vf_epochs: int = static(5, "value-fitting passes over each rollout", POSITIVE)
    vf_minibatches: int = static(8, "value-fitting minibatches per pass; must divide "
                                 "num_envs * num_steps", POSITIVE)
    normalize_advantages: bool = static(True, "normalise advantages over the rollout")
    log_std_init: float = static(0.0, "initial log-std of the Gaussian policy",
                                 only="continuous")

    max_kl: float = hparam(0.005, "trust region delta: bound on the mean KL of a step",
                           POSITIVE)
    cg_damping: float = hparam(0.1, "damping added to the Fisher matrix in CG",
                               NON_NEGATIVE)
    backtrack_coef: float = hparam(0.8, "line-search shrink factor alpha", OPEN_UNIT_INTERVAL)
    vf_lr: float = hparam(1e-3, "value-function Adam learning rate", POSITIVE)
    gamma: float = hparam(0.99, "discount factor", UNIT_INTERVAL)
    gae_lambda: float = hparam(0.97, "GAE lambda", UNIT_INTERVAL)

    def validate(self) -> None:
        if self.memory != "none":  # value minibatches are whole sequences: sets of environments
            self.check_divides("vf_minibatches", self.num_envs,
                               "num_envs (with memory, value minibatches split environments)")
        self.check_divides("vf_minibatches", self.steps_per_update, "num_envs * num_steps")
        super().validate()


@struct.dataclass
class TrainState:
    params: Params
    critic_opt: Any
    run: loop.RunState


class Batch(NamedTuple):
    """Flattened learning batch ``[num_envs * num_steps, ...]``; observations normalised."""

    obs: jax.Array
    action: jax.Array
    advantage: jax.Array
    target: jax.Array  # GAE value target A + V(s)


def fisher_vector_product(mean_kl, params: Any, v: Any, damping: float = 0.0) -> Any:
    """(H + damping I) v with H the Hessian of ``mean_kl`` at ``params`` (where the KL and its
    gradient vanish, H is the Fisher information matrix), by forward-over-reverse autodiff."""
    hv = optim.hessian_vector_product(mean_kl, params, v)
    return jax.tree.map(lambda h, x: h + damping * x, hv, v)


class LineSearch(NamedTuple):
    params: jax.Array  # the accepted flat parameters (the old ones on failure)
    accepted: jax.Array
    backtracks: jax.Array
    kl: jax.Array
    improvement: jax.Array


def backtracking_line_search(surrogate, mean_kl, flat: jax.Array, step: jax.Array,
                             max_kl, coef, max_backtracks: int, dp: DataParallel = SINGLE
                             ) -> LineSearch:
    """The first of theta + coef^j step, j = 0 .. max_backtracks, with mean KL <= max_kl and
    surrogate(theta') > surrogate(theta); theta itself if there is none. All candidates are
    evaluated in one vmapped pass. Data parallel: ``surrogate`` and ``mean_kl`` are means over
    this device's samples; the decision uses their means over devices (the whole batch's)."""
    fractions = coef ** jnp.arange(max_backtracks + 1, dtype=jnp.float32)
    candidates = flat[None] + fractions[:, None] * step[None]
    kls, surrs = dp.mean(jax.vmap(lambda f: (mean_kl(f), surrogate(f)))(candidates))
    improvements = surrs - dp.mean(surrogate(flat))
    ok = (kls <= max_kl) & (improvements > 0)
    j = jnp.argmax(ok)
    accepted = ok.any()
    return LineSearch(
        params=jnp.where(accepted, candidates[j], flat),
        accepted=accepted,
        backtracks=jnp.where(accepted, j, max_backtracks + 1).astype(jnp.int32),
        kl=jnp.where(accepted, kls[j], 0.0),
        improvement=jnp.where(accepted, improvements[j], 0.0),
    )


def natural_gradient_step(surrogate: Callable[[jax.Array], jax.Array],
                          mean_kl: Callable[[jax.Array], jax.Array], flat: jax.Array,
                          cfg: Config, dp: DataParallel = SINGLE
                          ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(s, g, cg_residual)``: the full step s = sqrt(2 max_kl / x^T H x) x, x ~= H^-1 g by
    conjugate gradient (H damped by ``cg_damping``), and the surrogate's gradient g at
    ``flat``. Data parallel: g and every Fisher-vector product are averaged over devices (each
    device's are those of its samples' means), so CG runs on the whole batch's g and H, the
    same on every device."""
    g = dp.mean(jax.grad(surrogate)(flat))

    def fvp(v):
        return dp.mean(fisher_vector_product(mean_kl, flat, v, cfg.cg_damping))

    x, cg_residual = optim.conjugate_gradient(fvp, g, cfg.cg_iters)
    x_hx = jnp.vdot(x, fvp(x))
    step = jnp.sqrt(2.0 * cfg.max_kl / jnp.maximum(x_hx, 1e-12)) * x
    return step, g, cg_residual


def policy_step(actor: Actor, cfg: Config, actor_params: Any, batch: Batch,
                dp: DataParallel = SINGLE) -> tuple[Any, loop.Metrics]:
    """The trust-region step of the policy on ``batch`` (data parallel: this device's share of
    it): the accepted actor parameters (the old ones if the line search fails) and the step's
    metrics."""
    return trust_region_step(lambda p: actor.apply(p, batch.obs), cfg, actor_params,
                             batch.action, batch.advantage, dp)


class Objectives(NamedTuple):
    """The trust-region problem at ``params`` over the flattened parameters ``flat``."""

    flat: jax.Array
    unravel: Callable[[jax.Array], Any]
    old_dist: Any  # pi_theta on the batch
    surrogate: Callable[[jax.Array], jax.Array]  # L(theta')
    mean_kl: Callable[[jax.Array], jax.Array]  # KL-bar(theta, theta')


def objectives(dist_of: Callable[[Any], Any], params: Any, action: jax.Array,
               advantage: jax.Array) -> Objectives:
    """The surrogate and the mean KL of the policy ``dist_of(params) -> dist`` (the batch's
    distributions, any batch shape) as functions of the flattened parameters."""
    flat, unravel = ravel_pytree(params)
    old_dist = dist_of(params)
    old_log_prob = old_dist.log_prob(action)

    def surrogate(f):
        log_prob = dist_of(unravel(f)).log_prob(action)
        return jnp.mean(jnp.exp(log_prob - old_log_prob) * advantage)

    def mean_kl(f):
        return jnp.mean(old_dist.kl(dist_of(unravel(f))))

    return Objectives(flat, unravel, old_dist, surrogate, mean_kl)


def trust_region_step(dist_of: Callable[[Any], Any], cfg: Config, params: Any,
                      action: jax.Array, advantage: jax.Array, dp: DataParallel = SINGLE
                      ) -> tuple[Any, loop.Metrics]:
    """:func:`policy_step` of any policy ``dist_of(params) -> dist`` on the batch (a
    feed-forward actor on observations, or a recurrent one replaying sequences)."""
    flat, unravel, old_dist, surrogate, mean_kl = objectives(dist_of, params, action, advantage)
    step, g, cg_residual = natural_gradient_step(surrogate, mean_kl, flat, cfg, dp)
    search = backtracking_line_search(surrogate, mean_kl, flat, step, cfg.max_kl,
                                      cfg.backtrack_coef, cfg.max_backtracks, dp)
    metrics = {
        "policy_loss": -dp.mean(surrogate(flat)),
        "entropy": dp.mean(old_dist.entropy().mean()),
        "kl": search.kl,
        "surrogate_improvement": search.improvement,
        "expected_improvement": jnp.vdot(g, step),
        "backtracks": search.backtracks,
        "line_search_failed": 1 - search.accepted.astype(jnp.int32),
        "cg_residual": cg_residual,
        "step_norm": jnp.linalg.norm(search.params - flat),
    }
    return unravel(search.params), metrics


def fit_value(critic: ValueCritic, cfg: Config, critic_params: Any, opt_state: Any,
              batch: Batch, key: jax.Array, dp: DataParallel = SINGLE
              ) -> tuple[Any, Any, jax.Array]:
    """``vf_epochs`` epochs of shuffled Adam minibatch steps on 0.5 E[(V(s) - target)^2];
    returns the critic parameters, the optimiser state and the last epoch's mean loss. Data
    parallel: as PPO's minibatches (each device shuffles its own share, so equal to one device
    with ``vf_minibatches=1``), losses and gradients averaged over devices."""
    return regress_value(critic.apply, cfg, critic_params, opt_state, (batch.obs, batch.target),
                         key, dp)


def regress_value(value_of: Callable[[Any, Any], jax.Array], cfg: Config, critic_params: Any,
                  opt_state: Any, data: tuple[Any, jax.Array], key: jax.Array,
                  dp: DataParallel = SINGLE) -> tuple[Any, Any, jax.Array]:
    """:func:`fit_value` of any critic: ``data = (inputs, targets)`` with a common leading axis
    that the minibatches split, and ``value_of(params, inputs)`` the values, shaped as the
    targets."""
    tx = optim.adam(cfg.vf_lr)

    def vf_step(carry, mb):
        params, opt_state = carry
        loss, grads = dp.mean(jax.value_and_grad(
            lambda p: losses.value_loss(value_of(p, mb[0]), mb[1]))(params))
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (critic_params, opt_state), vf_losses = optim.minibatch_epochs(
        vf_step, (critic_params, opt_state), data, dp.fold(key), cfg.vf_epochs,
        cfg.vf_minibatches)
    return critic_params, opt_state, vf_losses[-1].mean()


def make_batch(critic: ValueCritic, cfg: Config, critic_params: Any, norm: ObsNormalizer,
               traj: rollout.Trajectory, dp: DataParallel = SINGLE) -> tuple[Batch, jax.Array]:
    """The flattened learning batch of a rollout, with GAE advantages (normalised with
    ``normalize_advantages``; data parallel: over every device's) and value targets, and the
    values V(s) ``[num_steps, num_envs]`` they were computed from."""
    obs, values, advantages, targets = rollout.gae_targets(
        traj, lambda obs: critic.apply(critic_params, obs), norm, cfg.gamma, cfg.gae_lambda)
    batch = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]),
                         Batch(obs, traj.action, advantages, targets))
    if cfg.normalize_advantages:
        batch = batch._replace(advantage=dp.normalize(batch.advantage))
    return batch, values


def make_agent(config: Config | Mapping[str, Any] | None = None,
               data_parallel: DataParallel | None = None) -> loop.Agent:
    """TRPO's :class:`purerl.loop.Agent`. ``data_parallel``: the update runs inside
    ``jax.shard_map`` on this device's share of the ``num_envs`` environments; the policy
    gradient, Fisher-vector products, line-search statistics and value gradients are averaged
    over devices (:mod:`purerl.distributed`)."""
    config = Config.coerce(config)
    dp = data_parallel or SINGLE
    dp.check(config)
    recurrent.check_data_parallel(config, dp)
    env, step_env, spec = envs.trainer_env(config, dp)
    if config.memory != "none":
        return make_recurrent_agent(config, env, step_env, spec)
    torso = torso_for(config.torso, spec.obs_shape)
    actor = Actor(spec, config.hidden_sizes, config.activation, config.log_std_init, torso)
    critic = ValueCritic(config.hidden_sizes, config.activation, len(spec.obs_shape), torso)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp = config.initial_hparams(hparams)
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        dummy = jnp.zeros((1,) + spec.obs_shape, jnp.float32)
        params = Params(actor.init(actor_key, dummy), critic.init(critic_key, dummy))
        return TrainState(
            params=params,
            critic_opt=optim.adam(1.0).init(params.critic),
            run=loop.RunState.start(key, hp, config, env, env_key),
        )

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        cfg = config.with_hparams(state.run.hparams)
        key, rollout_key, vf_key = jax.random.split(state.run.key, 3)
        norm = state.run.obs_norm

        # --- collect, then GAE with the current critic
        policy = dp.policy(lambda obs: actor.apply(state.params.actor, norm(obs)))
        env_state, traj = rollout.collect(step_env, policy, rollout_key, state.run.env_state,
                                          cfg.num_steps)
        batch, values = make_batch(critic, cfg, state.params.critic, norm, traj, dp)

        # --- learn: the natural-gradient policy step, then the value regression
        actor_params, metrics = policy_step(actor, cfg, state.params.actor, batch, dp)
        critic_params, critic_opt, value_loss = fit_value(
            critic, cfg, state.params.critic, state.critic_opt, batch, vf_key, dp)

        stats = dp.episode_stats(traj)
        metrics.update(
            value_loss=value_loss,
            explained_variance=dp.explained_variance(values, batch.target.reshape(values.shape)),
            episode_return=stats.mean_return,
            episode_count=stats.count,
        )
        run = state.run.advance(key, cfg.steps_per_update, env_state=env_state,
                                obs_norm=norm.update(traj.obs, axis_name=dp.axis_name))
        return state.replace(params=Params(actor_params, critic_params), critic_opt=critic_opt,
                             run=run), metrics

    def value(state: TrainState, obs: jax.Array) -> jax.Array:
        return critic.apply(state.params.critic, state.run.obs_norm(obs))

    act = rollout.policy_act(lambda state, obs: actor.apply(state.params.actor, obs))
    return loop.Agent(init, update, act, loop.make_evaluate(act, env, config.eval_episodes),
                      config.num_updates, config.eval_every, value)


# ----------------------------------------------------------------------------- with memory


@struct.dataclass
class RecurrentTrainState(TrainState):
    """With ``memory``: ``params.actor`` and ``params.critic`` are the parameters of two
    recurrent networks (:func:`make_recurrent_nets`), ``memory`` every environment's policy carry
    (and whether its current observation begins an episode) and ``critic_carry`` its value
    network's carry, between updates."""

    memory: rollout.Memory
    critic_carry: Any


class RecurrentNets(NamedTuple):
    policy: recurrent.RecurrentActorCritic  # used for its policy head; autodiff scan (jvp)
    critic: recurrent.RecurrentActorCritic  # used for its value head


def make_recurrent_nets(config: Config, spec: EnvSpec) -> RecurrentNets:
    """The recurrent policy (core differentiated by autodiff of its scan, so that the
    Fisher-vector products' forward mode works) and the recurrent value network, same shape."""
    torso = torso_for(config.torso, spec.obs_shape)
    return RecurrentNets(recurrent.make_network(config, spec, torso, fused_backward=False),
                         recurrent.make_network(config, spec, torso))


class Sequences(NamedTuple):
    """A recurrent rollout's learning batch, time-major ``[num_steps, num_envs, ...]``;
    observations normalised."""

    obs: jax.Array
    action: jax.Array
    advantage: jax.Array
    target: jax.Array  # GAE value target A + V(history)
    start: jax.Array  # [T, B]: the step begins an episode (carry reset)
    carry: Any  # the policy's carry each sequence began with, [num_envs, ...]
    critic_carry: Any  # the value network's, [num_envs, ...]


def sequence_policy(net: recurrent.RecurrentActorCritic, batch: Sequences
                    ) -> Callable[[Any], Any]:
    """``dist_of(params)``: the policy of every step of every sequence ``[T, B]``, replayed from
    the sequences' stored first carries."""
    return lambda params: net.apply(params, batch.carry, batch.obs, batch.start).dist


def make_sequences(critic: recurrent.RecurrentActorCritic, cfg: Config, critic_params: Any,
                   critic_carry: Any, norm: ObsNormalizer, seq: rollout.Sequences
                   ) -> tuple[Sequences, jax.Array, Any]:
    """:func:`make_batch` of a recurrent rollout: the value network replayed over the sequences
    from its carry ``critic_carry``, with V of each real next observation one cell step on, and
    GAE (advantages normalised over the rollout with ``normalize_advantages``). Returns the
    batch, the values ``[num_steps, num_envs]`` and the value network's carry after the rollout
    (where the next rollout's sequences begin)."""
    traj = seq.traj
    obs = norm(traj.obs)
    out = critic.apply(critic_params, critic_carry, obs, seq.start, norm(traj.next_obs))
    advantages, targets = returns.gae(traj.reward, out.value, out.next_value, traj.terminated,
                                      traj.truncated, cfg.gamma, cfg.gae_lambda)
    if cfg.normalize_advantages:
        advantages = losses.normalize(advantages)
    batch = Sequences(obs, traj.action, advantages, targets, seq.start, seq.carry, critic_carry)
    return batch, out.value, out.carry


def recurrent_policy_step(net: recurrent.RecurrentActorCritic, cfg: Config, params: Any,
                          batch: Sequences) -> tuple[Any, loop.Metrics]:
    """:func:`policy_step` of the recurrent policy: surrogate, mean KL, Fisher-vector products
    and line search over every step of the rollout's sequences (:func:`sequence_policy`)."""
    return trust_region_step(sequence_policy(net, batch), cfg, params, batch.action,
                             batch.advantage)


def fit_recurrent_value(critic: recurrent.RecurrentActorCritic, cfg: Config, critic_params: Any,
                        opt_state: Any, batch: Sequences, key: jax.Array
                        ) -> tuple[Any, Any, jax.Array]:
    """:func:`fit_value` of the recurrent value network: each minibatch is a set of whole
    sequences (``num_envs / vf_minibatches`` environments) replayed from their stored carries."""
    def env_major(x):
        return jnp.swapaxes(x, 0, 1)

    def value_of(params, inputs):
        obs, start, carry = inputs
        out = critic.apply(params, carry, env_major(obs), env_major(start))
        return env_major(out.value)

    data = ((env_major(batch.obs), env_major(batch.start), batch.critic_carry),
            env_major(batch.target))
    return regress_value(value_of, cfg, critic_params, opt_state, data, key)


def make_recurrent_agent(config: Config, env: envs.Env, step_env: envs.Env, spec: EnvSpec
                         ) -> loop.Agent:
    """TRPO with a recurrent policy and value network (``config.memory``); one device."""
    nets = make_recurrent_nets(config, spec)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> RecurrentTrainState:
        hp = config.initial_hparams(hparams)
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        params = Params(recurrent.init_params(nets.policy, actor_key, spec),
                        recurrent.init_params(nets.critic, critic_key, spec))
        return RecurrentTrainState(
            params=params,
            critic_opt=optim.adam(1.0).init(params.critic),
            run=loop.RunState.start(key, hp, config, env, env_key),
            memory=rollout.Memory.create(nets.policy.initial_carry(config.num_envs)),
            critic_carry=nets.critic.initial_carry(config.num_envs),
        )

    def update(state: RecurrentTrainState) -> tuple[RecurrentTrainState, loop.Metrics]:
        cfg = config.with_hparams(state.run.hparams)
        key, rollout_key, vf_key = jax.random.split(state.run.key, 3)
        norm = state.run.obs_norm

        # --- collect with the policy's carry, then GAE with the value network's
        def step(carry, obs, start):
            carry, dist, _ = recurrent.one_step(nets.policy, state.params.actor, carry,
                                                norm(obs), start)
            return carry, dist

        env_state, memory, seq = rollout.collect_recurrent(
            step_env, rollout.recurrent_policy(step), rollout_key, state.run.env_state,
            state.memory, cfg.num_steps)
        batch, values, critic_carry = make_sequences(nets.critic, cfg, state.params.critic,
                                                     state.critic_carry, norm, seq)

        # --- learn: the natural-gradient step over the sequences, then the value regression
        actor_params, metrics = recurrent_policy_step(nets.policy, cfg, state.params.actor,
                                                      batch)
        critic_params, critic_opt, value_loss = fit_recurrent_value(
            nets.critic, cfg, state.params.critic, state.critic_opt, batch, vf_key)

        stats = rollout.episode_stats(seq.traj)
        metrics.update(
            value_loss=value_loss,
            explained_variance=losses.explained_variance(values, batch.target),
            episode_return=stats.mean_return,
            episode_count=stats.count,
        )
        run = state.run.advance(key, cfg.steps_per_update, env_state=env_state,
                                obs_norm=norm.update(seq.traj.obs))
        return state.replace(params=Params(actor_params, critic_params), critic_opt=critic_opt,
                             run=run, memory=memory, critic_carry=critic_carry), metrics

    def policy_step_fn(state, carry, obs):
        return recurrent.one_step(nets.policy, state.params.actor, carry, obs,
                                  jnp.zeros(obs.shape[:1], bool))[:2]

    def value(state: RecurrentTrainState, obs: jax.Array) -> jax.Array:
        """V of ``obs [B, ...]`` as the first observation of an episode."""
        return recurrent.one_step(nets.critic, state.params.critic,
                                  nets.critic.initial_carry(obs.shape[0]),
                                  state.run.obs_norm(obs), jnp.ones(obs.shape[:1], bool))[2]

    act = rollout.recurrent_act(policy_step_fn)
    return loop.Agent(init, update, act,
                      loop.make_evaluate(act, env, config.eval_episodes,
                                         nets.policy.initial_carry),
                      config.num_updates, config.eval_every, value, nets.policy.initial_carry)


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see "The trainer contract" in
    docs/contract.md."""
    return loop.make_train_fn(make_agent(config))
