"""REINFORCE / vanilla policy gradient (Williams 1992; Sutton & Barto 2018, sections 13.3-13.4;
Achiam 2018, Spinning Up, for VPG).

One update samples N = ``num_episodes`` whole episodes with the current policy (every
environment is reset and run to the end of its first episode; later steps are masked out, so
every return is a true Monte-Carlo return, never bootstrapped) and takes one gradient step on
the entropy-regularised loss

    L(theta) = -(1/N) sum_i sum_t [ log pi_theta(a_t^i|s_t^i) Phi_t^i + beta H[pi_theta(.|s_t^i)] ]

(a sum over each episode's steps, averaged over episodes) with the weight Phi_t chosen by
``weighting``

* ``total``:        R(tau) = sum_t gamma^t r_t on every step of the episode (Williams' original
                    estimator; gamma = 1 gives the undiscounted sum);
* ``reward_to_go``: Q_t = sum_{t' >= t} gamma^(t' - t) r_t' (causality: an action does not
                    change the rewards before it);
* ``advantage``:    GAE(gamma, lambda) with a learned V (Schulman et al. 2016 (GAE),
                    arXiv:1506.02438; Spinning Up's VPG),

minus a ``baseline`` b(s_t): ``none``, ``mean`` (the batch mean of Phi) or ``value`` (a learned
V_phi(s_t)). The value function, when used, is fitted afterwards by ``vf_iters`` full-batch Adam
steps on the L2 loss to the reward-to-go Q_t.

With ``memory="gru"`` or ``"lstm"`` (:mod:`purerl.recurrent`) the policy acts on the history:
the actor and the critic are two recurrent networks (a torso, a GRU / LSTM core and both heads;
the actor's policy head and the critic's value head are used, separate as the feed-forward
actor and critic are). Each environment's carry starts at zero with its episode and goes
through the collection loop (:func:`purerl.rollout.collect_episodes_recurrent`); the update
replays every episode from the initial carry (backpropagation through the whole episode) for
the policy gradient, the critic's values and each critic fitting step. Only the steps up to the
longest episode are run (:func:`replay_episodes`), and the padding after an episode's end,
which cannot reach its earlier steps, is masked out of every mean. Nothing is carried between
updates (every update resets its environments), so the train state is the feed-forward one.

Budget: ``total_timesteps`` is an upper bound, ``num_episodes`` x the environment's time limit
per update; the ``env_steps`` metric counts the steps actually taken (the unmasked ones).

Metrics besides the common ones: ``policy_loss``, ``entropy``, ``episode_length`` (mean over the
update's episodes) and, with the value baseline, ``value_loss`` (after the last fitting step)
and ``explained_variance`` (of the critic before the update).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax import custom_batching

from purerl import envs, losses, loop, optim, recurrent, returns, rollout
from purerl.config import (NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, BaseConfig, choice, hparam,
                           redefault, static)
from purerl.networks import ActorCriticParams as Params
from purerl.networks import Actor, ValueCritic, linear, torso_for


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
    """REINFORCE hyperparameters. The defaults (reward-to-go with a value baseline) solve
    CartPole-v1."""

    algo = "reinforce"

    # an upper bound: each update simulates num_episodes * (the env's time limit) steps at most;
    # the metric env_steps counts the steps actually taken
    total_timesteps: int = redefault("total_timesteps", 1_000_000)
    num_episodes: int = static(16, "whole episodes sampled per update (one environment each)",
                               POSITIVE)
    weighting: str = choice("reward_to_go", ("total", "reward_to_go", "advantage"),
                            "weight Phi_t of log pi: episode return R(tau), reward-to-go Q_t, "
                            "or the GAE advantage of a learned V")
    baseline: str = choice("value", ("none", "mean", "value"),
                           "baseline b(s_t) subtracted from Phi_t: none, the batch mean of "
                           "Phi, or a learned V(s_t)")
    normalize_advantages: bool = static(False, "normalise Phi_t - b(s_t) over the batch's real "
                                        "(unmasked) steps")
    vf_iters: int = static(20, "full-batch Adam steps fitting V per update (value baseline)",
                           POSITIVE)
    log_std_init: float = static(0.0, "initial log-std of the Gaussian policy",
                                 only="continuous")

    lr: float = hparam(3e-3, "policy Adam learning rate", POSITIVE)
    vf_lr: float = hparam(3e-3, "value-function Adam learning rate", POSITIVE)
    gamma: float = hparam(0.99, "discount factor", UNIT_INTERVAL)
    gae_lambda: float = hparam(0.97, "GAE lambda (weighting='advantage')", UNIT_INTERVAL)
    ent_coef: float = hparam(0.0, "entropy bonus coefficient beta", NON_NEGATIVE)

    def validate(self) -> None:
        super().validate()
        if self.weighting == "advantage" and self.baseline != "value":
            raise ValueError(
                f"reinforce config field 'baseline'={self.baseline!r}: weighting='advantage' "
                "subtracts the learned value function already; set baseline='value'")

    @property
    def uses_critic(self) -> bool:
        return self.baseline == "value"


@struct.dataclass
class TrainState:
    params: Params  # the critic is initialised but unused without a value baseline
    actor_opt: Any
    critic_opt: Any
    run: loop.RunState  # env_state is None: every update resets its environments


def policy_weights(traj: rollout.Trajectory, mask: jax.Array, values: jax.Array,
                   next_values: jax.Array, weighting: str, baseline: str, gamma: float,
                   gae_lambda: float) -> jax.Array:
    """Phi_t - b(s_t) for a batch of whole episodes ``[T, N]`` (see the module docstring);
    ``mask`` marks the steps that belong to each column's episode.

    ``values``/``next_values`` are V(s_t) and V(s'_t); they are read only by the ``value``
    baseline and the ``advantage`` weighting. The ``mean`` baseline is the mean of Phi over the
    unmasked steps of the batch."""
    done = traj.done
    if weighting == "total":
        phi = returns.episode_returns(traj.reward, done, gamma)
    elif weighting == "reward_to_go":
        phi = returns.reward_to_go(traj.reward, done, gamma)
    else:
        return returns.gae(traj.reward, values, next_values, traj.terminated, traj.truncated,
                           gamma, gae_lambda)[0]
    if baseline == "value":
        return phi - values
    if baseline == "mean":
        return phi - losses.masked_sum(phi, mask)
    return phi


def reinforce_loss(log_prob: jax.Array, entropy: jax.Array, weights: jax.Array, mask: jax.Array,
                   ent_coef: float) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L(theta) = -(1/N) sum_i sum_t [log pi(a_t^i|s_t^i) Phi_t^i + beta H_t^i] over the unmasked
    steps of N = ``weights.shape[1]`` episodes. The ``entropy`` metric is the per-step mean."""
    num_episodes = weights.shape[1]
    pg = losses.policy_gradient_loss(log_prob, weights, mask, num_episodes)
    ent = losses.masked_sum(entropy, mask, num_episodes)
    return pg - ent_coef * ent, {"policy_loss": pg, "entropy": losses.masked_sum(entropy, mask)}


def learn(actor: Actor, critic: ValueCritic, cfg: Config, state: TrainState,
          traj: rollout.Trajectory, mask: jax.Array
          ) -> tuple[Params, Any, Any, dict[str, jax.Array]]:
    """One policy-gradient step on a batch of whole episodes, then (value baseline) the fit of V
    to the reward-to-go. Returns ``(params, actor_opt, critic_opt, info)``."""
    norm = state.run.obs_norm
    # the weights use the critic as it was before this update
    obs = norm(traj.obs)
    values = critic.apply(state.params.critic, obs)
    next_values = critic.apply(state.params.critic, norm(traj.next_obs))
    weights = policy_weights(traj, mask, values, next_values, cfg.weighting, cfg.baseline,
                             cfg.gamma, cfg.gae_lambda)
    if cfg.normalize_advantages:
        weights = losses.normalize(weights, mask=mask)

    def actor_loss(actor_params):
        dist = actor.apply(actor_params, obs)
        return reinforce_loss(dist.log_prob(traj.action), dist.entropy(), weights, mask,
                              cfg.ent_coef)

    grads, info = jax.grad(actor_loss, has_aux=True)(state.params.actor)
    updates, actor_opt = optim.adam(cfg.lr).update(grads, state.actor_opt)
    actor_params = optax.apply_updates(state.params.actor, updates)

    critic_params, critic_opt = state.params.critic, state.critic_opt
    if cfg.uses_critic:
        targets = returns.reward_to_go(traj.reward, traj.done, cfg.gamma)
        critic_params, critic_opt, fit_losses = optim.fit(
            lambda p: losses.value_loss(critic.apply(p, obs), targets, mask=mask),
            critic_params, critic_opt, optim.adam(cfg.vf_lr), cfg.vf_iters)
        info.update(value_loss=fit_losses[-1],
                    explained_variance=losses.explained_variance(values, targets, mask))
    return Params(actor_params, critic_params), actor_opt, critic_opt, info


def make_agent(config: Config | Mapping[str, Any] | None = None) -> loop.Agent:
    config = Config.coerce(config)
    env, _, spec = envs.trainer_env(config)
    num_updates = config.num_updates_for(config.num_episodes * spec.max_episode_steps,
                                         "num_episodes * the env's time limit")
    if config.memory != "none":
        return make_recurrent_agent(config, env, num_updates)
    torso = torso_for(config.torso, spec.obs_shape)
    actor = Actor(spec, config.hidden_sizes, config.activation, config.log_std_init, torso)
    critic = ValueCritic(config.hidden_sizes, config.activation, len(spec.obs_shape), torso)

    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None) -> TrainState:
        hp = config.initial_hparams(hparams)
        key, actor_key, critic_key = jax.random.split(key, 3)
        dummy = jnp.zeros((1,) + spec.obs_shape, jnp.float32)
        params = Params(actor.init(actor_key, dummy), critic.init(critic_key, dummy))
        return TrainState(
            params=params,
            actor_opt=optim.adam(1.0).init(params.actor),
            critic_opt=optim.adam(1.0).init(params.critic),
            run=loop.RunState.start(key, hp, config, env),  # every update resets its envs
        )

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        cfg = config.with_hparams(state.run.hparams)
        key, rollout_key = jax.random.split(state.run.key)
        norm = state.run.obs_norm

        policy = rollout.stochastic_policy(lambda obs: actor.apply(state.params.actor, norm(obs)))
        traj, mask = rollout.collect_episodes(env, policy, rollout_key, cfg.num_episodes)
        params, actor_opt, critic_opt, info = learn(actor, critic, cfg, state, traj, mask)

        stats = rollout.episode_stats(traj, mask)
        info.update(episode_return=stats.mean_return, episode_count=stats.count,
                    episode_length=(mask.sum() / cfg.num_episodes).astype(jnp.float32))
        run = state.run.advance(key, mask.sum(), obs_norm=norm.update(traj.obs, mask))
        return state.replace(params=params, actor_opt=actor_opt, critic_opt=critic_opt,
                             run=run), info

    def value(state: TrainState, obs: jax.Array) -> jax.Array:
        return critic.apply(state.params.critic, state.run.obs_norm(obs))

    act = rollout.policy_act(lambda state, obs: actor.apply(state.params.actor, obs))
    return loop.Agent(init, update, act, loop.make_evaluate(act, env, config.eval_episodes),
                      num_updates, config.eval_every, value if config.uses_critic else None)


