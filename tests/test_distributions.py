"""purerl's action distributions against distrax (an independent implementation)."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from purerl.distributions import Categorical, TanhGaussian


def test_categorical_matches_distrax():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    logits, other = jax.random.normal(k1, (5, 7)) * 3, jax.random.normal(k2, (5, 7))
    actions = jax.random.randint(k3, (5,), 0, 7)
    ours, ref = Categorical(logits), distrax.Categorical(logits=logits)
    np.testing.assert_allclose(ours.log_prob(actions), ref.log_prob(actions), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.entropy(), ref.entropy(), rtol=1e-5)
    np.testing.assert_allclose(ours.kl(Categorical(other)),
                               ref.kl_divergence(distrax.Categorical(logits=other)), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_array_equal(ours.mode(), ref.mode())


def test_categorical_samples_follow_the_probabilities():
    logits = jnp.log(jnp.array([0.1, 0.6, 0.3]))
    draws = Categorical(jnp.broadcast_to(logits, (20000, 3))).sample(jax.random.key(0))
    freq = np.bincount(np.asarray(draws), minlength=3) / 20000
    np.testing.assert_allclose(freq, [0.1, 0.6, 0.3], atol=0.015)


def test_tanh_gaussian_log_prob_is_that_of_the_env_action():
    """log pi(a) of a = low + (tanh(u) + 1)(high - low)/2 equals distrax's transformed density,
    including actions near the bounds."""
    low, high = (-2.0, 0.0), (2.0, 1.0)
    k1, k2 = jax.random.split(jax.random.key(1))
    mean = jax.random.normal(k1, (6, 2))
    log_std = jnp.full((6, 2), -0.3)
    u = jax.random.normal(k2, (6, 2)) * 2
    u = u.at[0].set(jnp.array([8.0, -8.0]))  # tanh(u) within 1e-7 of the bounds
    dist = TanhGaussian(mean, log_std, low, high)
    scale = jnp.array(high) - jnp.array(low)
    ref = distrax.Transformed(
        distrax.MultivariateNormalDiag(mean, jnp.exp(log_std)),
        distrax.Chain([distrax.Block(distrax.ScalarAffine(jnp.array(low) + scale / 2,
                                                          scale / 2), 1),
                       distrax.Block(distrax.Tanh(), 1)]))
    ours = dist.log_prob(u)
    assert np.all(np.isfinite(ours))
    # distrax computes the inverse through the action, which loses precision near the bounds;
    # compare away from them, and check finiteness at them.
    a = dist.env_action(u)
    np.testing.assert_allclose(ours[1:], ref.log_prob(a)[1:], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a, jnp.array(low) + (jnp.tanh(u) + 1) * scale / 2, rtol=1e-6)


def test_tanh_gaussian_log_prob_change_of_variables_numerically():
    """Integrate the density over the action box: it must be one."""
    dist = TanhGaussian(jnp.array([[0.4]]), jnp.array([[-0.5]]), (-2.0,), (2.0,))
    a = jnp.linspace(-2.0, 2.0, 200001)[1:-1]
    u = jnp.arctanh(a / 2.0)
    density = jnp.exp(jax.vmap(lambda x: dist.log_prob(x[None, None])[0])(u))
    np.testing.assert_allclose(float(jnp.trapezoid(density, a)), 1.0, atol=2e-3)


def test_gaussian_entropy_and_kl_match_distrax():
    m1, m2 = jnp.array([[0.1, -0.3]]), jnp.array([[0.5, 0.2]])
    s1, s2 = jnp.array([[-0.2, 0.3]]), jnp.array([[0.1, -0.4]])
    p, q = TanhGaussian(m1, s1), TanhGaussian(m2, s2)
    rp = distrax.MultivariateNormalDiag(m1, jnp.exp(s1))
    rq = distrax.MultivariateNormalDiag(m2, jnp.exp(s2))
    np.testing.assert_allclose(p.entropy(), rp.entropy(), rtol=1e-5)
    np.testing.assert_allclose(p.kl(q), rp.kl_divergence(rq), rtol=1e-5)
