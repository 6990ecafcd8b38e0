"""networks.linear (the matmul of every dense layer, with its weight gradient computed from an
explicitly transposed operand): values and derivatives of every order against closed forms."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purerl import networks


def _data(shape, d_in=5, d_out=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape + (d_in,)).astype(np.float32)
    w = rng.normal(size=(d_in, d_out)).astype(np.float32)
    c = rng.normal(size=shape + (d_out,)).astype(np.float32)
    return x, w, c


@pytest.mark.parametrize("d_out", [3, 1])
@pytest.mark.parametrize("shape", [(), (7,), (4, 6), (2, 3, 5)])
def test_linear_value_and_gradients_match_closed_forms(shape, d_out):
    x, w, c = _data(shape, d_out=d_out)
    y = jax.jit(networks.linear)(x, w)
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)

    # L = sum(c * (x W)):  dL/dW = sum over rows of x^T c,  dL/dx = c W^T
    def loss(x, w):
        return jnp.sum(c * networks.linear(x, w))

    gx, gw = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)
    rows_x, rows_c = x.reshape(-1, x.shape[-1]), c.reshape(-1, c.shape[-1])
    np.testing.assert_allclose(gw, rows_x.T @ rows_c, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx, c @ w.T, rtol=1e-5, atol=1e-5)


def test_forward_over_reverse_hessian_vector_product_matches_closed_form():
    # L(W) = 0.5 ||x W||^2 has Hessian-vector product H V = x^T x V (what TRPO's Fisher-vector
    # products need: jvp of grad, i.e. forward mode through the custom derivative).
    x, w, _ = _data((9,))
    v = np.random.default_rng(1).normal(size=w.shape).astype(np.float32)

    def loss(w):
        return 0.5 * jnp.sum(networks.linear(x, w) ** 2)

    hv = jax.jit(lambda w, v: jax.jvp(jax.grad(loss), (w,), (v,))[1])(w, v)
    np.testing.assert_allclose(hv, x.T @ x @ v, rtol=1e-4, atol=1e-4)
    # and the JVP itself (forward mode in both arguments): d(x W) = dx W + x dW
    dx = np.ones_like(x)
    _, t = jax.jvp(networks.linear, (x, w), (dx, v))
    np.testing.assert_allclose(t, dx @ w + x @ v, rtol=1e-5, atol=1e-5)


def test_dense_mlp_gradients_under_vmap_equal_plain_matmul_per_seed():
    # A 3-layer tanh MLP built from networks.dense, vmapped over 3 parameter sets, against the
    # same MLP written with plain jnp matmuls evaluated one seed at a time.
    mlp = networks.MLP((16, 16), "tanh")
    obs = jax.random.normal(jax.random.key(0), (3, 32, 4))
    params = jax.vmap(mlp.init)(jax.random.split(jax.random.key(1), 3), obs)

    def loss(p, o):
        return jnp.mean(mlp.apply(p, o) ** 2)

    def plain_loss(p, o):
        h = o
        for name in ("Dense_0", "Dense_1"):
            layer = p["params"][name]
            h = jnp.tanh(h @ layer["kernel"] + layer["bias"])
        return jnp.mean(h ** 2)

    grads = jax.jit(jax.vmap(jax.grad(loss)))(params, obs)
    for s in range(3):
        p_s = jax.tree.map(lambda a: a[s], params)
        ref = jax.grad(plain_loss)(p_s, obs[s])
        got = jax.tree.map(lambda a: a[s], grads)
        for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_dense_dot_general_other_contractions_fall_back_to_lax():
    # nn.Dense only asks for (last axis of x) x (first axis of the kernel); anything else, e.g.
    # a precision request, goes to lax.dot_general unchanged.
    x, w, _ = _data((4,))
    dims = (((1,), (0,)), ((), ()))
    got = networks._dense_dot_general(x, w, dims, precision=jax.lax.Precision.HIGHEST)
    np.testing.assert_allclose(got, x @ w, rtol=1e-6)
    dense = nn.Dense(3, dot_general=networks._dense_dot_general)
    p = dense.init(jax.random.key(0), x)
    np.testing.assert_allclose(dense.apply(p, x), x @ p["params"]["kernel"] + p["params"]["bias"],
                               rtol=1e-5, atol=1e-6)