# ----------------------------------------------------------------------------- with memory


def longest_episode(mask: jax.Array) -> jax.Array:
    """The length of the longest kept episode of a whole-episode batch (``mask [T, N]``): the
    steps an update replays."""
    return jnp.max(jnp.sum(mask, axis=0))


def _cell_step(cell: str, carry: Any, xw_t: jax.Array, wh: jax.Array, bh: jax.Array) -> Any:
    """One step of ``cell`` as :func:`purerl.recurrent._scan_cell` takes it (no reset)."""
    update = recurrent._lstm_step if cell == "lstm" else recurrent._gru_step
    return update(carry, xw_t, recurrent.carry_output(cell, carry) @ wh + bh)


# what replay_episodes can read out at every step
REPLAY_OUTPUTS = ("log_prob", "entropy", "value", "next_value")


def _network_step(net: recurrent.RecurrentActorCritic, outputs: tuple[str, ...]) -> Any:
    """``step(params, carry, (obs, action, next_obs)) -> (carry, {output: [N]})``: one step of
    ``net`` on a batch of sequences, without a reset, reading out ``outputs``
    (:data:`REPLAY_OUTPUTS`; ``next_value`` is V after one more cell step from the new carry on
    the real next observation, as :class:`purerl.recurrent.RecurrentOutput`'s)."""
    def run(m: recurrent.RecurrentActorCritic, carry, obs, action, next_obs):
        x = m.encoder(obs)
        wi, bi, wh, bh = m.core.weights(x.shape[-1])
        carry = _cell_step(m.cell, carry, linear(x, wi) + bi, wh, bh)
        h = recurrent.carry_output(m.cell, carry)
        y = {}
        if "log_prob" in outputs or "entropy" in outputs:
            dist = m.policy_head(h)
            if "log_prob" in outputs:
                y["log_prob"] = dist.log_prob(action)
            if "entropy" in outputs:
                y["entropy"] = dist.entropy()
        if "value" in outputs:
            y["value"] = m.value_head(h)
        if "next_value" in outputs:
            y["next_value"] = m.value_head(m.core.step_from(carry, m.encoder(next_obs)))
        return carry, y

    def step(params, carry, inputs):
        return net.apply(params, carry, *inputs, method=run)

    return step


