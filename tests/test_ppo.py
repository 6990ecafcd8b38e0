"""PPO: the trainer contract (determinism, vmap over seeds and hyperparameters, chunked runs),
config errors, and learning to stated returns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purerl
from purerl import loop, ppo

SMALL = dict(env="CartPole-v1", num_envs=4, num_steps=32, total_timesteps=4 * 32 * 6,
             update_epochs=2, num_minibatches=2, eval_every=3, eval_episodes=2)


def final_seed_evals(module, config, seeds=4, key=0):
    """The final deterministic evaluation of each of ``seeds`` vmapped runs (keys split from
    ``jax.random.key(key)``): what the learning checks assert on."""
    keys = jax.random.split(jax.random.key(key), seeds)
    _, metrics = purerl.jit(jax.vmap(module.make_train(config)))(keys)
    return np.asarray(metrics["eval_return"][:, -1])


def assert_trees_close(a, b, rtol=1e-4, atol=1e-5):
    """Equal up to float32 rounding: XLA uses different matmul kernels for batched (vmapped)
    and unbatched programs, so the last bits of the parameters may differ."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def assert_vmap_equals_single_runs(single, batched, keys, fields=("params",)):
    """The trainer contract: seed i of the vmapped run ``batched = (state, metrics)`` equals the
    single run ``single(keys[i])`` on the state's ``fields`` and on every metric (to float32
    rounding, see :func:`assert_trees_close`)."""
    state_b, metrics_b = batched
    for i in range(len(keys)):
        state_i, metrics_i = single(keys[i])
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], [getattr(state_b, f) for f in fields]),
                           [getattr(state_i, f) for f in fields])
        assert_trees_close({k: v[i] for k, v in metrics_b.items()}, metrics_i)


@pytest.fixture(scope="module")
def small_train():
    return ppo.make_train(SMALL)


def test_same_key_same_result_and_vmap_equals_single_runs(small_train):
    keys = jax.random.split(jax.random.key(0), 3)
    state_b, metrics_b = purerl.jit(jax.vmap(small_train))(keys)
    single = purerl.jit(small_train)
    assert_vmap_equals_single_runs(single, (state_b, metrics_b), keys)
    (s1, m1), (s2, m2) = single(keys[1]), single(keys[1])
    for x, y in zip(jax.tree.leaves((s1.params, s1.opt_state, m1)),
                    jax.tree.leaves((s2.params, s2.opt_state, m2))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert metrics_b["eval_return"].shape == (3, 6)
    # evaluations after updates 3 and 6 only
    assert np.isnan(metrics_b["eval_return"][:, [0, 1, 3, 4]]).all()
    assert np.isfinite(metrics_b["eval_return"][:, [2, 5]]).all()


def test_vmapped_learning_rate_sweep_equals_separate_runs(small_train):
    key = jax.random.key(1)
    lrs = jnp.array([3e-4, 3e-3])
    _, swept = purerl.jit(jax.vmap(small_train, in_axes=(None, 0)))(key, {"lr": lrs})
    for i, lr in enumerate([3e-4, 3e-3]):
        _, separate = purerl.jit(ppo.make_train({**SMALL, "lr": lr}))(key)
        assert_trees_close({k: v[i] for k, v in swept.items()}, separate)
    assert not np.allclose(swept["policy_loss"][0], swept["policy_loss"][1])


def test_chunked_run_equals_train(small_train):
    keys = jax.random.split(jax.random.key(2), 2)
    _, full = purerl.jit(jax.vmap(small_train))(keys)
    chunks = [m for _, _, m in loop.run_chunked(ppo.make_agent(SMALL), keys, chunk=4)]
    for k in full:
        np.testing.assert_allclose(np.concatenate([c[k] for c in chunks], axis=1), full[k],
                                   rtol=1e-5, atol=1e-6)


def test_metrics_cover_the_contract():
    _, m = purerl.jit(ppo.make_train({**SMALL, "variant": "kl_penalty"}))(jax.random.key(0))
    for name in ["episode_return", "episode_count", "eval_return", "policy_loss", "value_loss",
                 "entropy", "approx_kl", "clip_fraction", "explained_variance", "kl", "kl_beta",
                 "env_steps"]:
        assert m[name].shape == (6,), name
    np.testing.assert_array_equal(m["env_steps"], 128 * np.arange(1, 7))
    # beta follows seed 001's rule from the recorded KL, starting from kl_beta_init
    beta = 1.0
    for kl, recorded in zip(m["kl"], m["kl_beta"]):
        beta = beta / 2 if kl < 0.005 / 1.5 else (beta * 2 if kl > 0.005 * 1.5 else beta)
        assert recorded == pytest.approx(beta)


# ----------------------------------------------------------------------------- config errors


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ValueError, match=r"'lrr'.*did you mean 'lr'"):
        ppo.Config.from_dict({"lrr": 1e-3})


def test_minibatches_must_divide_the_batch():
    with pytest.raises(ValueError, match="num_minibatches"):
        ppo.Config(num_envs=4, num_steps=30, num_minibatches=7)


def test_continuous_only_option_on_discrete_env():
    with pytest.raises(ValueError, match="log_std_init.*discrete"):
        ppo.make_train({"env": "CartPole-v1", "log_std_init": -0.5})


def test_bad_values_and_names_are_reported():
    with pytest.raises(ValueError, match="variant"):
        ppo.Config(variant="trust_region")
    with pytest.raises(ValueError, match="lr"):
        ppo.Config(lr=-1.0)
    with pytest.raises(ValueError, match="num_envs"):
        ppo.Config(num_envs="4")
    with pytest.raises(ValueError, match="CartPole-v1"):
        ppo.make_train({"env": "Cartpole-v1"})
    with pytest.raises(ValueError, match="num_envs.*static"):
        ppo.make_agent(SMALL).init(jax.random.key(0), {"num_envs": 8})


# ----------------------------------------------------------------------------- learning


def final_eval(config, seeds=4, key=0):
    keys = jax.random.split(jax.random.key(key), seeds)
    _, metrics = purerl.jit(jax.vmap(ppo.make_train(config)))(keys)
    return np.asarray(metrics["eval_return"][:, -1]), np.asarray(metrics["eval_return"])


@pytest.mark.slow
def test_ppo_clip_solves_cartpole_within_150k_steps():
    final, _ = final_eval(ppo.Config(total_timesteps=150_000))
    assert final.mean() >= 475, final


@pytest.mark.slow
def test_ppo_kl_penalty_learns_cartpole():
    final, _ = final_eval(ppo.Config(variant="kl_penalty", total_timesteps=250_000))
    assert final.mean() >= 450, final


@pytest.mark.slow
def test_ppo_continuous_learns_pendulum():
    final, curve = final_eval(ppo.Config(
        env="Pendulum-v1", total_timesteps=150_000, num_envs=8, num_steps=256, update_epochs=10,
        num_minibatches=32, gamma=0.9, lr=1e-3, ent_coef=0.0, normalize_obs=True, eval_every=5))
    assert final.mean() >= -300, final
    assert np.nanmean(curve[:, 4]) < -700  # the first evaluation (10k steps) is far from it
