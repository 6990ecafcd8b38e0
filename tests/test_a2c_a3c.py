"""A2C and A3C beyond the trainer contract (tests/test_contract.py): A2C's metrics and learning
rate schedule, A3C's deterministic staleness and the order its stale gradients are applied in
(and that one worker is A2C), the options, config errors, a hyperparameter sweep, and learning
CartPole to stated returns (A2C on Acrobot: its preset's measured return, docs/presets.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL, assert_trees_close, final_seed_evals, purerl_jit_at_level0

import purerl
from purerl import a2c, a3c


# Every run compared here is compiled in this module, so all of them at LLVM level 0 (half the
# compile time; tests/conftest.py); the learning checks (slow), which mostly run, at level 1.
@pytest.fixture(autouse=True)
def _level0_unless_learning(request):
    if request.node.get_closest_marker("slow"):
        yield
        return
    with purerl_jit_at_level0():
        yield


# one compiled unbatched trainer per module, shared by the tests below
@pytest.fixture(scope="module")
def a2c_train():
    with purerl_jit_at_level0():  # (purerl.jit reads its options here)
        return purerl.jit(a2c.make_train(SMALL["a2c"]))


@pytest.fixture(scope="module")
def a3c_train():
    with purerl_jit_at_level0():
        return purerl.jit(a3c.make_train(SMALL["a3c"]))


@pytest.mark.parametrize("module", ["a2c", "a3c"])
def test_different_seeds_train_differently(module, request):
    train = request.getfixturevalue(f"{module}_train")
    keys = jax.random.split(jax.random.key(0), 2)
    (_, m0), (_, m1) = train(keys[0]), train(keys[1])
    assert not np.allclose(m0["policy_loss"], m1["policy_loss"])


def test_a2c_metrics_env_steps_and_lr_annealing(a2c_train):
    _, m = a2c_train(jax.random.key(0))
    for name in ["policy_loss", "value_loss", "entropy", "explained_variance", "lr"]:
        assert m[name].shape == (6,), name
    # num_envs * num_steps = 20 env steps per update
    np.testing.assert_array_equal(m["env_steps"], 20 * np.arange(1, 7))
    # lr annealed linearly to 0 over the run's gradient steps
    np.testing.assert_allclose(m["lr"], 7e-3 * (1 - np.arange(6) / 6), rtol=1e-6)


# ----------------------------------------------------------------------------- A3C


def test_a3c_with_one_worker_is_a2c(a2c_train):
    key = jax.random.key(3)
    s2, m2 = a2c_train(key)
    # at a2c_train's level 0 as well: runs compared to a tolerance come from one compiler
    # setting (a level-0 and a level-1 program differ in the last bits, which a sampled
    # action can turn into another trajectory)
    with purerl_jit_at_level0():
        s3, m3 = purerl.jit(a3c.make_train({**SMALL["a2c"], "num_workers": 1, "lr": 7e-3,
                                            "ent_coef_spread": 3.0}))(key)
    assert_trees_close(s2.params, s3.params, rtol=1e-5, atol=1e-6)
    assert_trees_close(s2.params, jax.tree.map(lambda x: x[0], s3.worker_params))
    for name in m2:
        np.testing.assert_allclose(m3[name], m2[name], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(m3["staleness"], 0.0)


def test_a3c_staleness_is_deterministic(a3c_train):
    w = 3
    state, m = a3c_train(jax.random.key(0))
    # worker k's first gradient was computed by the initial copy and applied after k others;
    # afterwards each copy is re-synced right after its own gradient: W - 1 others in between
    np.testing.assert_array_equal(m["staleness"], [np.mean(range(w))] + [w - 1] * 5)
    assert int(state.version) == 6 * w
    np.testing.assert_array_equal(state.worker_version, 5 * w + 1 + np.arange(w))
    np.testing.assert_array_equal(m["env_steps"], w * 20 * np.arange(1, 7))
    # the last worker re-synced last: its copy is the global parameters, the others' are stale
    assert_trees_close(jax.tree.map(lambda x: x[-1], state.worker_params), state.params,
                       rtol=0, atol=0)
    first = jax.tree.leaves(jax.tree.map(lambda x: x[0], state.worker_params))
    assert any(not np.allclose(a, b) for a, b in zip(first, jax.tree.leaves(state.params)))


def test_a3c_applies_stale_gradients_in_order():
    """One round by hand: every worker's gradient comes from its own (initial) copy; applying
    them one by one gives the global parameters each worker re-syncs to; the last worker's
    gradient differs from the one a synced worker would compute on the same data."""
    w = 3
    config = a3c.Config(**SMALL["a3c"])
    rnd = a3c.make_round(config)
    agent = a3c.make_agent(config)
    s0 = purerl.jit(agent.init)(jax.random.key(4))
    cfg = config.with_hparams(s0.run.hparams)

    @purerl.jit
    def one_round(s0):
        _, _, trajs = rnd.collect(cfg, s0)
        grads, _ = rnd.gradients(cfg, s0, trajs)
        return (trajs, grads) + rnd.apply(cfg, s0, grads) + (agent.update(s0)[0].params,)

    trajs, grads, s1, staleness, lrs, updated = one_round(s0)
    np.testing.assert_array_equal(staleness, np.arange(w))
    np.testing.assert_allclose(lrs, 4e-3 * (1 - np.arange(w) / (6 * w)), rtol=1e-6)
    assert_trees_close(updated, s1.params)  # update is collect -> gradients -> apply

    @purerl.jit
    def gradient(params, traj, ent_coef):
        return rnd.worker.gradient(cfg, params, s0.run.obs_norm, traj, ent_coef)[0]

    @purerl.jit
    def apply_gradient(lr, params, opt_state, grad):
        return a2c.apply_gradient(cfg, lr, params, opt_state, grad)

    ent = a3c.worker_ent_coefs(w, 0.01, 4.0)
    params, opt_state = s0.params, s0.opt_state
    for k in range(w):
        traj_k, grad_k = jax.tree.map(lambda x, k=k: x[k], (trajs, grads))
        # computed with the worker's copy, which is still the initial global parameters
        stale = gradient(s0.params, traj_k, ent[k])
        assert_trees_close(grad_k, stale)
        synced = gradient(params, traj_k, ent[k])  # the global parameters it is applied to
        diff = max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(synced),
                                                      jax.tree.leaves(stale)))
        if k == 0:
            assert diff == 0.0
        else:
            assert diff > 1e-4
        params, opt_state = apply_gradient(lrs[k], params, opt_state, grad_k)
        assert_trees_close(jax.tree.map(lambda x, k=k: x[k], s1.worker_params), params)
    assert_trees_close(s1.params, params)


def test_worker_entropy_coefficients():
    np.testing.assert_allclose(a3c.worker_ent_coefs(4, 0.01, 4.0),
                               [0.005, 0.01 * 4 ** (-1 / 6), 0.01 * 4 ** (1 / 6), 0.02],
                               rtol=1e-6)
    np.testing.assert_allclose(a3c.worker_ent_coefs(3, 0.02, 1.0), [0.02] * 3)
    np.testing.assert_allclose(a3c.worker_ent_coefs(1, 0.01, 9.0), [0.01])


# ----------------------------------------------------------------------------- options


def test_gae_with_lambda_one_equals_n_step_returns(a2c_train):
    """GAE(lambda=1) over a segment is the n-step return minus V: same training."""
    key = jax.random.key(5)
    s_n, m_n = a2c_train(key)
    s_g, m_g = purerl.jit(a2c.make_train({**SMALL["a2c"], "use_gae": True,
                                          "gae_lambda": 1.0}))(key)
    assert_trees_close(s_n.params, s_g.params)
    np.testing.assert_allclose(m_g["value_loss"], m_n["value_loss"], rtol=1e-4)


def test_continuous_actions_and_options_run():
    config = {"env": "Pendulum-v1", "num_envs": 2, "num_steps": 8,
              "total_timesteps": 2 * 2 * 8 * 4, "num_workers": 2, "eval_every": 0,
              "eval_episodes": 1, "shared_torso": True, "optimizer": "adam",
              "normalize_obs": True, "normalize_advantages": True, "use_gae": True,
              "log_std_init": -0.5, "anneal_lr": False}
    state, m = purerl.jit(a3c.make_train(config))(jax.random.key(0))
    assert set(state.params["params"]) == {"MLP_0", "Dense_0", "Dense_1", "log_std"}
    assert np.isfinite(m["policy_loss"]).all() and np.isfinite(m["eval_return"][-1])
    assert float(state.run.obs_norm.count) > 2 * 2 * 8 * 4  # observations were counted
    np.testing.assert_allclose(m["lr"], 4e-3)


# ----------------------------------------------------------------------------- config errors


def test_config_errors_raise_at_make_train():
    with pytest.raises(ValueError, match="num_workers"):
        a3c.make_train({"num_workers": 0})
    with pytest.raises(ValueError, match="optimizer.*'rmsprop', 'adam'"):
        a2c.make_train({"optimizer": "sgd"})
    with pytest.raises(ValueError, match="num_steps"):
        a2c.make_train({"num_steps": 0})
    with pytest.raises(ValueError, match="ent_coef_spread"):
        a3c.make_train({"ent_coef_spread": 0.5})
    with pytest.raises(ValueError, match="total_timesteps.*smaller"):
        a3c.make_train({"num_workers": 4, "num_envs": 4, "num_steps": 8, "total_timesteps": 100})
    with pytest.raises(ValueError, match="log_std_init.*discrete"):
        a2c.make_train({"env": "CartPole-v1", "log_std_init": -0.5})
    with pytest.raises(ValueError, match=r"'num_worker'.*did you mean 'num_workers'"):
        a3c.Config.from_dict({"num_worker": 2})
    with pytest.raises(ValueError, match="num_workers.*static"):
        a3c.make_agent(SMALL["a3c"]).init(jax.random.key(0), {"num_workers": 8})


@pytest.mark.parametrize("module", [a2c, a3c], ids=["a2c", "a3c"])
def test_t_max_is_rejected_naming_num_steps(module):
    with pytest.raises(ValueError, match=r"'t_max'.*renamed to 'num_steps'"):
        module.Config.from_dict({"t_max": 5})


def test_registered_with_the_cli():
    assert purerl.get_algorithm("a2c") is a2c and purerl.get_algorithm("a3c") is a3c
    assert purerl.ALGORITHMS["a3c"][1:] == ("discrete, continuous", "CartPole-v1")


def test_hyperparameter_sweep_equals_separate_runs(a3c_train):
    train = a3c.make_train(SMALL["a3c"])
    spreads = jnp.array([4.0, 10.0])  # 4.0 is the default
    _, swept = purerl.jit(jax.vmap(train, in_axes=(None, 0)))(jax.random.key(1),
                                                              {"ent_coef_spread": spreads})
    _, separate = a3c_train(jax.random.key(1))
    assert_trees_close({k: v[0] for k, v in swept.items()}, separate)
    assert not np.allclose(swept["policy_loss"][0], swept["policy_loss"][1])


# ----------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_a2c_solves_cartpole():
    final = final_seed_evals(a2c, a2c.Config(total_timesteps=200_000))
    assert final.mean() >= 475, final


@pytest.mark.slow
def test_a3c_solves_cartpole():
    final = final_seed_evals(a3c, a3c.Config(total_timesteps=200_000))
    assert final.mean() >= 475, final
