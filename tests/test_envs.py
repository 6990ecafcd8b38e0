"""Environment construction and truncation-aware stepping (:mod:`purerl.envs`), running
observation normalisation (:mod:`purerl.normalize`) and action rescaling
(:mod:`purerl.spaces`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purerl import envs
from purerl.normalize import ObsNormalizer
from purerl.spaces import scale_action

# MNISTBandit downloads MNIST on construction; CI has no network. Playground ids (present only
# with the optional extra) have their own contract test in test_playground.py.
OFFLINE_IDS = [
    e for e in envs.registered() if e != "MNISTBandit-bsuite" and not e.startswith("playground/")
]


@pytest.mark.parametrize("name", OFFLINE_IDS)
def test_make_spec_matches_the_environment(name):
    gymnax_env, params, spec = envs.make(name)
    obs, _ = gymnax_env.reset(jax.random.key(0), params)
    assert spec.obs_shape == obs.shape
    assert spec.max_episode_steps == params.max_steps_in_episode
    space = gymnax_env.action_space(params)
    if spec.discrete:
        assert spec.num_actions == space.n and spec.action_shape == ()
    else:
        assert spec.action_low.shape == spec.action_shape
        assert np.all(spec.action_low < spec.action_high)


def test_unknown_env_names_the_closest_ids():
    """The closest few ids and where the rest are listed, not all of them (a long line)."""
    with pytest.raises(ValueError, match="CartPole-v1") as exc:
        envs.make("CartPol-v1")
    message = str(exc.value)
    assert "'purerl list' lists all" in message and len(message) < 200, message
    assert "Breakout-MinAtar" not in message


@pytest.mark.parametrize("make", [envs.make, envs.make_env])
def test_unknown_keyword_argument_is_a_one_line_error_naming_the_env(make):
    with pytest.raises(ValueError, match=r"'CartPole-v1'.*max_step") as exc:
        make("CartPole-v1", max_step=10)
    assert "\n" not in str(exc.value)


def test_step_reports_real_next_observation_and_truncation():
    env = envs.make("Pendulum-v1")  # never terminates, truncates at 200
    spec = env.spec
    state = env.reset(jax.random.key(0), 3)
    step = jax.jit(lambda s, k: env.step(k, s, jnp.zeros((3, 1))))
    returns = np.zeros(3)
    for t in range(spec.max_episode_steps):
        prev_obs = state.obs
        state, tr = step(state, jax.random.key(t))
        returns += np.asarray(tr.reward)
        if t < spec.max_episode_steps - 1:
            assert not tr.truncated.any() and not tr.terminated.any()
            np.testing.assert_allclose(tr.next_obs, state.obs)
            assert tr.completed_return.sum() == 0
    assert tr.truncated.all() and not tr.terminated.any()
    # the final observation continues the old episode; the carried observation is a reset one
    assert not np.allclose(tr.next_obs, state.obs)
    assert np.abs(tr.next_obs - prev_obs).max() < 1.0
    np.testing.assert_allclose(tr.completed_return, returns, rtol=1e-5)
    assert (np.asarray(state.episode_return) == 0).all()


def test_cartpole_termination_is_not_truncation():
    env = envs.make("CartPole-v1")
    state = env.reset(jax.random.key(1), 2)
    step = jax.jit(lambda s, k: env.step(k, s, jnp.ones((2,), jnp.int32)))
    for t in range(100):  # always pushing right topples the pole well before 500 steps
        state, tr = step(state, jax.random.key(t))
        if tr.terminated.any():
            break
    assert tr.terminated.any() and not tr.truncated.any()


def test_running_obs_normalisation_matches_numpy_moments():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(rng.integers(1, 50), 4)) for _ in range(20)]
    norm = ObsNormalizer.create((4,))
    for b in batches:
        norm = norm.update(jnp.asarray(b, jnp.float32))
    data = np.concatenate(batches)
    np.testing.assert_allclose(norm.mean, data.mean(0), rtol=1e-4)
    np.testing.assert_allclose(norm.var, data.var(0), rtol=1e-3)
    z = norm(jnp.asarray(data, jnp.float32))
    np.testing.assert_allclose(np.asarray(z).mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.asarray(z).std(0), 1.0, atol=1e-3)


def test_masked_obs_normalisation_uses_only_unmasked_rows():
    rng = np.random.default_rng(1)
    batches = [rng.normal(-1.0, 3.0, size=(rng.integers(2, 40), 3)) for _ in range(10)]
    masks = [rng.random(len(b)) < 0.5 for b in batches]
    norm = ObsNormalizer.create((3,))
    for b, m in zip(batches, masks):
        norm = norm.update(jnp.asarray(b, jnp.float32), jnp.asarray(m))
    data = np.concatenate([b[m] for b, m in zip(batches, masks)])
    np.testing.assert_allclose(norm.mean, data.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(norm.var, data.var(0), rtol=1e-3)


def test_disabled_obs_normaliser_is_the_identity_and_holds_no_arrays():
    norm = ObsNormalizer.create((4,), enabled=False)
    assert not norm.enabled and jax.tree.leaves(norm) == []
    obs = jnp.asarray(np.random.default_rng(2).normal(5.0, 3.0, size=(7, 4)), jnp.float32)
    assert norm(obs) is obs
    assert norm.update(obs) is norm
    assert norm.update(obs, jnp.arange(7) % 2 == 0) is norm


def test_scale_action_maps_unit_box_to_bounds():
    low, high = np.array([-2.0, 0.0]), np.array([2.0, 1.0])
    a = scale_action(jnp.array([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]]), low, high)
    np.testing.assert_allclose(a, [[-2.0, 0.0], [0.0, 0.5], [2.0, 1.0]])
