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

from purerl import envs, losses, loop, optim, rollout
from purerl.parallel import SINGLE, DataParallel
from purerl.config import (NON_NEGATIVE, OPEN_UNIT_INTERVAL, POSITIVE, UNIT_INTERVAL,
                           RolloutConfig, hparam, redefault, static)
from purerl.networks import ActorCriticParams as Params
from purerl.networks import Actor, ValueCritic, torso_for
from purerl.normalize import ObsNormalizer


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
    flat, unravel = ravel_pytree(actor_params)
    old_dist = actor.apply(actor_params, batch.obs)
    old_log_prob = old_dist.log_prob(batch.action)

    def surrogate(f):
        log_prob = actor.apply(unravel(f), batch.obs).log_prob(batch.action)
        return jnp.mean(jnp.exp(log_prob - old_log_prob) * batch.advantage)

    def mean_kl(f):
        return jnp.mean(old_dist.kl(actor.apply(unravel(f), batch.obs)))

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
    tx = optim.adam(cfg.vf_lr)

    def vf_step(carry, mb):
        params, opt_state = carry
        loss, grads = dp.mean(jax.value_and_grad(
            lambda p: losses.value_loss(critic.apply(p, mb[0]), mb[1]))(params))
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (critic_params, opt_state), vf_losses = optim.minibatch_epochs(
        vf_step, (critic_params, opt_state), (batch.obs, batch.target), dp.fold(key),
        cfg.vf_epochs, cfg.vf_minibatches)
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
    env, step_env, spec = envs.trainer_env(config, dp)
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


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see "The trainer contract" in
    docs/contract.md."""
    return loop.make_train_fn(make_agent(config))