def _where(active: jax.Array, x: Any, y: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(active, a, b), x, y)


def _at(tree: Any, t: jax.Array) -> Any:
    return jax.tree.map(lambda x: x[t], tree)


def _loop(body: Any, init: Any, args: tuple, bound: jax.Array, reverse: bool,
          per_sequence: bool) -> Any:
    """``loop = body(t, loop, args)`` for ``t`` in ``0 .. bound - 1`` (``reverse``: downwards)
    in a ``lax.while_loop`` from ``init(args)``; ``per_sequence``: every leaf of ``args`` has a
    leading axis of sequences (seeds), each run by ``body`` and ``init`` with the same ``t``
    (:func:`_per_sequence`)."""
    if per_sequence:
        body, init = jax.vmap(body, in_axes=(None, 0, 0)), jax.vmap(init)

    def step(c):
        t, loop = c
        t = t - 1 if reverse else t
        loop = body(t, loop, args)
        return (t if reverse else t + 1), loop

    def cond(c):
        return c[0] > 0 if reverse else c[0] < bound

    t0 = bound if reverse else jnp.zeros_like(bound)
    return jax.lax.while_loop(cond, step, (t0, init(args)))[1]


def _replay_loops(step: Any) -> tuple[Any, Any]:
    """The forward loop ``(params, carry0, inputs, length) -> (outputs, carries)`` of ``step``
    (:func:`_network_step`) over the first ``length`` steps of ``inputs`` (leaves ``[T, N,
    ...]``; outputs and carries ``[T, N, ...]``, zeros after ``length``), and its backward loop
    ``(params, carry0, inputs, length, carries, g) -> (d_params, d_carry0)`` for the outputs'
    cotangents ``g``: backpropagation through time, each step's derivatives by ``jax.vjp`` of
    ``step``. Both are ``custom_vmap`` functions (:func:`_per_sequence`)."""

    def forward_init(args):
        params, carry0, inputs, _ = args
        example = jax.eval_shape(step, params, carry0, _at(inputs, 0))
        steps = jax.tree.leaves(inputs)[0].shape[0]
        return (carry0,) + jax.tree.map(lambda x: jnp.zeros((steps,) + x.shape, x.dtype),
                                        example)

    def forward_body(t, loop, args):
        params, _, inputs, length = args
        carry, carries, out = loop
        active = t < length
        new, y = step(params, carry, _at(inputs, t))
        def put(buf, x):
            return buf.at[t].set(jnp.where(active, x, jnp.zeros_like(x)))
        return (_where(active, new, carry), jax.tree.map(put, carries, new),
                jax.tree.map(put, out, y))

    def forward(params, carry0, inputs, length, per_sequence=False, bound=None):
        args = (params, carry0, inputs, length)
        _, carries, out = _loop(forward_body, forward_init, args,
                                _bound(length, inputs) if bound is None else bound, False,
                                per_sequence)
        return out, carries

    def backward_init(args):
        params, carry0 = args[:2]
        return jax.tree.map(jnp.zeros_like, (carry0, params))

    def backward_body(t, loop, args):
        params, carry0, inputs, length, carries, g = args
        d_carry, d_params = loop
        active = t < length
        prev = jax.tree.map(lambda c0, cs: jnp.where(t == 0, c0, cs[jnp.maximum(t - 1, 0)]),
                            carry0, carries)
        _, vjp = jax.vjp(lambda p, c: step(p, c, _at(inputs, t)), params, prev)
        d_p, d_prev = vjp((d_carry, _at(g, t)))
        return (_where(active, d_prev, d_carry),
                jax.tree.map(lambda a, d: a + jnp.where(active, d, jnp.zeros_like(d)),
                             d_params, d_p))

    def backward(params, carry0, inputs, length, carries, g, per_sequence=False, bound=None):
        args = (params, carry0, inputs, length, carries, g)
        d_carry0, d_params = _loop(backward_body, backward_init, args,
                                   _bound(length, inputs) if bound is None else bound, True,
                                   per_sequence)
        return d_params, d_carry0

    return _per_sequence(forward), _per_sequence(backward)


