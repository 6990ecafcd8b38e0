"""flax.linen building blocks shared by the trainers.

Initialisation follows the PPO implementation literature: orthogonal weights with gain sqrt(2)
in the torso, 0.01 on the policy output (a near-uniform / near-zero-mean initial policy) and 1.0
on value outputs, zero biases.

Every network takes a ``torso``: ``"mlp"`` flattens each observation into dense layers;
``"cnn"`` first applies the MinAtar network's convolution (Young & Tian 2019, Sec. 4: one 3x3
convolution with 16 filters on the [H, W, C] observation) and feeds its flattened features to the
same dense layers -- with ``hidden_sizes=(128,)`` exactly that paper's network.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from purerl.distributions import Categorical, TanhGaussian
from purerl.spaces import EnvSpec, scale_action

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
        return jnp.asarray(gain, dtype) * q.reshape(shape)

    return init


def _transposed_operand(x: jax.Array) -> jax.Array:
    """``x`` with its two axes swapped, materialised on CPU.

    The weight gradient of ``y = x W`` is ``x^T g``, a dot whose left operand contracts its
    leading axis. XLA:CPU runs that form through Eigen at about half the speed of the YNNPACK
    kernel it uses for a plain ``[M, K] x [K, N]`` dot (a 128-sample, 64x64 weight gradient
    under an 8-seed ``vmap``: 89 vs 39 us). Materialising ``x^T`` first (a transpose is a few
    us) makes the gradient a plain dot; the ``optimization_barrier`` keeps XLA's algebraic
    simplifier from folding the transpose back into the dot's dimension numbers. Elsewhere
    (GPU, TPU) the libraries take transposed operands natively and the swap is folded as usual.
    """
    swap = jnp.transpose
    return jax.lax.platform_dependent(x, cpu=lambda x: jax.lax.optimization_barrier(swap(x)),
                                      default=swap)


@jax.custom_jvp
def _matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return x @ kernel


@functools.partial(_matmul.defjvp, symbolic_zeros=True)
def _matmul_jvp(primals, tangents):
    # d(x W) = dx W + x dW, with the x of the second term read from a materialised x^T, so that
    # the transpose of this JVP (reverse mode: dW = x^T g) is a plain dot. A JVP rule rather
    # than a VJP keeps forward mode (TRPO's Fisher-vector products: jvp of grad) working.
    x, kernel = primals
    dx, dkernel = tangents
    y = x @ kernel
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(dx @ kernel)
    if not isinstance(dkernel, SymbolicZero):
        terms.append(_transposed_operand(x).T @ dkernel)
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


def linear(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x @ kernel`` for ``x [..., d_in]`` and ``kernel [d_in, d_out]``, with every leading axis
    of ``x`` flattened into one row axis so that the weight gradient is one 2-D dot (see
    :func:`_transposed_operand` for why its operand is transposed explicitly). Same values
    and derivatives of every order as ``x @ kernel``. A single output (a critic's value head)
    keeps the plain product: its weight gradient ``x^T g`` is a matrix-vector product, which
    XLA:CPU runs fast as it is (the transposed copy would cost more than it saves: PPO's
    learning step 3% slower, measured)."""
    chex.assert_rank(kernel, 2)
    chex.assert_axis_dimension(x, -1, kernel.shape[0])
    rows = x.reshape(-1, x.shape[-1])
    y = rows @ kernel if kernel.shape[1] == 1 else _matmul(rows, kernel)
    return y.reshape(x.shape[:-1] + kernel.shape[1:])


def _dense_dot_general(lhs, rhs, dimension_numbers, precision=None,
                       preferred_element_type=None):
    """``flax.linen.Dense``'s ``dot_general`` (last axis of the inputs with the kernel's first)
    computed by :func:`linear`; any other contraction goes to ``lax.dot_general``."""
    if (dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ())) and rhs.ndim == 2
            and precision is None and preferred_element_type is None):
        return linear(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)


def dense(features: int, gain: float) -> nn.Dense:
    return nn.Dense(features, kernel_init=orthogonal(gain), bias_init=nn.initializers.zeros,
                    dot_general=_dense_dot_general)


class ActorCriticParams(NamedTuple):
    """The parameters of a policy network and a separate critic network (each trainer imports
    it as ``Params``)."""

    actor: Any
    critic: Any  # V(s), or Q(s, a) / twin Q(s, a) for the deterministic-policy trainers


TORSOS = ("mlp", "cnn")


