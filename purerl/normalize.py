"""Running observation normalisation, as an object that is the identity when disabled.

Every trainer keeps an :class:`ObsNormalizer` in its run state and calls it on observations
(``norm(obs)``) and ``norm.update(batch)`` after collecting; with ``normalize_obs=False`` both are
no-ops and the normaliser holds no arrays, so no trainer needs an ``if`` for it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ObsNormalizer:
    """Running mean / variance of observations, merged batch by batch with the parallel update of
    Chan, Golub & LeVeque (1979):

        n = n_a + n_b,  mean = mean_a + delta n_b / n,
        var = (var_a n_a + var_b n_b + delta^2 n_a n_b / n) / n,  delta = mean_b - mean_a,

    and applied as clip((obs - mean) / sqrt(var + 1e-8), -clip, clip). The count starts at 1e-4
    (with mean 0 and var 1) so the first division is defined. Disabled (``mean is None``), it
    returns observations unchanged and ``update`` returns itself.
    """

    mean: jax.Array | None
    var: jax.Array | None
    count: jax.Array | None
    clip: float = struct.field(pytree_node=False, default=10.0)

    @classmethod
    def create(cls, obs_shape: tuple[int, ...], enabled: bool = True,
               clip: float = 10.0) -> "ObsNormalizer":
        if not enabled:
            return cls(None, None, None, clip)
        return cls(jnp.zeros(obs_shape, jnp.float32), jnp.ones(obs_shape, jnp.float32),
                   jnp.asarray(1e-4, jnp.float32), clip)

    @property
    def enabled(self) -> bool:
        return self.mean is not None

    def __call__(self, obs: jax.Array) -> jax.Array:
        if not self.enabled:
            return obs
        return jnp.clip((obs - self.mean) / jnp.sqrt(self.var + 1e-8), -self.clip, self.clip)

    def update(self, batch: jax.Array, mask: jax.Array | None = None,
               axis_name: str | None = None) -> "ObsNormalizer":
        """Merge a batch ``[..., *obs_shape]`` into the moments (only the observations where
        ``mask[...]`` is true, if given). ``axis_name`` (data-parallel runs, inside
        ``shard_map``): ``batch`` is this device's share and the moments merged are those of
        every device's batch together (the same on every device)."""
        if not self.enabled:
            return self
        obs_ndim = self.mean.ndim
        flat = batch.reshape((-1,) + batch.shape[batch.ndim - obs_ndim:]).astype(jnp.float32)
        if mask is None:
            n_b = jnp.asarray(flat.shape[0], jnp.float32)
            b_mean = flat.mean(0)
            b_var = flat.var(0)
        else:
            w = mask.reshape((-1,) + (1,) * obs_ndim).astype(jnp.float32)
            n_b = w.sum()
            b_mean = (w * flat).sum(0) / jnp.maximum(n_b, 1.0)
            b_var = (w * jnp.square(flat - b_mean)).sum(0) / jnp.maximum(n_b, 1.0)
        if axis_name is not None:
            # the union of the devices' batches: pooled mean, within- plus between-device var
            n_all = jax.lax.psum(n_b, axis_name)
            mean_all = jax.lax.psum(n_b * b_mean, axis_name) / jnp.maximum(n_all, 1.0)
            b_var = jax.lax.psum(n_b * (b_var + jnp.square(b_mean - mean_all)),
                                 axis_name) / jnp.maximum(n_all, 1.0)
            n_b, b_mean = n_all, mean_all
        n = self.count + n_b
        delta = b_mean - self.mean
        mean = self.mean + delta * n_b / n
        m2 = self.var * self.count + b_var * n_b + delta**2 * self.count * n_b / n
        return self.replace(mean=mean, var=m2 / n, count=n)
