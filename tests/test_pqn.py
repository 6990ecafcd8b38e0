"""PQN (Gallici et al. 2025): Q(lambda) returns against a NumPy recursion and the closed forms at
lambda = 0 and 1, the LayerNorm Q-network, the targets of an update recomputed by hand, the
epsilon schedule, errors at the boundary, and learning CartPole-v1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purerl
from purerl import noise, pqn, returns
from helpers import SMALL, final_seed_evals, jit_level0, vmapped_run


def q_lambda_reference(r, m, term, trunc, gamma, lam):
    """Peng's Q(lambda) returns, one environment at a time, as a Python loop over the
    lambda-return's two cases: where the episode or the rollout is cut, the one-step target;
    otherwise the mix of the one-step target and the next step's return."""
    T, N = r.shape
    g = np.zeros((T, N))
    for n in range(N):
        for t in reversed(range(T)):
            bootstrap = 0.0 if term[t, n] else m[t, n]
            if term[t, n] or trunc[t, n] or t == T - 1:
                g[t, n] = r[t, n] + gamma * bootstrap
            else:
                g[t, n] = r[t, n] + gamma * ((1 - lam) * m[t, n] + lam * g[t + 1, n])
    return g


def random_rollout(seed):
    rng = np.random.default_rng(seed)
    T, N = rng.integers(1, 40), rng.integers(1, 6)
    r, m = rng.normal(size=(T, N)), rng.normal(size=(T, N))
    term = rng.random((T, N)) < 0.1
    trunc = (rng.random((T, N)) < 0.1) & ~term
    return r, m, term, trunc, rng.uniform(0.8, 1.0)


def q_lambda(r, m, term, trunc, gamma, lam):
    return np.asarray(returns.q_lambda_returns(
        jnp.asarray(r, jnp.float32), jnp.asarray(m, jnp.float32), jnp.asarray(term),
        jnp.asarray(trunc), gamma, lam))


