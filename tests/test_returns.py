"""returns.gae against a plain NumPy loop and against closed-form Monte-Carlo returns."""

import jax.numpy as jnp
import numpy as np
import pytest

from purerl import returns


def gae_reference(r, v, nv, term, trunc, gamma, lam):
    """Textbook GAE, one environment at a time, written as a Python loop."""
    T, N = r.shape
    adv = np.zeros((T, N))
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            bootstrap = 0.0 if term[t, n] else nv[t, n]
            delta = r[t, n] + gamma * bootstrap - v[t, n]
            if term[t, n] or trunc[t, n]:
                running = delta  # never look across the episode boundary
            else:
                running = delta + gamma * lam * running
            adv[t, n] = running
    return adv, adv + v


@pytest.mark.parametrize("seed", range(12))
def test_gae_matches_numpy_loop(seed):
    rng = np.random.default_rng(seed)
    T, N = rng.integers(1, 40), rng.integers(1, 6)
    r, v, nv = (rng.normal(size=(T, N)) for _ in range(3))
    term = rng.random((T, N)) < 0.1
    trunc = (rng.random((T, N)) < 0.1) & ~term
    gamma, lam = rng.uniform(0.8, 1.0), rng.uniform(0.0, 1.0)
    adv, tgt = returns.gae(jnp.asarray(r, jnp.float32), jnp.asarray(v, jnp.float32),
                           jnp.asarray(nv, jnp.float32), jnp.asarray(term), jnp.asarray(trunc),
                           gamma, lam)
    ref_adv, ref_tgt = gae_reference(r, v, nv, term, trunc, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tgt, ref_tgt, rtol=1e-4, atol=1e-4)


def test_truncation_bootstraps_from_real_next_value_and_termination_from_zero():
    r = jnp.array([[1.0], [1.0], [1.0]])
    v = jnp.array([[0.5], [0.5], [0.5]])
    nv = jnp.array([[0.5], [7.0], [9.0]])  # V(s'_1) = 7 is the real next obs of a truncation
    term = jnp.array([[False], [False], [True]])
    trunc = jnp.array([[False], [True], [False]])
    adv, _ = returns.gae(r, v, nv, term, trunc, 0.9, 0.8)
    # t=2: terminal, bootstrap 0; t=1: truncated, bootstrap V(s'_1), no look into t=2
    assert adv[2, 0] == pytest.approx(1.0 - 0.5)
    assert adv[1, 0] == pytest.approx(1.0 + 0.9 * 7.0 - 0.5)
    assert adv[0, 0] == pytest.approx((1.0 + 0.9 * 0.5 - 0.5) + 0.9 * 0.8 * adv[1, 0])


def test_lambda_one_targets_are_discounted_returns_to_the_episode_end():
    """With lambda = 1 the value target is the discounted return to the end of the episode,
    plus gamma^k V(s') when the episode was truncated after k steps (closed form)."""
    rng = np.random.default_rng(0)
    gamma, T = 0.95, 30
    r = rng.normal(size=(T, 1))
    v = rng.normal(size=(T, 1))
    nv = np.roll(v, -1, axis=0)
    term = np.zeros((T, 1), bool)
    trunc = np.zeros((T, 1), bool)
    term[9], trunc[19] = True, True
    nv[19], nv[29] = 3.0, -2.0  # real next observations after the truncation / rollout end
    _, tgt = returns.gae(*(jnp.asarray(x, jnp.float32) for x in (r, v, nv)), jnp.asarray(term),
                         jnp.asarray(trunc), gamma, 1.0)
    for t in range(T):
        end = 10 if t < 10 else (20 if t < 20 else 30)
        ret = sum(gamma ** (k - t) * r[k, 0] for k in range(t, end))
        if end != 10:
            ret += gamma ** (end - t) * nv[end - 1, 0]
        assert tgt[t, 0] == pytest.approx(ret, rel=1e-4, abs=1e-4)


def test_clipped_surrogate_and_value_losses_match_numpy():
    from purerl import losses

    rng = np.random.default_rng(0)
    lp, old, adv = rng.normal(size=64) * 0.3, rng.normal(size=64) * 0.3, rng.normal(size=64)
    ratio = np.exp(lp - old)
    ref = -np.mean(np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv))
    loss, frac = losses.clipped_surrogate_loss(jnp.asarray(lp), jnp.asarray(old),
                                               jnp.asarray(adv), 0.2)
    assert float(loss) == pytest.approx(ref, rel=1e-5)
    assert float(frac) == pytest.approx(np.mean(np.abs(ratio - 1) > 0.2))
    v, v_old, g = rng.normal(size=64), rng.normal(size=64), rng.normal(size=64)
    clipped = v_old + np.clip(v - v_old, -0.2, 0.2)
    ref_v = 0.5 * np.mean(np.maximum((v - g) ** 2, (clipped - g) ** 2))
    got = losses.value_loss(jnp.asarray(v), jnp.asarray(g), jnp.asarray(v_old), 0.2)
    assert float(got) == pytest.approx(ref_v, rel=1e-5)
    assert float(losses.value_loss(jnp.asarray(v), jnp.asarray(g))) == pytest.approx(
        0.5 * np.mean((v - g) ** 2), rel=1e-5)