def _bound(length: jax.Array, inputs: Any) -> jax.Array:
    return jnp.minimum(length, jax.tree.leaves(inputs)[0].shape[0])


def _zero_cotangent(x: jax.Array) -> jax.Array:
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(np.shape(x), jax.dtypes.float0)


def _per_sequence(fn: Any) -> Any:
    """``fn`` as a ``custom_vmap`` function whose vmap rule runs one loop over the longest of
    the batch's sequences, stepping them all at once, each up to its own ``length`` (the
    fourth argument). vmap's own rule for a ``while_loop`` whose trip count differs along the
    mapped axis would ``select`` every carried buffer (``[T, ...]``, the time limit long) at
    every step."""
    batched = custom_batching.custom_vmap(lambda *args: fn(*args))

    @batched.def_vmap
    def rule(axis_size, in_batched, *args):
        args = [jax.tree.map(lambda b, x: x if b else jnp.broadcast_to(x, (axis_size,) + x.shape),
                             batched_arg, arg) for batched_arg, arg in zip(in_batched, args)]
        bound = jnp.minimum(jnp.max(args[3]), jax.tree.leaves(args[2])[0].shape[1])
        out = fn(*args, per_sequence=True, bound=bound)
        return out, jax.tree.map(lambda _: True, out)

    return batched


