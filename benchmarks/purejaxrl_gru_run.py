"""``../shared/peers/purejaxrl_run.py`` with flax's ``GRUCell`` initialised without LAPACK QR.

The shared runner swaps ``flax.linen.initializers.orthogonal`` for a QR-free version before it
imports PureJaxRL, which covers every ``orthogonal`` PureJaxRL's code calls. ``nn.GRUCell``'s
``recurrent_kernel_init`` default, though, was built with the QR one when flax was imported, so
``ppo_rnn.py``'s GRU still initialises through a QR custom call vmapped over seeds, and that
call (``jax::ParallelBatchMap``) now and then deadlocks XLA:CPU's thread pool on these 2-core
machines: the peer's process sleeps forever (seen on 2026-12-06 and 2026-12-07). This wrapper
replaces that default with a QR-free orthogonal initialiser (Gram-Schmidt twice on a normal
matrix: orthonormal columns from the same distribution as QR's up to column signs, as the
shared runner's) and runs the shared runner unchanged. Usage: as ``purejaxrl_run.py``.
"""
from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp


def qr_free_orthogonal(scale: float = 1.0):
    def init(key, shape, dtype=jnp.float32):
        rows, cols = shape  # a GRU's recurrent kernels: [H, H]
        a = jax.random.normal(key, (max(rows, cols), min(rows, cols)), dtype)

        def next_column(q, j):
            v = a[:, j]
            for _ in range(2):  # Gram-Schmidt twice: orthogonal to float32 precision
                v = v - q @ (q.T @ v)
            return q.at[:, j].set(v / jnp.linalg.norm(v)), None

        q, _ = jax.lax.scan(next_column, jnp.zeros_like(a), jnp.arange(a.shape[1]))
        return scale * (q if rows >= cols else q.T)

    return init


def patch_gru_cell() -> None:
    init = qr_free_orthogonal()
    field = nn.GRUCell.__dataclass_fields__["recurrent_kernel_init"]
    field.default = init
    # the dataclass __init__ (under flax's wrapper) holds the default it was generated with
    ctor = getattr(nn.GRUCell.__init__, "__wrapped__", nn.GRUCell.__init__)
    names = ctor.__code__.co_varnames[1:ctor.__code__.co_argcount]
    defaults = list(ctor.__defaults__ or ())
    offset = len(names) - len(defaults)
    for i, name in enumerate(names[offset:]):
        if name == "recurrent_kernel_init":
            defaults[i] = init
    ctor.__defaults__ = tuple(defaults)
    kw = dict(ctor.__kwdefaults__ or {})
    if "recurrent_kernel_init" in kw:
        kw["recurrent_kernel_init"] = init
        ctor.__kwdefaults__ = kw
    assert nn.GRUCell(features=2).recurrent_kernel_init is init


if __name__ == "__main__":
    patch_gru_cell()
    peers = os.environ.get("PEERS_DIR") or Path(__file__).resolve().parents[2] / "shared" / "peers"
    runner = Path(peers) / "purejaxrl_run.py"  # where benchmarks/peers.py finds it
    sys.argv = [str(runner)] + sys.argv[1:]
    runpy.run_path(str(runner), run_name="__main__")
