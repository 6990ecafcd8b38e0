"""purerl.prng: the unrolled Threefry-2x32 generator against the published known answers and
against jax.random's default generator, bit for bit; trainers' keys use it and give the same
runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purerl
from purerl import prng
from helpers import SMALL


def _u32(*values):
    return jnp.array(values, jnp.uint32)


@pytest.mark.parametrize("key,counter,expected", [
    # Random123's known-answer vectors for Threefry-2x32-20 (Salmon et al. 2011; kat_vectors)
    ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
])
def test_hash_matches_the_published_known_answers(key, counter, expected):
    y0, y1 = prng.threefry2x32(_u32(*key), _u32(counter[0]), _u32(counter[1]))
    assert (int(y0[0]), int(y1[0])) == expected


def _data(keys):
    return np.asarray(jax.random.key_data(keys))


def _pair(seed=7):
    default = jax.random.key(seed)
    return default, prng.unrolled(default)


@pytest.mark.parametrize("shape", [(), (5,), (2, 3)])
def test_split_equals_the_default_generator(shape):
    default, fast = _pair()
    assert jax.random.key_impl(fast) == prng.THREEFRY
    np.testing.assert_array_equal(_data(jax.random.split(fast, shape or 1)),
                                  _data(jax.random.split(default, shape or 1)))


@pytest.mark.parametrize("datum", [0, 1, 0xE7A1, 2 ** 31 + 5, 2 ** 32 - 1])
def test_fold_in_equals_the_default_generator(datum):
    default, fast = _pair()
    np.testing.assert_array_equal(_data(jax.random.fold_in(fast, datum)),
                                  _data(jax.random.fold_in(default, datum)))


@pytest.mark.parametrize("draw", [
    lambda k: jax.random.bits(k, (3, 7), jnp.uint8),
    lambda k: jax.random.bits(k, (3, 7), jnp.uint16),
    lambda k: jax.random.bits(k, (1001,), jnp.uint32),
    lambda k: jax.random.uniform(k, (4, 5)),
    lambda k: jax.random.normal(k, (999,)),
    lambda k: jax.random.categorical(k, jnp.zeros((50, 3))),
    lambda k: jax.random.randint(k, (100,), 0, 1000),
    lambda k: jax.random.permutation(k, 100),
    lambda k: jax.random.bernoulli(k, 0.3, (64,)),
], ids=["bits8", "bits16", "bits32", "uniform", "normal", "categorical", "randint",
        "permutation", "bernoulli"])
def test_draws_equal_the_default_generator_under_jit_and_vmap(draw):
    defaults = jax.random.split(jax.random.key(3), 4)
    fast = prng.unrolled(defaults)
    np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(draw))(fast)),
                                  np.asarray(jax.jit(jax.vmap(draw))(defaults)))


def test_unrolled_converts_raw_keys_and_leaves_other_generators_alone():
    raw = jax.random.PRNGKey(5)  # legacy uint32[2] threefry key data
    assert jax.random.key_impl(prng.unrolled(raw)) == prng.THREEFRY
    np.testing.assert_array_equal(_data(prng.unrolled(raw)), np.asarray(raw))
    rbg = jax.random.key(0, impl="rbg")
    assert prng.unrolled(rbg) is rbg
    floats = jnp.zeros(2)
    assert prng.unrolled(floats) is floats


def test_the_environment_variable_turns_the_unrolled_generator_off(monkeypatch):
    key = jax.random.key(3)
    monkeypatch.setenv(prng.UNROLL_ENV, "0")
    assert not prng.unrolling() and prng.unrolled(key) is key
    monkeypatch.setenv(prng.UNROLL_ENV, "yes")
    with pytest.raises(ValueError, match="PURERL_UNROLLED_PRNG='yes': expected 0 or 1"):
        prng.unrolled(key)
    monkeypatch.delenv(prng.UNROLL_ENV)
    assert prng.unrolling() and jax.random.key_impl(prng.unrolled(key)) == prng.THREEFRY


def test_unrolled_keeps_the_default_generator_when_jax_is_not_partitionable():
    # the other threefry mode derives split and bits differently; THREEFRY implements only the
    # default one, so keys stay default there and runs keep their meaning
    key = jax.random.key(0)
    with jax.threefry_partitionable(False):
        assert prng.unrolled(key) is key
        # nor does a restored checkpoint's state turn unrolled there (its run drew default keys)
        assert prng.to_unrolled({"key": key})["key"] is key
    assert prng.unrolled(key) is not key


def test_to_default_and_back_keeps_the_data_and_reaches_abstract_leaves():
    fast = prng.unrolled(jax.random.split(jax.random.key(1), 3))
    tree = {"key": fast, "x": jnp.ones(2)}
    default = prng.to_default(tree)
    assert jax.random.key_impl(default["key"]) == jax.random.key_impl(jax.random.key(0))
    np.testing.assert_array_equal(_data(default["key"]), _data(fast))
    back = prng.to_unrolled(default)
    assert jax.random.key_impl(back["key"]) == prng.THREEFRY
    assert back["x"] is tree["x"]
    abstract = prng.to_default(jax.eval_shape(lambda: tree))
    assert abstract["key"].dtype == jax.random.key(0).dtype
    assert abstract["key"].shape == (3,)


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_training_with_the_unrolled_keys_equals_training_with_default_keys(algo, monkeypatch):
    keys = jax.random.split(jax.random.key(0), 2)
    train = purerl.get_algorithm(algo).make_train(SMALL[algo])
    state, metrics = jax.jit(jax.vmap(train))(keys)
    assert jax.random.key_impl(state.run.key) == prng.THREEFRY
    monkeypatch.setattr(prng, "unrolled", lambda key: key)
    train = purerl.get_algorithm(algo).make_train(SMALL[algo])
    ref_state, ref_metrics = jax.jit(jax.vmap(train))(keys)
    assert jax.random.key_impl(ref_state.run.key) != prng.THREEFRY
    np.testing.assert_array_equal(_data(state.run.key), _data(ref_state.run.key))
    # the same random numbers drive both runs; only XLA's float fusion may differ
    for name in ("episode_count", "env_steps"):
        np.testing.assert_array_equal(np.asarray(metrics[name]), np.asarray(ref_metrics[name]))
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_checkpoints_store_default_keys_and_restore_unrolled_ones(tmp_path):
    from purerl import checkpoint, ppo

    config = ppo.Config.coerce(SMALL["ppo"])
    agent = ppo.make_agent(config)
    state = jax.vmap(agent.init)(jax.random.split(jax.random.key(4), 2))
    state = jax.vmap(lambda s: agent.update(s)[0])(state)
    assert jax.random.key_impl(state.run.key) == prng.THREEFRY
    checkpoint.save(tmp_path, config, state)
    restored = checkpoint.restore(tmp_path).state
    assert jax.random.key_impl(restored.run.key) == prng.THREEFRY
    np.testing.assert_array_equal(_data(restored.run.key), _data(state.run.key))