@pytest.mark.parametrize("seed", range(10))
def test_q_lambda_returns_match_numpy_recursion(seed):
    r, m, term, trunc, gamma = random_rollout(seed)
    lam = np.random.default_rng(100 + seed).uniform()
    np.testing.assert_allclose(q_lambda(r, m, term, trunc, gamma, lam),
                               q_lambda_reference(r, m, term, trunc, gamma, lam),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_lambda_zero_is_one_step_q_learning(seed):
    r, m, term, trunc, gamma = random_rollout(seed)
    np.testing.assert_allclose(q_lambda(r, m, term, trunc, gamma, 0.0),
                               r + gamma * (1 - term) * m, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_lambda_one_is_the_monte_carlo_return_bootstrapped_where_cut(seed):
    """lambda = 1: the discounted sum of the rewards to the end of the episode inside the
    rollout, plus gamma^k max_a Q(s', a) when it was truncated (or the rollout ended) after k
    steps -- a forward sum, not the recursion."""
    r, m, term, trunc, gamma = random_rollout(seed)
    T, N = r.shape
    expected = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, k = 0.0, t
            while True:
                total += gamma ** (k - t) * r[k, n]
                if term[k, n]:
                    break
                if trunc[k, n] or k == T - 1:
                    total += gamma ** (k - t + 1) * m[k, n]
                    break
                k += 1
            expected[t, n] = total
    np.testing.assert_allclose(q_lambda(r, m, term, trunc, gamma, 1.0), expected,
                               rtol=1e-4, atol=1e-4)


def test_q_network_has_layer_norm_after_every_hidden_layer():
    spec = purerl.envs.make("CartPole-v1").spec
    obs = jax.random.normal(jax.random.key(0), (5,) + spec.obs_shape)
    for layer_norm in (True, False):
        net = pqn.make_network(pqn.Config(hidden_sizes=(32, 16), layer_norm=layer_norm), spec)
        params = net.init(jax.random.key(1), obs)
        names = [k for k in params["params"]["MLP_0"] if k.startswith("LayerNorm")]
        assert names == (["LayerNorm_0", "LayerNorm_1"] if layer_norm else [])
        # LayerNorm makes the network invariant to a positive rescaling of a hidden layer's
        # pre-activation: scale the first Dense layer by 7
        scaled = jax.tree.map(lambda x: x, params)
        first = scaled["params"]["MLP_0"]["Dense_0"]
        scaled["params"]["MLP_0"]["Dense_0"] = {k: 7.0 * v for k, v in first.items()}
        same = np.allclose(net.apply(params, obs), net.apply(scaled, obs), rtol=1e-4, atol=1e-4)
        assert same == layer_norm


def test_an_update_regresses_on_the_q_lambda_returns_of_its_rollout(purerl_jit_level0):
    """make_batch's targets, recomputed from the rollout with the network and the NumPy
    recursion; and with one epoch of one minibatch, the update is one Adam step on
    E[(Q(s, a) - G)^2] / 2 of that batch."""
    cfg = pqn.Config(**{**SMALL["pqn"], "update_epochs": 1, "num_minibatches": 1})
    agent = pqn.make_agent(cfg)
    state = agent.init(jax.random.key(3))
    for _ in range(2):
        state, _ = purerl.jit(agent.update)(state)
    spec = purerl.envs.make("CartPole-v1").spec
    net = pqn.make_network(cfg, spec)
    env = purerl.envs.make("CartPole-v1")
    eps = float(cfg.epsilon(state.run.env_steps))

    def policy(obs, key):
        a = noise.epsilon_greedy(key, net.apply(state.params, obs), eps)
        return a, a

    _, traj = purerl.rollout.collect(env, policy, jax.random.key(5), state.run.env_state,
                                     cfg.num_steps)
    batch = pqn.make_batch(net, cfg, state.params, state.run.obs_norm, traj)
    m = np.asarray(net.apply(state.params, traj.next_obs)).max(-1)
    expected = q_lambda_reference(np.asarray(traj.reward), m, np.asarray(traj.terminated),
                                  np.asarray(traj.truncated), cfg.gamma, cfg.q_lambda)
    np.testing.assert_allclose(batch.target, expected.reshape(-1), rtol=1e-4, atol=1e-4)
    assert batch.obs.shape[0] == cfg.steps_per_update


def test_epsilon_is_the_linear_schedule_at_each_rollouts_start():
    _, _, _, metrics = vmapped_run("pqn", seeds=2, level=0)
    cfg = pqn.Config(**SMALL["pqn"])
    steps = np.arange(cfg.num_updates) * cfg.steps_per_update
    horizon = cfg.exploration_fraction * cfg.total_timesteps
    expected = cfg.epsilon_start + (cfg.epsilon_end - cfg.epsilon_start) * np.minimum(
        1.0, steps / horizon)
    np.testing.assert_allclose(np.asarray(metrics["epsilon"]), np.tile(expected, (2, 1)),
                               rtol=1e-5, atol=1e-6)
    assert np.isfinite(np.asarray(metrics["loss"])).all()


def test_continuous_actions_and_bad_values_are_one_line_errors():
    with pytest.raises(ValueError, match=r"pqn.*Pendulum-v1"):
        pqn.make_train({"env": "Pendulum-v1"})
    with pytest.raises(ValueError, match="num_minibatches"):
        pqn.Config(num_envs=4, num_steps=5, num_minibatches=3)
    with pytest.raises(ValueError, match="q_lambda"):
        pqn.Config(q_lambda=1.5)
    with pytest.raises(ValueError, match="epsilon_end"):
        pqn.Config(epsilon_start=0.1, epsilon_end=0.5)


def test_options_compile_and_report_finite_losses():
    for opts in [dict(loss="huber", anneal_lr=True, layer_norm=False),
                 dict(normalize_obs=True, q_lambda=0.0)]:
        _, m = jit_level0(pqn.make_train({**SMALL["pqn"], **opts}))(jax.random.key(2))
        assert np.isfinite(np.asarray(m["loss"])).all(), opts
        assert (np.asarray(m["td_error"]) >= 0).all()


@pytest.mark.slow
def test_pqn_defaults_learn_cartpole_at_a_ci_budget():
    # the defaults (rejax's CartPole config) over 96 rollouts instead of 256: 500 and 500 on
    # these seeds, about 25 s on the 2-core CPU
    config = pqn.Config(total_timesteps=96 * 16 * 128, eval_every=0)
    final = final_seed_evals(pqn, config, seeds=2)
    assert final.mean() >= 400, final