def replay_episodes(net: recurrent.RecurrentActorCritic, params: Any, obs: jax.Array,
                    length: jax.Array, action: jax.Array | None = None,
                    next_obs: jax.Array | None = None,
                    outputs: tuple[str, ...] = ("value",)) -> dict[str, jax.Array]:
    """``outputs`` (:data:`REPLAY_OUTPUTS`: ``log_prob`` of ``action`` and ``entropy`` of the
    policy, ``value``, ``next_value`` of ``next_obs``) of ``net`` at every step of a batch of
    whole episodes ``obs [T, N, ...]`` (normalised), each replayed from the initial carry with
    ``start = (t == 0)`` as :func:`purerl.rollout.collect_episodes_recurrent` ran it; each
    output ``[T, N]``. Differentiable in ``params`` (backpropagation through time).

    Only the first ``length`` steps are run (:func:`longest_episode`): the padding after an
    episode's end follows it in time, so it cannot reach the episode's steps, and the outputs
    from step ``length`` on are zeros (masked out by the caller). A whole-episode buffer is as
    long as the environment's time limit (1000 steps for MemoryChain, whose episodes last
    ``L + 1``); a ``lax.scan`` over all of it would cost the time limit in sequential steps,
    and a network pass over all of its rows, on every replay. Here both loops (forward and
    backward) are ``lax.while_loop`` of ``length`` steps of the whole network (under ``vmap``:
    the longest of the batch's, :func:`_per_sequence`), the same values and derivatives as
    ``net.apply(params, net.initial_carry(N), obs, start, next_obs)`` on those steps."""
    unknown = sorted(set(outputs) - set(REPLAY_OUTPUTS))
    if unknown:
        raise ValueError(f"replay_episodes outputs must be among {REPLAY_OUTPUTS}; got {unknown}")
    forward, backward = _replay_loops(_network_step(net, tuple(outputs)))

    @jax.custom_vjp
    def replay(params, carry0, inputs, length):
        return forward(params, carry0, inputs, length)[0]

    def replay_fwd(params, carry0, inputs, length):
        out, carries = forward(params, carry0, inputs, length)
        return out, (params, carry0, inputs, length, carries)

    def replay_bwd(residuals, g):
        params, carry0, inputs, length, carries = residuals
        d_params, d_carry0 = backward(params, carry0, inputs, length, carries, g)
        return d_params, d_carry0, jax.tree.map(_zero_cotangent, inputs), _zero_cotangent(length)

    replay.defvjp(replay_fwd, replay_bwd)
    inputs = (obs, action, next_obs)
    return replay(params, net.initial_carry(obs.shape[1]), inputs, length)


