"""returns.* against plain NumPy loops and closed forms; losses against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purerl import losses, returns


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


def test_clipped_surrogate_loss_and_clip_fraction_match_numpy():
    rng = np.random.default_rng(0)
    lp, old, adv = rng.normal(size=64) * 0.3, rng.normal(size=64) * 0.3, rng.normal(size=64)
    ratio = np.exp(lp - old)
    ref = -np.mean(np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv))
    loss, frac = losses.clipped_surrogate_loss(jnp.asarray(lp), jnp.asarray(old),
                                               jnp.asarray(adv), 0.2)
    assert float(loss) == pytest.approx(ref, rel=1e-5)
    assert float(frac) == pytest.approx(np.mean(np.abs(ratio - 1) > 0.2))


def test_clipped_and_plain_value_losses_match_numpy():
    rng = np.random.default_rng(1)
    v, v_old, g = rng.normal(size=64), rng.normal(size=64), rng.normal(size=64)
    clipped = v_old + np.clip(v - v_old, -0.2, 0.2)
    ref_v = 0.5 * np.mean(np.maximum((v - g) ** 2, (clipped - g) ** 2))
    got = losses.value_loss(jnp.asarray(v), jnp.asarray(g), jnp.asarray(v_old), 0.2)
    assert float(got) == pytest.approx(ref_v, rel=1e-5)
    assert float(losses.value_loss(jnp.asarray(v), jnp.asarray(g))) == pytest.approx(
        0.5 * np.mean((v - g) ** 2), rel=1e-5)


def random_batch(seed):
    rng = np.random.default_rng(seed)
    T, N = rng.integers(1, 40), rng.integers(1, 6)
    r, nv = rng.normal(size=(T, N)), rng.normal(size=(T, N))
    term = rng.random((T, N)) < 0.1
    trunc = (rng.random((T, N)) < 0.1) & ~term
    return r, nv, term, trunc, rng.uniform(0.8, 1.0)


def reward_to_go_reference(r, done, gamma):
    """Q_t = sum over the rest of t's episode of gamma^(t'-t) r_t', by explicit sums."""
    T, N = r.shape
    q = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, k = 0.0, t
            while k < T:
                total += gamma ** (k - t) * r[k, n]
                if done[k, n]:
                    break
                k += 1
            q[t, n] = total
    return q


def episode_returns_reference(r, done, gamma):
    T, N = r.shape
    out = np.zeros((T, N))
    for n in range(N):
        start = 0
        for t in range(T):
            if done[t, n] or t == T - 1:
                total = sum(gamma ** (k - start) * r[k, n] for k in range(start, t + 1))
                out[start:t + 1, n] = total
                start = t + 1
    return out


def n_step_reference(r, nv, term, trunc, gamma):
    """A3C's worker loop (Mnih et al. 2016, Algorithm S3) for one segment per environment:
    R = 0 for a terminal state, else V(s') of the bootstrap state; for i = t-1 .. t_start:
    R <- r_i + gamma R."""
    T, N = r.shape
    g = np.zeros((T, N))
    for n in range(N):
        R = None
        for i in reversed(range(T)):
            if term[i, n]:
                R = 0.0
            elif trunc[i, n] or i == T - 1:
                R = nv[i, n]
            R = r[i, n] + gamma * R
            g[i, n] = R
    return g


@pytest.mark.parametrize("seed", range(8))
def test_reward_to_go_and_episode_returns_match_numpy(seed):
    r, _, term, trunc, gamma = random_batch(seed)
    done = term | trunc
    q = returns.reward_to_go(jnp.asarray(r, jnp.float32), jnp.asarray(done), gamma)
    np.testing.assert_allclose(q, reward_to_go_reference(r, done, gamma), rtol=1e-4, atol=1e-4)
    total = returns.episode_returns(jnp.asarray(r, jnp.float32), jnp.asarray(done), gamma)
    np.testing.assert_allclose(total, episode_returns_reference(r, done, gamma),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(8))
def test_n_step_returns_match_a3c_accumulation_loop(seed):
    r, nv, term, trunc, gamma = random_batch(seed)
    g = returns.n_step_returns(jnp.asarray(r, jnp.float32), jnp.asarray(nv, jnp.float32),
                               jnp.asarray(term), jnp.asarray(trunc), gamma)
    np.testing.assert_allclose(g, n_step_reference(r, nv, term, trunc, gamma),
                               rtol=1e-4, atol=1e-4)


def test_n_step_return_closed_form_without_episode_ends():
    """G_t = sum_{k<T-t} gamma^k r_{t+k} + gamma^(T-t) V(s_T) inside one episode."""
    T, gamma = 7, 0.9
    r = np.arange(1.0, T + 1.0)[:, None]
    nv = np.full((T, 1), 5.0)
    g = returns.n_step_returns(jnp.asarray(r), jnp.asarray(nv), jnp.zeros((T, 1), bool),
                               jnp.zeros((T, 1), bool), gamma)
    ref = [sum(gamma ** k * r[t + k, 0] for k in range(T - t)) + gamma ** (T - t) * 5.0
           for t in range(T)]
    np.testing.assert_allclose(np.asarray(g)[:, 0], ref, rtol=1e-5)


@pytest.mark.parametrize("kind", ["mse", "huber"])
def test_q_regression_loss_and_its_gradient_match_numpy(kind):
    rng = np.random.default_rng(5)
    q = rng.normal(scale=2.0, size=64).astype(np.float32)
    y = rng.normal(scale=2.0, size=64).astype(np.float32)
    delta = 0.7
    loss, info = losses.q_regression_loss(jnp.asarray(q), jnp.asarray(y), kind, delta)
    grad = jax.grad(lambda q: losses.q_regression_loss(q, jnp.asarray(y), kind, delta)[0])(
        jnp.asarray(q))
    err = q.astype(np.float64) - y
    if kind == "huber":  # quadratic inside delta, linear with slope delta outside
        ref = np.where(np.abs(err) <= delta, 0.5 * err**2, delta * (np.abs(err) - 0.5 * delta))
        ref_grad = np.clip(err, -delta, delta) / err.size
        assert (np.abs(err) > delta).any() and (np.abs(err) <= delta).any()
    else:
        ref, ref_grad = 0.5 * err**2, err / err.size
    np.testing.assert_allclose(loss, ref.mean(), rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(info["td_error"], np.abs(err).mean(), rtol=1e-5)
    np.testing.assert_allclose(info["q_mean"], q.mean(), rtol=1e-5)


def test_masked_losses_ignore_padding():
    rng = np.random.default_rng(0)
    lp, w = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    mask = rng.random((6, 3)) < 0.6
    got = losses.policy_gradient_loss(jnp.asarray(lp), jnp.asarray(w), jnp.asarray(mask), 3.0)
    assert float(got) == pytest.approx(-(lp * w)[mask].sum() / 3.0, rel=1e-5)
    v, g = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    got = losses.value_loss(jnp.asarray(v), jnp.asarray(g), mask=jnp.asarray(mask))
    assert float(got) == pytest.approx(0.5 * np.mean((v - g)[mask] ** 2), rel=1e-5)
    z = np.asarray(losses.normalize(jnp.asarray(w), mask=jnp.asarray(mask)))[mask]
    assert z.mean() == pytest.approx(0.0, abs=1e-5) and z.std() == pytest.approx(1.0, rel=1e-4)
