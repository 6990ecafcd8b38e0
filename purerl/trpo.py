"""Trust Region Policy Optimization (Schulman et al. 2015; seeds 001 and 002).

One update collects ``num_steps`` steps in each of ``num_envs`` environments, estimates
advantages A with GAE (bootstrapping through truncations), and solves

    maximise_theta'  L(theta') = E[pi_theta'(a|s) / pi_theta(a|s) A(s, a)]
    subject to       KL-bar(theta, theta') = E_s[KL(pi_theta(.|s) || pi_theta'(.|s))] <= delta

approximately, as seed 001 derives it: with g = grad L at theta and H the Hessian of the mean KL
at theta (the Fisher matrix),

1. x ~= H^-1 g by ``cg_iters`` steps of conjugate gradient, where every product H v is a
   forward-over-reverse derivative of the mean KL over the flattened policy parameters
   (never a dense matrix), plus ``cg_damping`` v;
2. the full step s = sqrt(2 delta / x^T H x) x;
3. a backtracking line search over theta + alpha^j s, j = 0 .. max_backtracks: the first step
   whose mean KL (exact, on the batch) is <= delta and whose surrogate improves is accepted;
   if none is, the old policy is kept and the update is counted as a line-search failure.

The value function is fitted separately, by ``vf_epochs`` epochs of Adam minibatch regression on
the GAE value targets (as in Spinning Up's TRPO). The candidates of the line search are
evaluated together (one vmapped pass over the batch), then the first acceptable one is taken.

Metrics besides the common ones: ``kl`` (mean KL of the accepted step, 0 when none),
``surrogate_improvement``, ``expected_improvement`` (g . s, the linear model's prediction),
``backtracks`` (j of the accepted step; max_backtracks + 1 on failure),
``line_search_failed`` (0 or 1), ``cg_residual`` (||g - H x|| after CG), ``step_norm``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from purerl import envs, losses, loop, optim, returns, rollout
from purerl.config import RolloutConfig, hparam, positive, redefault, static, unit_interval
from purerl.networks import ActorCriticParams as Params
from purerl.networks import Actor, ValueCritic


def _in_open_unit_interval(x) -> bool:
    return 0.0 < x < 1.0


@dataclasses.dataclass(frozen=True)
class Config(RolloutConfig):
    """TRPO hyperparameters. The defaults solve CartPole-v1."""

    algo = "trpo"

    total_timesteps: int = redefault("total_timesteps", 200_000)
    num_steps: int = redefault("num_steps", 64)
    cg_iters: int = static(10, check=positive, why="must be > 0")
    max_backtracks: int = static(10, check=lambda x: x >= 0, why="must be >= 0")
    vf_epochs: int = static(5, check=positive, why="must be > 0")
    vf_minibatches: int = static(8, check=positive, why="must be > 0")
    normalize_advantages: bool = static(True)
    log_std_init: float = static(0.0, continuous_only=True)

    max_kl: float = hparam(0.005, check=positive, why="must be > 0 (the trust region delta)")
    cg_damping: float = hparam(0.1, check=lambda x: x >= 0, why="must be >= 0")
    backtrack_coef: float = hparam(0.8, check=_in_open_unit_interval, why="must be in (0, 1)")
    vf_lr: float = hparam(1e-3, check=positive, why="must be > 0")
    gamma: float = hparam(0.99, check=unit_interval, why="must be in [0, 1]")
    gae_lambda: float = hparam(0.97, check=unit_interval, why="must be in [0, 1]")

    def validate(self) -> None:
        self.check_divides("vf_minibatches", self.steps_per_update, "num_envs * num_steps")
        super().validate()


@struct.dataclass
class TrainState:
    params: Params
    critic_opt: Any
    env_state: envs.EnvState
    obs_norm: envs.ObsNormState
    key: jax.Array
    update_step: jax.Array
    hparams: dict[str, jax.Array]


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
                             max_kl, coef, max_backtracks: int) -> LineSearch:
    """The first of theta + coef^j step, j = 0 .. max_backtracks, with mean KL <= max_kl and
    surrogate(theta') > surrogate(theta); theta itself if there is none. All candidates are
    evaluated in one vmapped pass."""
    fractions = coef ** jnp.arange(max_backtracks + 1, dtype=jnp.float32)
    candidates = flat[None] + fractions[:, None] * step[None]
    kls, surrs = jax.vmap(lambda f: (mean_kl(f), surrogate(f)))(candidates)
    improvements = surrs - surrogate(flat)
    ok = (kls <= max_kl) & (improvements > 0)
    j = jnp.argmax(ok)
    accepted = ok.any()
    return LineSearch(
        params=jnp.where(accepted, candidates[j], flat),
        accepted=accepted,
        backtracks=jnp.where(accepted, j, max_backtracks + 1),
        kl=jnp.where(accepted, kls[j], 0.0),
        improvement=jnp.where(accepted, improvements[j], 0.0),
    )


def make_agent(config: Config | Mapping[str, Any] | None = None) -> loop.Agent:
    cfg = Config.coerce(config)
    env, env_params, spec = envs.make_env(cfg.env)
    cfg.check_action_space(spec.discrete, cfg.env)
    actor = Actor(spec, cfg.hidden_sizes, cfg.activation, cfg.log_std_init)
    critic = ValueCritic(cfg.hidden_sizes, cfg.activation, len(spec.obs_shape))

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp = cfg.initial_hparams(hparams)
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        dummy = jnp.zeros((1,) + spec.obs_shape)
        params = Params(actor.init(actor_key, dummy), critic.init(critic_key, dummy))
        return TrainState(
            params=params,
            critic_opt=optim.adam(1.0).init(params.critic),
            env_state=envs.reset(env, env_params, env_key, cfg.num_envs),
            obs_norm=envs.obs_norm_init(spec.obs_shape),
            key=key,
            update_step=jnp.asarray(0, jnp.int32),
            hparams=hp,
        )

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        c = cfg.with_hparams(state.hparams)
        key, rollout_key, vf_key = jax.random.split(state.key, 3)
        norm = envs.normalizer(state.obs_norm if cfg.normalize_obs else None)

        # --- collect, then GAE with the current critic
        policy = rollout.stochastic_policy(lambda obs: actor.apply(state.params.actor, norm(obs)))
        env_state, traj = rollout.collect(env, env_params, policy, rollout_key, state.env_state,
                                          cfg.num_steps)
        obs, next_obs = norm(traj.obs), norm(traj.next_obs)
        values = critic.apply(state.params.critic, obs)
        advantages, targets = returns.gae(traj.reward, values,
                                          critic.apply(state.params.critic, next_obs),
                                          traj.terminated, traj.truncated, c.gamma, c.gae_lambda)
        obs, action, advantages, targets = jax.tree.map(
            lambda x: x.reshape((-1,) + x.shape[2:]), (obs, traj.action, advantages, targets))
        if cfg.normalize_advantages:
            advantages = losses.normalize(advantages)

        # --- the natural-gradient step on the flattened policy parameters
        flat, unravel = ravel_pytree(state.params.actor)
        old_dist = actor.apply(state.params.actor, obs)
        old_log_prob = old_dist.log_prob(action)

        def surrogate(f):
            log_prob = actor.apply(unravel(f), obs).log_prob(action)
            return jnp.mean(jnp.exp(log_prob - old_log_prob) * advantages)

        def mean_kl(f):
            return jnp.mean(old_dist.kl(actor.apply(unravel(f), obs)))

        g = jax.grad(surrogate)(flat)
        x, cg_residual = optim.conjugate_gradient(
            lambda v: fisher_vector_product(mean_kl, flat, v, c.cg_damping), g, cfg.cg_iters)
        x_hx = jnp.vdot(x, fisher_vector_product(mean_kl, flat, x, c.cg_damping))
        step = jnp.sqrt(2.0 * c.max_kl / jnp.maximum(x_hx, 1e-12)) * x
        search = backtracking_line_search(surrogate, mean_kl, flat, step, c.max_kl,
                                          c.backtrack_coef, cfg.max_backtracks)
        actor_params = unravel(search.params)

        # --- fit the value function by minibatch regression
        tx = optim.adam(c.vf_lr)

        def vf_step(carry, mb):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(
                lambda p: losses.value_loss(critic.apply(p, mb[0]), mb[1]))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (critic_params, critic_opt), vf_losses = optim.minibatch_epochs(
            vf_step, (state.params.critic, state.critic_opt), (obs, targets), vf_key,
            cfg.vf_epochs, cfg.vf_minibatches)

        obs_norm = (envs.obs_norm_update(state.obs_norm, traj.obs) if cfg.normalize_obs
                    else state.obs_norm)
        stats = rollout.episode_stats(traj)
        metrics = {
            "policy_loss": -surrogate(flat),
            "value_loss": vf_losses[-1].mean(),
            "entropy": old_dist.entropy().mean(),
            "kl": search.kl,
            "surrogate_improvement": search.improvement,
            "expected_improvement": jnp.vdot(g, step),
            "backtracks": search.backtracks,
            "line_search_failed": 1 - search.accepted.astype(jnp.int32),
            "cg_residual": cg_residual,
            "step_norm": jnp.linalg.norm(search.params - flat),
            "explained_variance": losses.explained_variance(values, targets.reshape(values.shape)),
            "episode_return": stats.mean_return,
            "episode_count": stats.count,
            "env_steps": (state.update_step + 1) * cfg.steps_per_update,
        }
        new_state = state.replace(params=Params(actor_params, critic_params),
                                  critic_opt=critic_opt, env_state=env_state, obs_norm=obs_norm,
                                  key=key, update_step=state.update_step + 1)
        return new_state, metrics

    act, evaluate = loop.policy_act_and_evaluate(lambda p, obs: actor.apply(p.actor, obs),
                                                 env, env_params, spec, cfg)
    return loop.Agent(init, update, act, evaluate, cfg.num_updates, cfg.eval_every)


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see the trainer contract."""
    return loop.make_train_fn(make_agent(config))