def recurrent_reinforce_loss(net: recurrent.RecurrentActorCritic, params: Any, obs: jax.Array,
                             action: jax.Array, weights: jax.Array, mask: jax.Array,
                             ent_coef: float) -> tuple[jax.Array, dict[str, jax.Array]]:
    """:func:`reinforce_loss` of the recurrent policy ``params`` on a batch of whole episodes
    (``obs [T, N, ...]`` normalised, ``mask``: the steps of each column's episode), each
    replayed from the initial carry (:func:`replay_episodes`)."""
    out = replay_episodes(net, params, obs, longest_episode(mask), action,
                          outputs=("log_prob", "entropy"))
    return reinforce_loss(out["log_prob"], out["entropy"], weights, mask, ent_coef)


def learn_recurrent(net: recurrent.RecurrentActorCritic, cfg: Config, state: TrainState,
                    traj: rollout.Trajectory, mask: jax.Array
                    ) -> tuple[Params, Any, Any, dict[str, jax.Array]]:
    """:func:`learn` with recurrent networks: ``state.params.actor`` and ``.critic`` are two
    :class:`~purerl.recurrent.RecurrentActorCritic` parameter sets (the policy head of one, the
    value head of the other), each episode replayed from the initial carry
    (:func:`replay_episodes`) for the critic's values, in the policy step and in every step of
    the critic's fit."""
    norm = state.run.obs_norm
    obs = norm(traj.obs)
    length = longest_episode(mask)
    values = next_values = jnp.zeros_like(traj.reward)
    if cfg.uses_critic:  # the weights use the critic as it was before this update
        if cfg.weighting == "advantage":
            out = replay_episodes(net, state.params.critic, obs, length,
                                  next_obs=norm(traj.next_obs), outputs=("value", "next_value"))
            values, next_values = out["value"], out["next_value"]
        else:
            values = next_values = replay_episodes(net, state.params.critic, obs, length)["value"]
    weights = policy_weights(traj, mask, values, next_values, cfg.weighting, cfg.baseline,
                             cfg.gamma, cfg.gae_lambda)
    if cfg.normalize_advantages:
        weights = losses.normalize(weights, mask=mask)

    grads, info = jax.grad(recurrent_reinforce_loss, argnums=1, has_aux=True)(
        net, state.params.actor, obs, traj.action, weights, mask, cfg.ent_coef)
    updates, actor_opt = optim.adam(cfg.lr).update(grads, state.actor_opt)
    actor_params = optax.apply_updates(state.params.actor, updates)

    critic_params, critic_opt = state.params.critic, state.critic_opt
    if cfg.uses_critic:
        targets = returns.reward_to_go(traj.reward, traj.done, cfg.gamma)
        critic_params, critic_opt, fit_losses = optim.fit(
            lambda p: losses.value_loss(replay_episodes(net, p, obs, length)["value"], targets,
                                        mask=mask),
            critic_params, critic_opt, optim.adam(cfg.vf_lr), cfg.vf_iters)
        info.update(value_loss=fit_losses[-1],
                    explained_variance=losses.explained_variance(values, targets, mask))
    return Params(actor_params, critic_params), actor_opt, critic_opt, info


