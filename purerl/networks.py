"""flax.linen building blocks shared by the trainers.

Initialisation follows the PPO implementation literature: orthogonal weights with gain sqrt(2)
in the torso, 0.01 on the policy output (a near-uniform / near-zero-mean initial policy) and 1.0
on value outputs, zero biases.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from purerl.distributions import Categorical, TanhGaussian
from purerl.envs import EnvSpec

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "swish": nn.swish,
}


def orthogonal(gain: float = 1.0) -> Callable:
    """Orthogonal initialiser (Saxe et al. 2014) computed with Gram-Schmidt in plain JAX.

    Same distribution as ``flax.linen.initializers.orthogonal`` (Q of a Gaussian matrix with
    R's diagonal made positive -- for the same key it returns the same matrix), but without
    LAPACK's QR. When a training program is vmapped over seeds, the batched QR custom call
    splits its work over XLA's CPU thread pool from inside that pool and can deadlock it on
    small machines (observed on 2 cores: the program never returns, every thread idle).
    """

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        n_cols = shape[-1]
        n_rows = int(np.prod(shape)) // n_cols
        tall = (n_rows, n_cols) if n_rows >= n_cols else (n_cols, n_rows)
        a = jax.random.normal(key, tall, dtype)

        def next_column(q, j):
            v = a[:, j]
            for _ in range(2):  # classical Gram-Schmidt, applied twice for float32 accuracy
                v = v - q @ (q.T @ v)
            return q.at[:, j].set(v / jnp.linalg.norm(v)), None

        q, _ = jax.lax.scan(next_column, jnp.zeros(tall, dtype), jnp.arange(tall[1]))
        if n_rows < n_cols:
            q = q.T
        return gain * q.reshape(shape)

    return init


def dense(features: int, gain: float) -> nn.Dense:
    return nn.Dense(features, kernel_init=orthogonal(gain), bias_init=nn.initializers.zeros)


class ActorCriticParams(NamedTuple):
    """The parameters of a policy network and a separate critic network (each trainer imports
    it as ``Params``)."""

    actor: Any
    critic: Any  # V(s), or Q(s, a) / twin Q(s, a) for the deterministic-policy trainers


class MLP(nn.Module):
    """Flattens each observation, then Dense + activation for every hidden size."""

    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    obs_ndim: int = 1  # number of trailing axes that make one observation

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.obs_ndim != 1:
            x = x.reshape(x.shape[: x.ndim - self.obs_ndim] + (-1,))
        act = ACTIVATIONS[self.activation]
        for h in self.hidden_sizes:
            x = act(dense(h, np.sqrt(2.0))(x))
        return x


class Actor(nn.Module):
    """pi(.|s): Categorical for discrete actions, tanh-squashed diagonal Gaussian (rescaled to the
    env's bounds, state-independent log-std) for continuous ones."""

    spec: EnvSpec
    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    log_std_init: float = 0.0

    @nn.compact
    def __call__(self, obs: jax.Array):
        x = MLP(self.hidden_sizes, self.activation, len(self.spec.obs_shape))(obs)
        return _policy_head(self, x)


class ValueCritic(nn.Module):
    """V(s), a scalar per observation."""

    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    obs_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = MLP(self.hidden_sizes, self.activation, self.obs_ndim)(obs)
        return dense(1, 1.0)(x)[..., 0]


class ActorCritic(nn.Module):
    """(pi(.|s), V(s)) from one module: a shared torso with a policy head and a value head when
    ``shared_torso``, else two separate MLPs (the same parameters as :class:`Actor` plus
    :class:`ValueCritic`)."""

    spec: EnvSpec
    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    log_std_init: float = 0.0
    shared_torso: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array):
        obs_ndim = len(self.spec.obs_shape)
        if not self.shared_torso:
            return (Actor(self.spec, self.hidden_sizes, self.activation, self.log_std_init)(obs),
                    ValueCritic(self.hidden_sizes, self.activation, obs_ndim)(obs))
        x = MLP(self.hidden_sizes, self.activation, obs_ndim)(obs)
        value = dense(1, 1.0)(x)[..., 0]
        return _policy_head(self, x), value


def _policy_head(module: nn.Module, x: jax.Array):
    """The distribution head on features ``x``, created inside ``module``'s compact scope."""
    spec = module.spec
    if spec.discrete:
        return Categorical(dense(spec.num_actions, 0.01)(x))
    d = spec.action_dim
    mean = dense(d, 0.01)(x)
    log_std = module.param("log_std", nn.initializers.constant(module.log_std_init), (d,))
    return TanhGaussian(mean, jnp.broadcast_to(log_std, mean.shape),
                        tuple(float(v) for v in spec.action_low),
                        tuple(float(v) for v in spec.action_high))


class SquashedGaussianActor(nn.Module):
    """pi(.|s) for SAC: a tanh-squashed diagonal Gaussian (rescaled to the env's bounds) whose
    mean and log-std are both outputs of the network. The log-std is mapped smoothly into
    [log_std_min, log_std_max] (tanh, not a clip, so its gradient never vanishes at a bound)."""

    spec: EnvSpec
    hidden_sizes: Sequence[int]
    activation: str = "relu"
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> TanhGaussian:
        x = MLP(self.hidden_sizes, self.activation, len(self.spec.obs_shape))(obs)
        d = self.spec.action_dim
        mean = dense(d, 0.01)(x)
        raw_log_std = dense(d, 0.01)(x)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (
            jnp.tanh(raw_log_std) + 1.0)
        return TanhGaussian(mean, log_std, tuple(float(v) for v in self.spec.action_low),
                            tuple(float(v) for v in self.spec.action_high))


class QNetwork(nn.Module):
    """Q(s, .) for discrete actions, ``[..., num_actions]``. With ``dueling`` (Wang et al. 2016)
    the head is V(s) + A(s, a) - mean_a' A(s, a')."""

    num_actions: int
    hidden_sizes: Sequence[int]
    activation: str = "relu"
    obs_ndim: int = 1
    dueling: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = MLP(self.hidden_sizes, self.activation, self.obs_ndim)(obs)
        if not self.dueling:
            return dense(self.num_actions, 1.0)(x)
        value = dense(1, 1.0)(x)
        advantage = dense(self.num_actions, 1.0)(x)
        return value + advantage - advantage.mean(axis=-1, keepdims=True)


class DeterministicActor(nn.Module):
    """mu(s): a tanh output rescaled to the environment's action bounds (DDPG, TD3)."""

    spec: EnvSpec
    hidden_sizes: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = MLP(self.hidden_sizes, self.activation, len(self.spec.obs_shape))(obs)
        unit = jnp.tanh(dense(self.spec.action_dim, 0.01)(x))
        low = jnp.asarray(self.spec.action_low, jnp.float32)
        high = jnp.asarray(self.spec.action_high, jnp.float32)
        return low + (unit + 1.0) * 0.5 * (high - low)


class QCritic(nn.Module):
    """Q(s, a) for continuous actions: an MLP on the concatenated (flattened) observation and
    action, a scalar per pair."""

    hidden_sizes: Sequence[int]
    activation: str = "relu"
    obs_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        if self.obs_ndim != 1:
            obs = obs.reshape(obs.shape[: obs.ndim - self.obs_ndim] + (-1,))
        x = MLP(self.hidden_sizes, self.activation, 1)(jnp.concatenate([obs, action], -1))
        return dense(1, 1.0)(x)[..., 0]


class TwinQCritic(nn.Module):
    """Two independent Q(s, a) critics (TD3, SAC); returns ``[2, ...]``."""

    hidden_sizes: Sequence[int]
    activation: str = "relu"
    obs_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        return jnp.stack([QCritic(self.hidden_sizes, self.activation, self.obs_ndim)(obs, action)
                          for _ in range(2)])


class TwinQNetwork(nn.Module):
    """Two independent Q(s, .) networks for discrete actions (discrete SAC); returns
    ``[2, ..., num_actions]``."""

    num_actions: int
    hidden_sizes: Sequence[int]
    activation: str = "relu"
    obs_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return jnp.stack([QNetwork(self.num_actions, self.hidden_sizes, self.activation,
                                   self.obs_ndim)(obs) for _ in range(2)])
