"""Threefry-2x32 keys whose hash compiles to one fused kernel on every backend.

JAX lowers its Threefry-2x32 hash (Salmon et al. 2011, "Parallel random numbers: as easy as
1, 2, 3", section 3) differently per backend: on GPU as 20 unrolled rounds, which XLA fuses into
one elementwise kernel; on CPU as a ``while`` loop of five 4-round steps, to keep compilation
short. Inside a training loop every ``split``, ``fold_in`` and draw then runs its own loop of
about 80 tiny operations: a rolled ``jax.random.split`` costs ~1.1 us on the 2-core CPU of
``benchmarks/RESULTS.md`` against 0.06 us unrolled, and a PPO rollout step (key splits, the
categorical sample, gymnax's auto-reset draw) executes about 500 operations instead of 32.

:data:`THREEFRY` is a PRNG implementation with the *same* generator -- key layout, ``split``,
``fold_in`` and ``random_bits`` equal to ``jax.random``'s default ``threefry2x32`` bit for bit
(``jax_threefry_partitionable`` mode, JAX's default) -- whose hash is written out unrolled in
``jax.numpy``. :func:`unrolled` re-wraps a default key's data as such a key; every trainer's
:class:`purerl.loop.RunState` does so for its training key, and :mod:`purerl.envs` for the
keys it resets and steps environments with (an environment may keep keys in its state), so
results are those of the default generator and only the compiled program changes. Keys of any
other implementation (``rbg``, ``unsafe_rbg``, custom ones) are left as they are.

The unrolled hash trades compile time for run time. Fused with what consumes its bits, it makes
large straight-line kernels that LLVM optimises slowly when their arrays are tiny: a single
seed's (unbatched) SAC program compiles in 10.4 s with it and 3.6 s without, PPO's in 5.0 s and
2.8 s, while a vmapped program compiles about as fast either way (benchmarks/RESULTS.md,
"Compile time of the test suite"). Setting the environment variable ``PURERL_UNROLLED_PRNG=0``
keeps the default generator instead (:func:`unrolling`): the same random numbers, the programs
of JAX's own lowering. Set it alike for a run and its resumes: a resumed run is bitwise the
uninterrupted one only when both are compiled the same way (like ``XLA_FLAGS``).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

# Threefry-2x32-20's rotation constants (Salmon et al. 2011, table 4), used in turn by the
# five groups of four rounds, and the key-schedule parity constant C240.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x: jax.Array, r: int) -> jax.Array:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(key: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 hash with 20 rounds of the counter pair ``(x0, x1)`` (uint32 arrays of
    one shape) under ``key`` (uint32 ``[2]``).

    With the key schedule ``k = (k0, k1, k0 ^ k1 ^ C240)``, after ``x += (k0, k1)`` each of five
    groups ``g = 0..4`` applies four rounds ``x0 += x1; x1 = rotl(x1, R) ^ x0`` and injects
    ``x0 += k[(g + 1) % 3]``, ``x1 += k[(g + 2) % 3] + g + 1``.
    """
    k = (key[0], key[1], key[0] ^ key[1] ^ _PARITY)
    x0, x1 = x0 + k[0], x1 + k[1]
    for group in range(5):
        for r in _ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, r) ^ x0
        x0 = x0 + k[(group + 1) % 3]
        x1 = x1 + k[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1


def _counters(shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """The flat index of every position of ``shape`` as a 64-bit counter (high, low words)."""
    size = int(np.prod(shape, dtype=np.int64))
    if size >= 2 ** 32:
        raise ValueError(f"purerl.prng: {size} random values in one draw exceed 2^32")
    low = jax.lax.iota(jnp.uint32, size).reshape(shape)
    return jnp.zeros(shape, jnp.uint32), low


def _seed(seed: jax.Array) -> jax.Array:
    return jax.random.key_data(jax.random.key(seed, impl="threefry2x32"))


def _split(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    bits0, bits1 = threefry2x32(key, *_counters(tuple(shape)))
    return jnp.stack([bits0, bits1], axis=-1)


def _fold_in(key: jax.Array, data: jax.Array) -> jax.Array:
    # the hash of the counter pair (0, data): a uint32 datum as a 64-bit seed
    data = jnp.asarray(data).astype(jnp.uint32).reshape(1)
    bits0, bits1 = threefry2x32(key, jnp.zeros_like(data), data)
    return jnp.concatenate([bits0, bits1])


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    bits0, bits1 = threefry2x32(key, *_counters(tuple(shape)))
    if bit_width == 64:
        return (bits0.astype(jnp.uint64) << np.uint64(32)) | bits1.astype(jnp.uint64)
    dtype = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32}[bit_width]
    return (bits0 ^ bits1).astype(dtype)


THREEFRY = jax.extend.random.define_prng_impl(
    key_shape=(2,), seed=_seed, split=_split, random_bits=_random_bits, fold_in=_fold_in,
    name="purerl_threefry2x32", tag="fry")
"""``jax.random``'s ``threefry2x32`` generator with the hash unrolled (see the module doc)."""


@functools.lru_cache(maxsize=None)
def _key_dtype(impl) -> jax.typing.DTypeLike:
    return jax.eval_shape(lambda: jax.random.key(0, impl=impl)).dtype


UNROLL_ENV = "PURERL_UNROLLED_PRNG"


def unrolling() -> bool:
    """Whether :func:`unrolled` converts keys: unless the environment variable
    ``PURERL_UNROLLED_PRNG`` is ``0`` (``1``, the default, converts). Read when a program is
    traced."""
    value = os.environ.get(UNROLL_ENV, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{UNROLL_ENV}={value!r}: expected 0 or 1")
    return value == "1"


def unrolled(key: jax.Array) -> jax.Array:
    """``key`` as a :data:`THREEFRY` key holding the same data, where it is a default
    ``threefry2x32`` key (typed, or a raw ``uint32[..., 2]`` array), JAX runs in its default
    ``jax_threefry_partitionable`` mode (under the other mode the two generators differ) and
    :func:`unrolling` is on; otherwise ``key`` unchanged."""
    if not jax.config.jax_threefry_partitionable or not unrolling():
        return key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.dtype != _key_dtype("threefry2x32"):
            return key
        key = jax.random.key_data(key)
    elif key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
        return key
    return jax.random.wrap_key_data(key, impl=THREEFRY)


def to_default(tree):
    """``tree`` with every :data:`THREEFRY` key (array or ``jax.ShapeDtypeStruct``) as a
    default ``threefry2x32`` key of the same data: what a checkpoint stores, since
    orbax-checkpoint restores typed keys by the name of a generator JAX knows."""
    fast, default = _key_dtype(THREEFRY), _key_dtype("threefry2x32")

    def one(x):
        if getattr(x, "dtype", None) != fast:
            return x
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(x.shape, default, sharding=x.sharding)
        return jax.random.wrap_key_data(jax.random.key_data(x), impl="threefry2x32")

    return jax.tree.map(one, tree)


def to_unrolled(tree):
    """``tree`` with every typed default ``threefry2x32`` key converted by :func:`unrolled`
    (raw ``uint32`` arrays are left alone: in a tree they need not be keys); the inverse of
    :func:`to_default` wherever :func:`unrolled` converts."""
    default = _key_dtype("threefry2x32")
    return jax.tree.map(lambda x: unrolled(x) if getattr(x, "dtype", None) == default else x,
                        tree)
