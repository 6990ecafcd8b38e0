"""The device replay buffer: transitions shaped for an environment, ring bookkeeping, sampling
only filled slots, uniformity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from purerl import replay
from purerl.spaces import EnvSpec

DISCRETE = EnvSpec("discrete", (3,), True, 4, (), None, None, 100)
CONTINUOUS = EnvSpec("continuous", (2, 5), False, None, (2,), np.array([-1.0, 0.0], np.float32),
                     np.array([1.0, 2.0], np.float32), 100)


def example():
    """One zero transition of a discrete environment with 3-dimensional observations."""
    return replay.example_transition(DISCRETE)


def batch(start, n, obs_dim=3):
    """n transitions whose fields all encode their global index start .. start + n - 1."""
    i = np.arange(start, start + n)
    obs = np.repeat(i[:, None], obs_dim, 1).astype(np.float32)
    return replay.Transition(jnp.asarray(obs), jnp.asarray(i), jnp.asarray(i, jnp.float32),
                             jnp.asarray(obs + 0.5), jnp.asarray(i % 2 == 0))


@pytest.mark.parametrize("spec, action_shape, action_dtype", [
    (DISCRETE, (), jnp.int32),
    (CONTINUOUS, (2,), jnp.float32),
])
def test_example_transition_is_shaped_for_the_spec(spec, action_shape, action_dtype):
    t = replay.example_transition(spec)
    for name, shape, dtype in [("obs", spec.obs_shape, jnp.float32),
                               ("action", action_shape, action_dtype),
                               ("reward", (), jnp.float32),
                               ("next_obs", spec.obs_shape, jnp.float32),
                               ("terminated", (), jnp.bool_)]:
        x = getattr(t, name)
        assert (x.shape, x.dtype) == (shape, dtype), name
    buf = replay.init(5, t)
    assert buf.data.obs.shape == (5,) + spec.obs_shape
    assert (buf.data.action.shape, buf.data.action.dtype) == ((5,) + action_shape, action_dtype)


def test_capacity_of_one_and_of_stacked_buffers():
    """Every seed's buffer stacked (a vmapped init, as a restored checkpoint holds) has the
    capacity of one buffer, not the seed count."""
    one = replay.init(5, example())
    stacked = jax.vmap(lambda _: replay.init(5, example()))(jnp.arange(3))
    assert stacked.data.obs.shape == (3, 5, 3)
    assert one.capacity == stacked.capacity == 5
    assert jax.vmap(lambda b: jnp.zeros(b.capacity))(stacked).shape == (3, 5)


def test_add_wraps_around_when_num_envs_does_not_divide_capacity():
    capacity, n = 10, 3  # 3 does not divide 10
    buf = replay.init(capacity, example())
    add = jax.jit(replay.add)
    ref = [None] * capacity
    pos = 0
    for step in range(7):
        buf = add(buf, batch(step * n, n))
        for i in range(step * n, step * n + n):
            ref[pos] = i
            pos = (pos + 1) % capacity
        assert int(buf.position) == pos
        assert int(buf.size) == min((step + 1) * n, capacity)
        filled = int(buf.size)
        np.testing.assert_array_equal(np.asarray(buf.data.action)[:filled], ref[:filled])
    # every field moved together; next_obs is stored as given
    np.testing.assert_array_equal(buf.data.obs[:, 0], buf.data.action)
    np.testing.assert_array_equal(buf.data.next_obs[:, 0], buf.data.action + 0.5)
    np.testing.assert_array_equal(buf.data.terminated, np.asarray(buf.data.action) % 2 == 0)


def test_sample_only_draws_filled_slots():
    buf = replay.init(100, example())
    buf = replay.add(buf, batch(0, 7))
    drawn = replay.sample(buf, jax.random.key(0), 5000)
    assert set(np.unique(np.asarray(drawn.action))) == set(range(7))
    np.testing.assert_array_equal(drawn.obs[:, 0], drawn.action)  # rows stay whole


def test_sampling_is_uniform_chi_square():
    buf = replay.init(50, example())
    for step in range(9):  # 63 writes into 50 slots: full, wrapped
        buf = replay.add(buf, batch(step * 7, 7))
    assert int(buf.size) == 50
    draws = np.asarray(jax.jit(replay.sample, static_argnums=2)(buf, jax.random.key(1), 100_000)
                       .action)
    values, counts = np.unique(draws, return_counts=True)
    assert set(values) == set(range(13, 63))  # the 50 newest transitions
    _, p = stats.chisquare(counts)
    assert p > 1e-3, p


def test_bad_sizes_are_errors():
    with pytest.raises(ValueError, match="capacity"):
        replay.init(0, example())
    with pytest.raises(ValueError, match="larger buffer"):
        replay.add(replay.init(4, example()), batch(0, 5))
