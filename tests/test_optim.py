"""optim.random_permutation (the minibatch shuffle) and optim.minibatch_epochs: every index
exactly once, a uniform distribution over permutations (chi-square against the exact 1/n!),
uniform positions for a PPO-sized batch, and minibatches that partition the batch."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from purerl import optim


@pytest.mark.parametrize("n", [1, 2, 3, 5, 128, 500, 512, 4096, 70_000, (1 << 20) + 3])
def test_random_permutation_holds_every_index_once(n):
    perm = np.asarray(jax.jit(optim.random_permutation, static_argnums=1)(jax.random.key(n), n))
    assert perm.dtype == np.int32 and perm.shape == (n,)
    np.testing.assert_array_equal(np.sort(perm), np.arange(n))


def test_random_permutation_of_4_is_uniform_over_the_24_orders():
    draws = 24_000
    perms = np.asarray(jax.jit(jax.vmap(lambda k: optim.random_permutation(k, 4)))(
        jax.random.split(jax.random.key(0), draws)))
    index = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([index[tuple(p)] for p in perms], minlength=math.factorial(4))
    assert stats.chisquare(counts).pvalue > 1e-3, counts


def test_random_permutation_of_a_ppo_batch_puts_each_index_anywhere_uniformly():
    # 512 = PureJaxRL's CartPole batch: element i's position, binned into the 4 minibatches,
    # is uniform for the first and last indices (two rounds of sorting, see the docstring)
    n, draws = 512, 4000
    perms = np.asarray(jax.jit(jax.vmap(lambda k: optim.random_permutation(k, n)))(
        jax.random.split(jax.random.key(1), draws)))
    where = np.argsort(perms, axis=1)  # position of each index
    for i in (0, 1, n - 1):
        counts = np.bincount(where[:, i] // (n // 4), minlength=4)
        assert stats.chisquare(counts).pvalue > 1e-3, (i, counts)
    # adjacent indices land in the same minibatch with probability (n/4 - 1) / (n - 1)
    same = np.mean(where[:, 0] // (n // 4) == where[:, 1] // (n // 4))
    assert abs(same - (n / 4 - 1) / (n - 1)) < 0.03


def test_minibatch_epochs_partitions_each_epoch_into_disjoint_minibatches():
    n, epochs, minibatches = 96, 3, 4
    batch = {"i": jnp.arange(n), "x": jnp.arange(n, dtype=jnp.float32)[:, None] * 2.0}

    def step(carry, mb):
        return carry + 1, mb

    count, seen = optim.minibatch_epochs(step, 0, batch, jax.random.key(3), epochs, minibatches)
    assert int(count) == epochs * minibatches
    i = np.asarray(seen["i"])
    assert i.shape == (epochs, minibatches, n // minibatches)
    np.testing.assert_allclose(np.asarray(seen["x"])[..., 0], 2.0 * i)  # leaves stay aligned
    for e in range(epochs):
        np.testing.assert_array_equal(np.sort(i[e].ravel()), np.arange(n))
    assert not np.array_equal(i[0], i[1])  # each epoch reshuffles