def torso_for(kind: str, obs_shape: Sequence[int]) -> str:
    """The torso a config's ``torso`` field names: ``auto`` is ``cnn`` for image observations
    ([H, W, C]) and ``mlp`` otherwise; ``cnn`` on a non-image observation is a ValueError."""
    if kind == "auto":
        return "cnn" if len(obs_shape) == 3 else "mlp"
    if kind not in TORSOS:
        raise ValueError(f"torso must be one of auto, {', '.join(TORSOS)}; got {kind!r}")
    if kind == "cnn" and len(obs_shape) != 3:
        raise ValueError(f"torso='cnn' needs image observations [height, width, channels]; "
                         f"this environment's observations have shape {tuple(obs_shape)}: "
                         f"use torso='mlp'")
    return kind


class Conv3x3(nn.Module):
    """A 3x3 convolution, stride 1, valid padding, as one matmul over the nine shifted views
    of the input (im2col). Same result and parameters (``kernel [3, 3, C, F]``, ``bias [F]``)
    as ``nn.Conv``; under ``vmap`` over seeds it stays a batched matmul, where a vmapped
    ``lax.conv`` becomes a grouped convolution that XLA:CPU runs about 3x slower."""

    features: int
    kernel_init: Callable = orthogonal(np.sqrt(2.0))

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        chex.assert_rank(x, 4)  # [B, H, W, C]
        kernel = self.param("kernel", self.kernel_init, (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        h, w = x.shape[1] - 2, x.shape[2] - 2
        patches = jnp.concatenate([x[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)],
                                  axis=-1)  # [B, h, w, 9C] in the kernel's (row, col, C) order
        return linear(patches, kernel.reshape(-1, self.features)) + bias


class ConvEncoder(nn.Module):
    """One 3x3 convolution with 16 filters, stride 1, valid padding, and the activation on
    ``[..., H, W, C]`` observations; returns the flattened features ``[..., (H-2)(W-2)16]``
    (Young & Tian 2019). Same initialisation as the dense torso layers."""

    activation: str = "relu"
    features: int = 16

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch = x.shape[:-3]
        x = x.reshape((-1,) + x.shape[-3:])
        x = ACTIVATIONS[self.activation](Conv3x3(self.features, name="Conv_0")(x))
        return x.reshape(batch + (-1,))


def features(module: nn.Module, obs: jax.Array, obs_ndim: int) -> jax.Array:
    """The torso of ``module`` (its ``hidden_sizes``, ``activation`` and ``torso`` fields) on
    ``obs``, created inside ``module``'s compact scope."""
    if module.torso == "cnn":
        obs, obs_ndim = ConvEncoder(module.activation)(obs), 1
    return MLP(module.hidden_sizes, module.activation, obs_ndim,
               getattr(module, "layer_norm", False))(obs)


class MLP(nn.Module):
    """Flattens each observation, then Dense (+ LayerNorm, Ba et al. 2016) + activation for
    every hidden size."""

    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    obs_ndim: int = 1  # number of trailing axes that make one observation
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.obs_ndim != 1:
            x = x.reshape(x.shape[: x.ndim - self.obs_ndim] + (-1,))
        act = ACTIVATIONS[self.activation]
        for h in self.hidden_sizes:
            x = dense(h, np.sqrt(2.0))(x)
            x = act(nn.LayerNorm()(x) if self.layer_norm else x)
        return x


class Actor(nn.Module):
    """pi(.|s): Categorical for discrete actions, tanh-squashed diagonal Gaussian (rescaled to the
    env's bounds, state-independent log-std) for continuous ones."""

    spec: EnvSpec
    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    log_std_init: float = 0.0
    torso: str = "mlp"

    @nn.compact
    def __call__(self, obs: jax.Array):
        return _policy_head(self, features(self, obs, len(self.spec.obs_shape)))


class ValueCritic(nn.Module):
    """V(s), a scalar per observation."""

    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    obs_ndim: int = 1
    torso: str = "mlp"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return dense(1, 1.0)(features(self, obs, self.obs_ndim))[..., 0]


class ActorCritic(nn.Module):
    """(pi(.|s), V(s)) from one module: a shared torso with a policy head and a value head when
    ``shared_torso``, else two separate MLPs (the same parameters as :class:`Actor` plus
    :class:`ValueCritic`)."""

    spec: EnvSpec
    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    log_std_init: float = 0.0
    shared_torso: bool = False
    torso: str = "mlp"

    @nn.compact
    def __call__(self, obs: jax.Array):
        obs_ndim = len(self.spec.obs_shape)
        if not self.shared_torso:
            return (Actor(self.spec, self.hidden_sizes, self.activation, self.log_std_init,
                          self.torso)(obs),
                    ValueCritic(self.hidden_sizes, self.activation, obs_ndim, self.torso)(obs))
        x = features(self, obs, obs_ndim)
        value = dense(1, 1.0)(x)[..., 0]
        return _policy_head(self, x), value


def _policy_head(module: nn.Module, x: jax.Array):
    """The distribution head on features ``x``, created inside ``module``'s compact scope."""
    spec = module.spec
    if spec.discrete:
        return Categorical(dense(spec.num_actions, 0.01)(x))
    d = spec.action_dim
    mean = dense(d, 0.01)(x)
    log_std = module.param("log_std", nn.initializers.constant(module.log_std_init,
                                                                  jnp.float32), (d,))
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
    torso: str = "mlp"

    @nn.compact
    def __call__(self, obs: jax.Array) -> TanhGaussian:
        x = features(self, obs, len(self.spec.obs_shape))
        d = self.spec.action_dim
        mean = dense(d, 0.01)(x)
        raw_log_std = dense(d, 0.01)(x)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (
            jnp.tanh(raw_log_std) + 1.0)
        return TanhGaussian(mean, log_std, tuple(float(v) for v in self.spec.action_low),
                            tuple(float(v) for v in self.spec.action_high))


class QNetwork(nn.Module):
    """Q(s, .) for discrete actions, ``[..., num_actions]``. With ``dueling`` (Wang et al. 2016)
    the head is V(s) + A(s, a) - mean_a' A(s, a'); with ``layer_norm`` every hidden layer is
    Dense -> LayerNorm -> activation (PQN, Gallici et al. 2025)."""

    num_actions: int
    hidden_sizes: Sequence[int]
    activation: str = "relu"
    obs_ndim: int = 1
    dueling: bool = False
    torso: str = "mlp"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = features(self, obs, self.obs_ndim)
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
    torso: str = "mlp"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = features(self, obs, len(self.spec.obs_shape))
        unit = jnp.tanh(dense(self.spec.action_dim, 0.01)(x))
        return scale_action(unit, self.spec.action_low, self.spec.action_high)


class QCritic(nn.Module):
    """Q(s, a) for continuous actions: an MLP on the concatenated (flattened) observation and
    action, a scalar per pair; with the ``cnn`` torso the observation's convolution features
    replace the flattened observation."""

    hidden_sizes: Sequence[int]
    activation: str = "relu"
    obs_ndim: int = 1
    torso: str = "mlp"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        if self.torso == "cnn":
            obs = ConvEncoder(self.activation)(obs)
        elif self.obs_ndim != 1:
            obs = obs.reshape(obs.shape[: obs.ndim - self.obs_ndim] + (-1,))
        x = MLP(self.hidden_sizes, self.activation, 1)(jnp.concatenate([obs, action], -1))
        return dense(1, 1.0)(x)[..., 0]

    def q1(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        """The critic itself (the same method name as :meth:`TwinQCritic.q1`)."""
        return self(obs, action)


class TwinQCritic(nn.Module):
    """Two independent Q(s, a) critics (TD3, SAC); ``__call__`` returns ``[2, ...]`` and
    :meth:`q1` the first critic alone (TD3's and DDPG's actor objective), without evaluating
    the second."""

    hidden_sizes: Sequence[int]
    activation: str = "relu"
    obs_ndim: int = 1
    torso: str = "mlp"

    def setup(self):
        self.critics = [QCritic(self.hidden_sizes, self.activation, self.obs_ndim, self.torso,
                                name=f"QCritic_{i}") for i in range(2)]

    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        return jnp.stack([critic(obs, action) for critic in self.critics])

    def q1(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        return self.critics[0](obs, action)


class TwinQNetwork(nn.Module):
    """Two independent Q(s, .) networks for discrete actions (discrete SAC); returns
    ``[2, ..., num_actions]``."""

    num_actions: int
    hidden_sizes: Sequence[int]
    activation: str = "relu"
    obs_ndim: int = 1
    torso: str = "mlp"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return jnp.stack([QNetwork(self.num_actions, self.hidden_sizes, self.activation,
                                   self.obs_ndim, torso=self.torso)(obs) for _ in range(2)])
