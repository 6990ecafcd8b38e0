"""Pure loss functions and diagnostics. Every loss is a mean over the batch; the sign is such that
the optimiser minimises it."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def clipped_surrogate_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
                           clip_eps: float) -> tuple[jax.Array, jax.Array]:
    """PPO's clipped objective (Schulman et al. 2017, eq. 7), negated:

        L = -E[min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t)],  r_t = pi(a_t|s_t) / pi_old(a_t|s_t).

    Returns ``(loss, clip_fraction)``, the fraction of samples with |r_t - 1| > eps.
    """
    chex.assert_equal_shape([log_prob, old_log_prob, advantages])
    ratio = jnp.exp(log_prob - old_log_prob)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return (-jnp.mean(jnp.minimum(unclipped, clipped)),
            clip_fraction(log_prob, old_log_prob, clip_eps))


def clip_fraction(log_prob: jax.Array, old_log_prob: jax.Array, clip_eps: float) -> jax.Array:
    """Fraction of samples whose ratio r_t = pi / pi_old lies outside [1 - eps, 1 + eps]."""
    ratio = jnp.exp(log_prob - old_log_prob)
    return jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32))


def kl_penalty_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
                    kl: jax.Array, beta: float) -> jax.Array:
    """PPO's adaptive-KL-penalty objective (Schulman et al. 2017, section 4), negated:

        L = -E[r_t A_t] + beta E[KL(pi_old(.|s_t) || pi(.|s_t))].
    """
    chex.assert_equal_shape([log_prob, old_log_prob, advantages, kl])
    ratio = jnp.exp(log_prob - old_log_prob)
    return -jnp.mean(ratio * advantages) + beta * jnp.mean(kl)


def adapt_kl_beta(beta: jax.Array, kl: jax.Array, kl_target: float) -> jax.Array:
    """The adaptive-KL rule (Schulman et al. 2017, section 4): beta / 2 if d < d_targ / 1.5,
    beta * 2 if d > 1.5 d_targ, else beta."""
    return jnp.where(kl < kl_target / 1.5, beta / 2.0,
                     jnp.where(kl > kl_target * 1.5, beta * 2.0, beta))


def policy_gradient_loss(log_prob: jax.Array, weights: jax.Array, mask: jax.Array | None = None,
                         normalizer: jax.Array | float | None = None) -> jax.Array:
    """The score-function (REINFORCE) surrogate, negated, whose gradient is the policy gradient:

        L = -(1 / Z) sum_t mask_t log pi(a_t|s_t) Phi_t,   grad L = -(1/Z) sum_t grad log pi Phi_t,

    with the weights Phi_t (returns, reward-to-go, advantages) held constant. Z defaults to the
    number of unmasked samples (a per-sample mean); REINFORCE passes the number of episodes N
    for the per-episode estimator (1/N) sum_i sum_t (Achiam 2018, Spinning Up's VPG).
    """
    chex.assert_equal_shape([log_prob, weights])
    return -masked_sum(log_prob * jax.lax.stop_gradient(weights), mask, normalizer)


def masked_sum(x: jax.Array, mask: jax.Array | None = None,
               normalizer: jax.Array | float | None = None) -> jax.Array:
    """sum(mask * x) / Z with Z = ``normalizer`` or the number of unmasked entries (a mean)."""
    if mask is None:
        return jnp.sum(x) / (x.size if normalizer is None else normalizer)
    chex.assert_equal_shape([x, mask])
    mask = mask.astype(x.dtype)
    z = jnp.maximum(mask.sum(), 1.0) if normalizer is None else normalizer
    return jnp.sum(jnp.where(mask > 0, x, 0.0)) / z


def value_loss(values: jax.Array, targets: jax.Array, old_values: jax.Array | None = None,
               clip_eps: float | None = None, mask: jax.Array | None = None) -> jax.Array:
    """0.5 E[(V(s) - G)^2] (over unmasked samples); with ``clip_eps``, PPO's pessimistic
    clipped form

        0.5 E[max((V - G)^2, (V_old + clip(V - V_old, -eps, eps) - G)^2)].
    """
    chex.assert_equal_shape([values, targets])
    targets = jax.lax.stop_gradient(targets)
    err = jnp.square(values - targets)
    if clip_eps is not None:
        chex.assert_equal_shape([values, old_values])
        clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
        err = jnp.maximum(err, jnp.square(clipped - targets))
    return 0.5 * masked_sum(err, mask)


def actor_critic_loss(log_prob: jax.Array, entropy: jax.Array, values: jax.Array,
                      returns: jax.Array, advantages: jax.Array, vf_coef: float,
                      ent_coef: float) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The advantage actor-critic objective of A2C / A3C (Mnih et al. 2016, Algorithm S3), as a
    per-sample mean:

        L = -E[log pi(a_t|s_t) A_t] + c_v 0.5 E[(G_t - V(s_t))^2] - c_H E[H[pi(.|s_t)]],

    with A_t and G_t constant. Returns ``(L, {policy_loss, value_loss, entropy})``.
    """
    pg = policy_gradient_loss(log_prob, advantages)
    v = value_loss(values, returns)
    ent = jnp.mean(entropy)
    return pg + vf_coef * v - ent_coef * ent, {"policy_loss": pg, "value_loss": v,
                                                "entropy": ent}


def approx_kl(log_prob: jax.Array, old_log_prob: jax.Array) -> jax.Array:
    """Unbiased low-variance estimate of KL(pi_old || pi): E[(r - 1) - log r] (Schulman's k3)."""
    log_ratio = log_prob - old_log_prob
    return jnp.mean(jnp.expm1(log_ratio) - log_ratio)


def batch_mean(x: jax.Array, mask: jax.Array | None = None,
               axis_name: str | None = None) -> jax.Array:
    """The mean of ``x`` over all elements (the unmasked ones if ``mask`` is given) and, with
    ``axis_name``, over every device of that mapped axis (inside ``shard_map`` or a named
    ``vmap``), each device holding its share of the batch: ``lax.pmean`` of the devices'
    means, or with ``mask`` the ``lax.psum`` of their sums over that of their counts."""
    if axis_name is None:
        return masked_sum(x, mask)
    if mask is None:
        return jax.lax.pmean(jnp.mean(x), axis_name)
    mask = mask.astype(x.dtype)
    total = jax.lax.psum(jnp.sum(jnp.where(mask > 0, x, 0.0)), axis_name)
    return total / jnp.maximum(jax.lax.psum(mask.sum(), axis_name), 1.0)


def normalize(x: jax.Array, eps: float = 1e-8, mask: jax.Array | None = None,
              axis_name: str | None = None) -> jax.Array:
    """(x - mean) / (std + eps), over all elements (the unmasked ones if ``mask`` is given);
    with ``axis_name``, the mean and std of every device's ``x`` (:func:`batch_mean`)."""
    if mask is None and axis_name is None:
        return (x - x.mean()) / (x.std() + eps)
    mean = batch_mean(x, mask, axis_name)
    std = jnp.sqrt(batch_mean(jnp.square(x - mean), mask, axis_name))
    return (x - mean) / (std + eps)


def explained_variance(predictions: jax.Array, targets: jax.Array,
                       mask: jax.Array | None = None, axis_name: str | None = None
                       ) -> jax.Array:
    """1 - Var[G - V] / Var[G] (over unmasked samples; with ``axis_name``, over every device's
    samples, :func:`batch_mean`): 1 is a perfect value function, 0 predicts the mean.

    The ratio is undefined when the targets have no variance: a sparse-reward batch in which
    every return is 0 (MinAtar, FourRooms, FrozenLake before the first reward), or no unmasked
    sample. Then, as scikit-learn's ``explained_variance_score(force_finite=True)``, it is 1 if
    the residual G - V has no variance either (V is exact up to a constant) and 0 otherwise
    (V explains none of the targets' variance): finite unless the inputs are not."""
    def var(x):
        return batch_mean(jnp.square(x - batch_mean(x, mask, axis_name)), mask, axis_name)

    var_t, var_residual = var(targets), var(targets - predictions)
    # var_t == 0: 0 if the residual varies, 1 if not, NaN if it is NaN (a NaN critic stays NaN)
    undefined = jnp.where(var_residual > 0, 0.0, jnp.where(var_residual == 0, 1.0, var_residual))
    return jnp.where(var_t > 0, 1.0 - var_residual / var_t, undefined)


# ----------------------------------------------------------------------------- off-policy


def huber(x: jax.Array, delta: float = 1.0) -> jax.Array:
    """Elementwise Huber loss: x^2 / 2 for |x| <= delta, delta (|x| - delta / 2) beyond."""
    abs_x = jnp.abs(x)
    quadratic = jnp.minimum(abs_x, delta)
    return 0.5 * quadratic**2 + delta * (abs_x - quadratic)


def q_regression_loss(q: jax.Array, target: jax.Array, kind: str = "mse", delta: float = 1.0
                      ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """E[l(Q(s, a) - y)] over a minibatch with l the squared error x^2 / 2 (``kind="mse"``) or
    the Huber loss (``"huber"``, :func:`huber`: the error clipping of Mnih et al. 2015), and the
    metrics ``loss``, ``q_mean`` = E[Q(s, a)] and ``td_error`` = E|Q(s, a) - y|. ``target`` is
    held constant by its caller (DQN's and PQN's targets are stop-gradient already)."""
    chex.assert_equal_shape([q, target])
    err = q - target
    loss = huber(err, delta).mean() if kind == "huber" else 0.5 * jnp.square(err).mean()
    return loss, {"loss": loss, "q_mean": q.mean(), "td_error": jnp.abs(err).mean()}


def td_target(reward: jax.Array, terminated: jax.Array, next_value: jax.Array,
              gamma: float) -> jax.Array:
    """y = r + gamma (1 - terminated) v', with v' the target's value of the real next state (so
    a truncated transition still bootstraps). Held constant (stop_gradient)."""
    chex.assert_equal_shape([reward, terminated, next_value])
    y = reward + gamma * (1.0 - terminated.astype(reward.dtype)) * next_value
    return jax.lax.stop_gradient(y)


def q_learning_target(reward: jax.Array, terminated: jax.Array, next_q_target: jax.Array,
                      gamma: float, next_q_online: jax.Array | None = None) -> jax.Array:
    """DQN's target y = r + gamma (1 - terminated) max_a' Q_target(s', a'); with
    ``next_q_online``, double DQN's y = r + gamma (1 - terminated) Q_target(s', argmax_a'
    Q_online(s', a')). Q arrays are ``[..., num_actions]``."""
    if next_q_online is None:
        next_value = next_q_target.max(-1)
    else:
        chex.assert_equal_shape([next_q_target, next_q_online])
        best = jnp.argmax(next_q_online, -1)
        next_value = jnp.take_along_axis(next_q_target, best[..., None], -1)[..., 0]
    return td_target(reward, terminated, next_value, gamma)


# ----------------------------------------------------------------------------- maximum entropy


def soft_value(q: jax.Array, log_prob: jax.Array, alpha) -> jax.Array:
    """The one-sample soft state value V(s) ~ Q(s, a) - alpha log pi(a|s), a ~ pi(.|s) (the soft
    value function of Haarnoja et al. 2018a, section 4.2). SAC's actor loss is -E[V], the soft
    Q target bootstraps from r + gamma (1 - terminated) V(s') with target critics, and the 2018
    value network regresses to it."""
    chex.assert_equal_shape([q, log_prob])
    return q - alpha * log_prob


def expected_soft_value(q: jax.Array, log_probs: jax.Array, alpha) -> jax.Array:
    """V(s) = sum_a pi(a|s) [Q(s, a) - alpha log pi(a|s)], exact for a categorical policy
    (discrete SAC); ``q`` and ``log_probs`` are ``[..., num_actions]``."""
    chex.assert_equal_shape([q, log_probs])
    return jnp.sum(jnp.exp(log_probs) * (q - alpha * log_probs), axis=-1)


def temperature_loss(log_alpha: jax.Array, entropy: jax.Array, target_entropy) -> jax.Array:
    """J(alpha) = E[alpha (H - H_target)] with alpha = exp(log_alpha) and H held constant: the
    automatic temperature adjustment of SAC (Haarnoja et al. 2018b), E[-alpha log pi(a|s) -
    alpha H_target] with the one-sample entropy H = -log pi(a|s) or the exact entropy of a
    categorical policy. d J / d log_alpha = alpha E[H - H_target], so gradient descent raises
    alpha while the policy's entropy is below the target and lowers it while above."""
    return jnp.exp(log_alpha) * jnp.mean(jax.lax.stop_gradient(entropy) - target_entropy)
