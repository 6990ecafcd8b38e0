"""Action distributions as pytrees: small, allocation-free and exact.

Each distribution stores its parameters with a leading batch shape and provides
``sample(key)``, ``log_prob(x)``, ``entropy()``, ``kl(other)`` (KL(self || other)), ``mode()``
and ``env_action(x)`` (the action sent to the environment). They are written out rather than
taken from distrax so that the rollout's inner loop is a handful of fused ops; the tests check
them against distrax.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from purerl.spaces import scale_action

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


@struct.dataclass
class Categorical:
    """pi(a|s) = softmax(logits)_a over the last axis."""

    logits: jax.Array

    def log_probs(self) -> jax.Array:
        return jax.nn.log_softmax(self.logits, axis=-1)

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.categorical(key, self.logits, axis=-1)

    def log_prob(self, action: jax.Array) -> jax.Array:
        # A one-hot contraction rather than a gather: its gradient is not a scatter, which is
        # slow on CPU.
        one_hot = jax.nn.one_hot(action, self.logits.shape[-1], dtype=self.logits.dtype)
        return jnp.sum(one_hot * self.log_probs(), axis=-1)

    def entropy(self) -> jax.Array:
        """H = -sum_a pi(a) log pi(a)."""
        logp = self.log_probs()
        return -jnp.sum(jnp.exp(logp) * logp, axis=-1)

    def kl(self, other: "Categorical") -> jax.Array:
        """KL(pi || q) = sum_a pi(a) (log pi(a) - log q(a))."""
        logp, logq = self.log_probs(), other.log_probs()
        return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)

    def mode(self) -> jax.Array:
        return jnp.argmax(self.logits, axis=-1)

    def env_action(self, action: jax.Array) -> jax.Array:
        return action


@struct.dataclass
class TanhGaussian:
    """A diagonal Gaussian u ~ N(mean, exp(log_std)^2) squashed to the env's bounds.

    The sample kept for learning is the pre-squash ``u``; the environment receives
    a = low + (tanh(u) + 1)(high - low)/2. ``log_prob(u)`` is the log-density of that env action
    (``squashed_log_prob(u)`` that of the unit action tanh(u), without the last term),

        log pi(a|s) = log N(u; mean, std) - sum_i log(1 - tanh(u_i)^2) - sum_i log((high-low)/2),

    with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) for numerical stability. The Jacobian
    terms do not depend on the parameters, so probability ratios and KL divergences are those of
    the underlying Gaussian. ``entropy`` is the Gaussian's (the squashed entropy has no closed
    form).
    """

    mean: jax.Array
    log_std: jax.Array
    low: tuple[float, ...] = struct.field(pytree_node=False, default=(-1.0,))
    high: tuple[float, ...] = struct.field(pytree_node=False, default=(1.0,))

    def sample(self, key: jax.Array) -> jax.Array:
        return self.mean + jnp.exp(self.log_std) * jax.random.normal(key, self.mean.shape,
                                                                   self.mean.dtype)

    def gaussian_log_prob(self, u: jax.Array) -> jax.Array:
        z = (u - self.mean) * jnp.exp(-self.log_std)
        return jnp.sum(-0.5 * z**2 - self.log_std - 0.5 * _LOG_2PI, axis=-1)

    def squashed_log_prob(self, u: jax.Array) -> jax.Array:
        """log-density of the unit action tanh(u) in (-1, 1)^d:
        log N(u; mean, std) - sum_i log(1 - tanh(u_i)^2), finite for any u (no atanh)."""
        log_det_tanh = jnp.sum(2.0 * (_LOG_2 - u - jax.nn.softplus(-2.0 * u)), axis=-1)
        return self.gaussian_log_prob(u) - log_det_tanh

    def log_prob(self, u: jax.Array) -> jax.Array:
        half_range = 0.5 * (jnp.asarray(self.high) - jnp.asarray(self.low))
        log_det_scale = jnp.sum(jnp.log(half_range) * jnp.ones_like(u), axis=-1)
        return self.squashed_log_prob(u) - log_det_scale

    def entropy(self) -> jax.Array:
        return jnp.sum(jnp.broadcast_to(self.log_std, self.mean.shape) + 0.5 * (_LOG_2PI + 1.0),
                       axis=-1)

    def kl(self, other: "TanhGaussian") -> jax.Array:
        """KL of the Gaussians: sum log(s_q/s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2."""
        var_p, var_q = jnp.exp(2 * self.log_std), jnp.exp(2 * other.log_std)
        return jnp.sum(other.log_std - self.log_std
                       + (var_p + (self.mean - other.mean) ** 2) / (2 * var_q) - 0.5, axis=-1)

    def mode(self) -> jax.Array:
        return self.mean

    def env_action(self, u: jax.Array) -> jax.Array:
        return scale_action(jnp.tanh(u), self.low, self.high)
