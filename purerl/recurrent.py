"""Recurrent policies: a GRU or LSTM core between the torso and the policy and value heads, run
over time-major sequences with the carry reset where an episode begins.

The cells are flax's (``nn.GRUCell``, Cho et al. 2014; ``nn.OptimizedLSTMCell``, Hochreiter &
Schmidhuber 1997 with a forget gate, Gers et al. 2000): the same parameters, names, shapes and
initialisers, and the same equations. What changes is where the work is done. flax's cells
project the input inside every time step; here a sequence's input projections of every gate are
one matmul over all ``T x B`` inputs before the time loop, and each step of the loop does one
``[B, H] x [H, G H]`` matmul for the hidden projections of the ``G`` gates together (GRU, with
``x`` the cell input and ``h`` the carry)::

    [x_r, x_z, x_n] = x [W_ir, W_iz, W_in] + [b_ir, b_iz, b_in]          (all t at once)
    [h_r, h_z, h_n] = h [W_hr, W_hz, W_hn] + [0, 0, b_hn]                (step t)
    r = sigmoid(x_r + h_r),  z = sigmoid(x_z + h_z),  n = tanh(x_n + r h_n),
    h' = (1 - z) n + z h.

``tests/test_recurrent.py`` checks every step against flax's cells with the same parameters.

Resets: ``start[t, b]`` is true where observation ``t`` of sequence ``b`` begins an episode;
the carry entering that step is then the initial carry (zeros, flax's ``carry_init``). A
rollout stores ``start`` and the carry it began with, so an update replays exactly the
sequences the policy acted on.

:class:`RecurrentActorCritic` is PureJaxRL's ``ActorCriticRNN`` generalised: torso
(``hidden_sizes``) -> cell (``memory_size``) -> a policy head and a value head, each one
hidden layer of ``hidden_sizes[-1]`` units (orthogonal gain 2, as PureJaxRL's) and its
output. The torso and the cell are shared by the policy and the value function (as in
PureJaxRL's and CleanRL's recurrent PPO), so one sequential pass serves both.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.recurrent import DenseParams

from purerl import rollout
from purerl.networks import ACTIVATIONS, _policy_head, dense, features, linear, orthogonal
from purerl.spaces import EnvSpec

CELLS = ("gru", "lstm")
# the gates of each cell, in the order flax names their parameters
_GATES = {"gru": ("r", "z", "n"), "lstm": ("i", "f", "g", "o")}

Carry = Any  # [B, H] for a GRU, (c [B, H], h [B, H]) for an LSTM


def initial_carry(cell: str, batch: int, features: int) -> Carry:
    """The carry at an episode's first step: zeros (flax's ``carry_init``)."""
    zeros = jnp.zeros((batch, features), jnp.float32)
    return (zeros, zeros) if cell == "lstm" else zeros


def carry_output(cell: str, carry: Carry) -> jax.Array:
    """The cell's output h of a carry."""
    return carry[1] if cell == "lstm" else carry


def reset_carry(carry: Carry, start: jax.Array) -> Carry:
    """``carry`` with the rows where ``start [B]`` is true set to the initial carry."""
    return jax.tree.map(lambda c: jnp.where(start[:, None], jnp.zeros_like(c), c), carry)