def params_view(fn: Any, part: str) -> Any:
    """``fn(state, ...)`` of :func:`purerl.recurrent.act_and_value`, which reads the network's
    parameters from ``state.params``, on the ``part`` (``"actor"`` or ``"critic"``) of a
    state whose ``params`` are :class:`~purerl.networks.ActorCriticParams`."""
    def view(state: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(state.replace(params=getattr(state.params, part)), *args, **kwargs)

    return view


def recurrent_agent_parts(config: Any, env: envs.Env, num_episodes: int):
    """What the whole-episode trainers with memory share: ``(net, init_params, collect, act,
    value)`` with ``init_params(key) -> Params`` (two networks), ``collect(params, norm, key)
    -> (traj, mask)`` (:func:`purerl.rollout.collect_episodes_recurrent` sampling the actor's
    policy), and the agent's ``act`` (the actor's) and ``value`` (the critic's)."""
    spec = env.spec
    net = recurrent.make_network(config, spec, torso_for(config.torso, spec.obs_shape))

    def init_params(key: jax.Array) -> Params:
        actor_key, critic_key = jax.random.split(key)
        return Params(recurrent.init_params(net, actor_key, spec),
                      recurrent.init_params(net, critic_key, spec))

    def collect(params: Params, norm: Any, key: jax.Array
                ) -> tuple[rollout.Trajectory, jax.Array]:
        def step(carry, obs, start):
            return recurrent.one_step(net, params.actor, carry, norm(obs), start)[:2]

        return rollout.collect_episodes_recurrent(env, rollout.recurrent_policy(step), key,
                                                  num_episodes, net.initial_carry(num_episodes))

    act, value = recurrent.act_and_value(net)
    return net, init_params, collect, params_view(act, "actor"), params_view(value, "critic")


def recurrent_init(config: Any, env: envs.Env, init_params: Any, state_cls: Any) -> Any:
    """``init(key, hparams=None)`` of a whole-episode trainer with a recurrent actor and critic
    (``state_cls``: its TrainState of params, actor_opt, critic_opt and run); shared with the
    batch actor-critic."""
    def init(key: jax.Array, hparams: Mapping[str, Any] | None = None):
        hp = config.initial_hparams(hparams)
        key, net_key = jax.random.split(key)
        params = init_params(net_key)
        return state_cls(
            params=params,
            actor_opt=optim.adam(1.0).init(params.actor),
            critic_opt=optim.adam(1.0).init(params.critic),
            run=loop.RunState.start(key, hp, config, env),  # every update resets its envs
        )

    return init


def make_recurrent_agent(config: Config, env: envs.Env, num_updates: int) -> loop.Agent:
    """REINFORCE with a recurrent policy (``config.memory``; module docstring)."""
    net, init_params, collect, act, value = recurrent_agent_parts(config, env,
                                                                  config.num_episodes)
    init = recurrent_init(config, env, init_params, TrainState)

    def update(state: TrainState) -> tuple[TrainState, loop.Metrics]:
        cfg = config.with_hparams(state.run.hparams)
        key, rollout_key = jax.random.split(state.run.key)
        norm = state.run.obs_norm
        traj, mask = collect(state.params, norm, rollout_key)
        params, actor_opt, critic_opt, info = learn_recurrent(net, cfg, state, traj, mask)

        stats = rollout.episode_stats(traj, mask)
        info.update(episode_return=stats.mean_return, episode_count=stats.count,
                    episode_length=(mask.sum() / cfg.num_episodes).astype(jnp.float32))
        run = state.run.advance(key, mask.sum(), obs_norm=norm.update(traj.obs, mask))
        return state.replace(params=params, actor_opt=actor_opt, critic_opt=critic_opt,
                             run=run), info

    return loop.Agent(init, update, act,
                      loop.make_evaluate(act, env, config.eval_episodes, net.initial_carry),
                      num_updates, config.eval_every, value if config.uses_critic else None,
                      net.initial_carry)


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see "The trainer contract" in
    docs/contract.md."""
    return loop.make_train_fn(make_agent(config))
