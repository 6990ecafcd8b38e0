"""TRPO: conjugate gradient against a dense solve, the Fisher-vector product against the dense
KL Hessian, the line search, the trust region on a real run, config errors, and learning to
stated returns. The generic trainer contract is in test_contract.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import final_seed_evals
from jax.flatten_util import ravel_pytree

import purerl
from purerl import envs, optim, trpo
from purerl.networks import Actor

# the Pendulum-v1 preset (its budget is 300k; the learning check runs 96k)
PENDULUM = dict(trpo.Config.for_env("Pendulum-v1").to_dict(), total_timesteps=96_000)


@pytest.mark.parametrize("seed", range(6))
def test_conjugate_gradient_solves_spd_systems(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 25))
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = (q * rng.uniform(1.0, 20.0, n)) @ q.T  # SPD, condition number <= 20
    b = rng.normal(size=n)
    # a pytree right-hand side: CG works on any structure
    tree = {"w": jnp.asarray(b[:3], jnp.float32), "v": jnp.asarray(b[3:], jnp.float32)}
    flat_b, unravel = ravel_pytree(tree)  # (ravel orders the dict's keys)
    a32 = jnp.asarray(a, jnp.float32)

    def matvec(v):
        return unravel(a32 @ ravel_pytree(v)[0])

    x, residual = jax.jit(lambda t: optim.conjugate_gradient(matvec, t, 2 * n))(tree)
    ref = np.linalg.solve(a, np.asarray(flat_b, np.float64))
    got = np.asarray(ravel_pytree(x)[0], np.float64)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-5
    assert float(residual) < 1e-3


def test_conjugate_gradient_stops_at_tolerance():
    """After convergence the iterate is frozen: more iterations change nothing."""
    a = jnp.diag(jnp.array([1.0, 2.0, 3.0]))
    b = jnp.array([1.0, 1.0, 1.0])
    x3, _ = optim.conjugate_gradient(lambda v: a @ v, b, 3)
    x50, _ = optim.conjugate_gradient(lambda v: a @ v, b, 50)
    np.testing.assert_allclose(x3, [1.0, 0.5, 1.0 / 3.0], rtol=1e-6)
    np.testing.assert_array_equal(x3, x50)


@pytest.mark.parametrize("env_name", ["CartPole-v1", "Pendulum-v1"])
def test_fisher_vector_product_equals_dense_kl_hessian(env_name):
    _, _, spec = envs.make_env(env_name)
    actor = Actor(spec, (5,), "tanh", -0.3)
    params = actor.init(jax.random.key(0), jnp.zeros((1,) + spec.obs_shape))
    # move away from the near-deterministic initial head so the Hessian is not tiny
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(1), p.shape),
                          params)
    flat, unravel = ravel_pytree(params)
    obs = jax.random.normal(jax.random.key(2), (32,) + spec.obs_shape)
    old = actor.apply(params, obs)

    def mean_kl(f):
        return jnp.mean(old.kl(actor.apply(unravel(f), obs)))

    hessian = jax.hessian(mean_kl)(flat)
    v = jax.random.normal(jax.random.key(3), flat.shape)
    for damping in (0.0, 0.1):
        fvp = trpo.fisher_vector_product(mean_kl, flat, v, damping)
        np.testing.assert_allclose(fvp, hessian @ v + damping * v, rtol=1e-4, atol=1e-6)
    assert np.abs(np.asarray(hessian @ v)).max() > 1e-3


def test_backtracking_line_search_takes_the_first_acceptable_step():
    # surrogate peaks at theta = 1, KL = theta^2 / 2 around the old theta = 0
    def surrogate(f):
        return -jnp.sum((f - 1.0) ** 2)

    def mean_kl(f):
        return 0.5 * jnp.sum(f ** 2)

    flat, step = jnp.zeros(1), jnp.full(1, 4.0)
    # candidates 4, 2, 1, 0.5: KL 8, 2, 0.5, 0.125; improvements -8, 0, 1, 0.75
    s = trpo.backtracking_line_search(surrogate, mean_kl, flat, step, 0.6, 0.5, 3)
    assert bool(s.accepted) and int(s.backtracks) == 2
    np.testing.assert_allclose(s.params, [1.0])
    assert float(s.kl) == pytest.approx(0.5) and float(s.improvement) == pytest.approx(1.0)
    # no candidate inside the trust region: keep the old parameters, report failure
    s = trpo.backtracking_line_search(surrogate, mean_kl, flat, step, 0.1, 0.5, 3)
    assert not bool(s.accepted) and int(s.backtracks) == 4
    np.testing.assert_array_equal(s.params, flat)
    assert float(s.kl) == 0.0


def test_every_accepted_update_stays_in_the_trust_region(purerl_jit_level0):
    cfg = dict(total_timesteps=16 * 64 * 15, eval_every=0)
    _, m = purerl.jit(jax.vmap(trpo.make_train(cfg)))(jax.random.split(jax.random.key(3), 2))
    m = {k: np.asarray(v) for k, v in m.items()}
    accepted = m["line_search_failed"] == 0
    assert accepted.mean() > 0.9
    assert (m["kl"][accepted] <= 0.005 * 1.05).all()
    assert (m["kl"][accepted] > 0).all() and (m["surrogate_improvement"][accepted] > 0).all()
    assert (m["kl"][~accepted] == 0).all() and (m["backtracks"][~accepted] == 11).all()
    assert (m["backtracks"] >= 0).all() and (m["cg_residual"] >= 0).all()
    # the full step is sized to the trust region: accepted full steps use most of it
    full = accepted & (m["backtracks"] == 0)
    assert (m["kl"][full] > 0.25 * 0.005).all()


@pytest.mark.parametrize("fields, field", [
    (dict(vf_minibatches=7), "vf_minibatches"),  # does not divide num_envs * num_steps
    (dict(backtrack_coef=1.5), "backtrack_coef"),
    (dict(max_kl=0.0), "max_kl"),
    (dict(total_timesteps=100), "total_timesteps"),  # less than one update
])
def test_config_errors_name_the_field(fields, field):
    with pytest.raises(ValueError, match=field):
        trpo.make_train(fields)


def test_trpo_is_registered():
    assert purerl.get_algorithm("trpo") is trpo


@pytest.mark.slow
def test_trpo_solves_cartpole():
    """The median over 10 seeds: about one seed in eight has not yet reached 475 at 100k steps
    (2026-12-07: 5 of 32 seeds of key 0 at 360-467, 3 of 32 of key 1 at 216-456), and which
    ones depends on the machine's float rounding, so a 4-seed mean fails on one machine and
    passes on another for the same code. At most 7 of those 64 seeds were below 450, so the
    median of 10 fails only if 5 of 10 are (about 0.2%, as the median of 16 at 475 before; 10
    seeds cost about 60% of 16)."""
    final = final_seed_evals(trpo, dict(total_timesteps=100_000, eval_every=0), seeds=10)
    assert np.median(final) >= 450, final


@pytest.mark.slow
def test_trpo_learns_pendulum():
    final = final_seed_evals(trpo, dict(PENDULUM, total_timesteps=30 * 16 * 200, eval_every=0))
    assert final.mean() >= -400, final