def _gru_step(h: jax.Array, xw: jax.Array, hw: jax.Array) -> jax.Array:
    x_r, x_z, x_n = jnp.split(xw, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(hw, 3, axis=-1)
    r = nn.sigmoid(x_r + h_r)
    z = nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    return (1.0 - z) * n + z * h


def _lstm_step(carry: tuple[jax.Array, jax.Array], xw: jax.Array, hw: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    c, _ = carry
    i, f, g, o = jnp.split(xw + hw, 4, axis=-1)
    c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
    return c, nn.sigmoid(o) * jnp.tanh(c)


def _scan_cell(cell: str, carry0: Carry, xw: jax.Array, start: jax.Array, wh: jax.Array,
               bh: jax.Array, unroll: int = 1) -> Carry:
    """The carry after every step (leaves ``[T, B, H]``) of ``cell`` from ``carry0``, with the
    input projections ``xw [T, B, G H]`` precomputed and resets ``start [T, B]``."""
    update = _lstm_step if cell == "lstm" else _gru_step

    def step(carry, inputs):
        xw_t, start_t = inputs
        carry = reset_carry(carry, start_t)
        carry = update(carry, xw_t, carry_output(cell, carry) @ wh + bh)
        return carry, carry

    return jax.lax.scan(step, carry0, (xw, start), unroll=unroll)[1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 6))
def scan_cell(cell: str, carry0: Carry, xw: jax.Array, start: jax.Array, wh: jax.Array,
              bh: jax.Array, unroll: int = 1) -> Carry:
    """:func:`_scan_cell` with a hand-written backward pass (backpropagation through time).

    Reverse-mode autodiff of the scan saves every intermediate of every step and runs a loop of
    small transposed operations. Here the backward pass first recomputes every step's gates at
    once from the stored carries (one ``[T B, H] x [H, G H]`` matmul: each step's input is known
    after the forward pass), so the sequential part is only the recursion of the carry's
    cotangent: per step, elementwise gate derivatives and one ``[B, G H] x [G H, H]`` matmul.
    The weight gradients are then one matmul over all steps. Same derivatives as autodiff of
    :func:`_scan_cell` (tested); reverse mode only (no ``jax.jvp``)."""
    return _scan_cell(cell, carry0, xw, start, wh, bh, unroll)


def _scan_cell_fwd(cell, carry0, xw, start, wh, bh, unroll):
    carries = _scan_cell(cell, carry0, xw, start, wh, bh, unroll)
    return carries, (carry0, xw, start, wh, bh, carries)


def _scan_cell_bwd(cell, unroll, residuals, g):
    carry0, xw, start, wh, bh, carries = residuals
    # the carry entering each step, after its reset
    prev = jax.tree.map(lambda c0, c: jnp.concatenate([c0[None], c[:-1]]), carry0, carries)
    prev = jax.tree.map(lambda c: jnp.where(start[..., None], 0.0, c), prev)
    h_prev = carry_output(cell, prev)
    pre = xw + (linear(h_prev, wh) + bh)  # every step's gate pre-activations at once
    wh_t = wh.T

    if cell == "gru":
        x_r, x_z, x_n = jnp.split(xw, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(linear(h_prev, wh) + bh, 3, axis=-1)
        r, z = nn.sigmoid(x_r + h_r), nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)

        def step(d_next, inputs):
            g_t, r_t, z_t, n_t, hn_t, hp_t, start_t = inputs
            dh = g_t + d_next
            da_n = dh * (1.0 - z_t) * (1.0 - n_t * n_t)
            da_r = da_n * hn_t * r_t * (1.0 - r_t)
            da_z = dh * (hp_t - n_t) * z_t * (1.0 - z_t)
            dxw = jnp.concatenate([da_r, da_z, da_n], -1)
            dhw = jnp.concatenate([da_r, da_z, da_n * r_t], -1)
            d_prev = dh * z_t + dhw @ wh_t
            return jnp.where(start_t[:, None], 0.0, d_prev), (dxw, dhw)

        d_carry0, (dxw, dhw) = jax.lax.scan(step, jnp.zeros_like(carry0),
                                            (g, r, z, n, h_n, h_prev, start), reverse=True,
                                            unroll=unroll)
    else:
        c_prev = prev[0]
        i, f, gg, o = jnp.split(pre, 4, axis=-1)
        i, f, gg, o = nn.sigmoid(i), nn.sigmoid(f), jnp.tanh(gg), nn.sigmoid(o)
        tanh_c = jnp.tanh(carries[0])

        def step(d_next, inputs):
            (gc_t, gh_t), i_t, f_t, g_t, o_t, tc_t, cp_t, start_t = inputs
            dc_next, dh_next = d_next
            dh = gh_t + dh_next
            dc = gc_t + dc_next + dh * o_t * (1.0 - tc_t * tc_t)
            da = jnp.concatenate([dc * g_t * i_t * (1.0 - i_t), dc * cp_t * f_t * (1.0 - f_t),
                                  dc * i_t * (1.0 - g_t * g_t), dh * tc_t * o_t * (1.0 - o_t)],
                                 -1)
            d_prev = (dc * f_t, da @ wh_t)
            return jax.tree.map(lambda d: jnp.where(start_t[:, None], 0.0, d), d_prev), (da, da)

        d_carry0, (dxw, dhw) = jax.lax.scan(
            step, jax.tree.map(jnp.zeros_like, carry0),
            ((g[0], g[1]), i, f, gg, o, tanh_c, c_prev, start), reverse=True, unroll=unroll)
    rows = h_prev.reshape(-1, h_prev.shape[-1])
    d_wh = linear(rows.T, dhw.reshape(-1, dhw.shape[-1]))  # sum over every step and row
    d_bh = dhw.sum(axis=(0, 1))
    d_start = np.zeros(start.shape, jax.dtypes.float0)
    return d_carry0, dxw, d_start, d_wh, d_bh


scan_cell.defvjp(_scan_cell_fwd, _scan_cell_bwd)


class Core(nn.Module):
    """A GRU or LSTM over ``x [T, B, D]`` from ``carry`` with resets ``start [T, B]``.

    Returns ``(carries, outputs)``: the carry after every step (``[T, B, H]`` leaves) and the
    outputs h ``[T, B, H]``. Parameters as ``nn.GRUCell`` / ``nn.OptimizedLSTMCell`` of
    ``features`` units (``ir``, ``hr``, ...)."""

    cell: str = "gru"
    features: int = 128
    unroll: int = 1  # time steps per iteration of the loop (lax.scan's unroll)
    # scan_cell's hand-written backward pass; False: autodiff of the scan (forward mode too)
    fused_backward: bool = True

    def setup(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"memory must be one of none, {', '.join(CELLS)}; got {self.cell!r}")
        # flax's parameter layout: GRU input projections with biases and hidden projections
        # without (hn with); LSTM the reverse (input without, hidden with)
        lstm = self.cell == "lstm"
        input_init = nn.initializers.lecun_normal()
        self.input_params = {g: DenseParams(self.features, use_bias=not lstm,
                                            kernel_init=input_init, name=f"i{g}")
                             for g in _GATES[self.cell]}
        self.hidden_params = {g: DenseParams(self.features, use_bias=lstm or g == "n",
                                             kernel_init=orthogonal(), name=f"h{g}")
                              for g in _GATES[self.cell]}

    def weights(self, d_in: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """The gates' kernels and biases side by side: input ``[D, G H]`` and ``[G H]``,
        hidden ``[H, G H]`` and ``[G H]`` (zeros for a gate without a bias)."""
        h = jnp.zeros((1, self.features), jnp.float32)
        x = jnp.zeros((1, d_in), jnp.float32)

        def side_by_side(params, inputs):
            kernels, biases = [], []
            for p in params.values():
                k, b = p(inputs)
                kernels.append(k)
                biases.append(jnp.zeros((self.features,), k.dtype) if b is None else b)
            return jnp.concatenate(kernels, -1), jnp.concatenate(biases, -1)

        wi, bi = side_by_side(self.input_params, x)
        wh, bh = side_by_side(self.hidden_params, h)
        return wi, bi, wh, bh

    def __call__(self, carry: Carry, x: jax.Array, start: jax.Array
                 ) -> tuple[Carry, jax.Array]:
        chex.assert_rank(x, 3)
        chex.assert_equal_shape_prefix((x, start), 2)
        wi, bi, wh, bh = self.weights(x.shape[-1])
        xw = linear(x, wi) + bi  # every time step's input projections in one matmul
        run = scan_cell if self.fused_backward else _scan_cell
        carries = run(self.cell, carry, xw, start, wh, bh, self.unroll)
        return carries, carry_output(self.cell, carries)

    def step_from(self, carries: Carry, x: jax.Array) -> jax.Array:
        """The output of one more step from each carry of ``carries`` (leaves ``[..., H]``) on
        the matching input ``x [..., D]``, all at once (no loop, no reset)."""
        wi, bi, wh, bh = self.weights(x.shape[-1])
        update = _lstm_step if self.cell == "lstm" else _gru_step
        new = update(carries, linear(x, wi) + bi, linear(carry_output(self.cell, carries), wh) + bh)
        return carry_output(self.cell, new)


class RecurrentOutput(NamedTuple):
    carry: Carry  # after the sequence's last step
    dist: Any  # pi(.|history) at every step, [T, B]
    value: jax.Array  # V(history) at every step, [T, B]
    next_value: jax.Array | None  # V of each step's next observation, [T, B]; see __call__


class RecurrentActorCritic(nn.Module):
    """Policy and value of a history: torso -> recurrent core -> two heads (module docstring).

    ``__call__(carry, obs [T, B, ...], start [T, B], next_obs=None)``. With ``next_obs`` (the
    real next observation of every step, :class:`purerl.rollout.Trajectory`'s), ``next_value[t]``
    is the value after one more step of the cell from step t's carry on ``next_obs[t]``,
    without a reset: the bootstrap value of a truncated episode, and wherever the episode goes on
    exactly ``value[t + 1]`` (the same computation), so GAE can use it at every step."""

    spec: EnvSpec
    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    cell: str = "gru"
    memory_size: int = 128
    log_std_init: float = 0.0
    torso: str = "mlp"
    unroll: int = 1
    # the core's hand-written backward pass (Core.fused_backward); False for forward-mode
    # derivatives (jax.jvp, e.g. TRPO's Fisher-vector products)
    fused_backward: bool = True

    def setup(self) -> None:
        obs_ndim = len(self.spec.obs_shape)
        self.encoder = _Encoder(self.hidden_sizes, self.activation, obs_ndim, self.torso)
        self.core = Core(self.cell, self.memory_size, self.unroll, self.fused_backward)
        self.policy_head = _PolicyHead(self.spec, self.hidden_sizes[-1], self.activation,
                                       self.log_std_init)
        self.value_head = _ValueHead(self.hidden_sizes[-1], self.activation)

    def __call__(self, carry: Carry, obs: jax.Array, start: jax.Array,
                 next_obs: jax.Array | None = None) -> RecurrentOutput:
        carries, h = self.core(carry, self.encoder(obs), start)
        last = jax.tree.map(lambda c: c[-1], carries)
        next_value = None
        if next_obs is not None:
            next_value = self.value_head(self.core.step_from(carries, self.encoder(next_obs)))
        return RecurrentOutput(last, self.policy_head(h), self.value_head(h), next_value)

    def initial_carry(self, batch: int) -> Carry:
        return initial_carry(self.cell, batch, self.memory_size)


class _Encoder(nn.Module):
    hidden_sizes: Sequence[int]
    activation: str
    obs_ndim: int
    torso: str

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return features(self, obs, self.obs_ndim)


# The heads' hidden layers are initialised with orthogonal gain 2, as in PureJaxRL's
# ActorCriticRNN (the feed-forward networks use sqrt(2)). Measured on its CartPole config, 64
# seeds x 20k steps, two sets of keys: training returns 114.0 and 118.5 with gain 2, 98.8 and
# 102.2 with sqrt(2) (standard errors about 4), PureJaxRL 120.7 (benchmarks/RESULTS.md).
HEAD_GAIN = 2.0


class _PolicyHead(nn.Module):
    spec: EnvSpec
    width: int
    activation: str
    log_std_init: float

    @nn.compact
    def __call__(self, h: jax.Array):
        return _policy_head(self, ACTIVATIONS[self.activation](dense(self.width,
                                                                     HEAD_GAIN)(h)))


class _ValueHead(nn.Module):
    width: int
    activation: str

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        x = ACTIVATIONS[self.activation](dense(self.width, HEAD_GAIN)(h))
        return dense(1, 1.0)(x)[..., 0]


def check_data_parallel(config: Any, dp: Any) -> None:
    """A one-line ValueError for a recurrent policy under data parallelism (not built yet)."""
    if config.memory != "none" and dp.active:
        raise ValueError(f"{config.algo} with memory={config.memory!r} runs on one device per "
                         "seed: data parallel (--data-parallel) needs memory='none'; shard seeds "
                         "over devices instead (--devices)")


def make_network(config: Any, spec: EnvSpec, torso: str,
                 fused_backward: bool = True) -> RecurrentActorCritic:
    """The recurrent actor-critic of a config with ``memory`` set. ``fused_backward=False``:
    the core is differentiated by autodiff of its scan, which supports forward mode too."""
    return RecurrentActorCritic(spec, tuple(config.hidden_sizes), config.activation,
                                config.memory, config.memory_size,
                                getattr(config, "log_std_init", 0.0), torso,
                                fused_backward=fused_backward)


def init_params(net: RecurrentActorCritic, key: jax.Array, spec: EnvSpec) -> Any:
    """Parameters of ``net`` (traced on a one-step, one-environment sequence)."""
    obs = jnp.zeros((1, 1) + tuple(spec.obs_shape), jnp.float32)
    return net.init(key, net.initial_carry(1), obs, jnp.zeros((1, 1), bool))


def one_step(net: RecurrentActorCritic, params: Any, carry: Carry, obs: jax.Array,
             start: jax.Array) -> tuple[Carry, Any, jax.Array]:
    """``(carry, dist, value)`` of one step of every environment (``obs [B, ...]``)."""
    out = net.apply(params, carry, obs[None], start[None])
    return out.carry, jax.tree.map(lambda x: x[0], out.dist), out.value[0]


def act_and_value(net: RecurrentActorCritic) -> tuple[Any, Any]:
    """A recurrent trainer's ``act(state, obs, carry, key=None, deterministic=True) -> (action,
    carry)`` (:func:`purerl.rollout.recurrent_act`) and ``value(state, obs)``: V of ``obs [B,
    ...]`` as the first observation of an episode; ``state.params`` are ``net``'s."""
    def step(state, carry, obs):
        return one_step(net, state.params, carry, obs, jnp.zeros(obs.shape[:1], bool))[:2]

    def value(state, obs: jax.Array) -> jax.Array:
        return one_step(net, state.params, net.initial_carry(obs.shape[0]),
                        state.run.obs_norm(obs), jnp.ones(obs.shape[:1], bool))[2]

    return rollout.recurrent_act(step), value
