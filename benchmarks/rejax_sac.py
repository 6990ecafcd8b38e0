"""rejax 0.1.3's SAC on its tuned Pendulum-v1 config: the reference run of the SAC speed
comparison in RESULTS.md. Not part of purerl or its tests.

rejax 0.1.3 calls ``env.step`` with the five-value API of gymnax < 1.0 and ``jax.tree_map``
(removed from recent JAX), so it runs in a separate virtual environment that reuses this
machine's JAX and pins gymnax 0.0.8 (the shim below restores ``jax.tree_map``):

    python -m venv --system-site-packages /tmp/rejaxenv
    /tmp/rejaxenv/bin/pip install --no-deps rejax==0.1.3 gymnax==0.0.8
    /tmp/rejaxenv/bin/python benchmarks/rejax_sac.py [--eval-freq 100]

``--eval-freq`` is rejax's evaluation interval in env steps; its config uses 100, and each
evaluation runs 128 episodes. Prints compile time, run time after compilation and the final
mean evaluation return over 8 vmapped seeds.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

jax.tree_map = jax.tree.map  # rejax 0.1.3 / gymnax 0.0.8 use the removed alias
jax.tree_util.tree_map = jax.tree.map

from rejax import SAC  # noqa: E402 -- after the shim

CONFIG = dict(env="Pendulum-v1", agent_kwargs=dict(activation="swish"), num_envs=1,
              buffer_size=10_000, fill_buffer=256, batch_size=256, learning_rate=0.01,
              num_epochs=1, total_timesteps=10_000, gamma=0.99, polyak=0.98,
              target_entropy_ratio=None, normalize_observations=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-freq", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    algo = SAC.create(**CONFIG, eval_freq=args.eval_freq)
    keys = jax.random.split(jax.random.key(0), args.seeds)
    train = jax.jit(jax.vmap(SAC.train, in_axes=(None, 0)))
    t0 = time.perf_counter()
    compiled = train.lower(algo, keys).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, (_, returns) = jax.block_until_ready(compiled(algo, keys))
    run_s = time.perf_counter() - t0
    final = np.asarray(returns)[:, -1].mean(-1)
    print(f"rejax sac Pendulum-v1: {args.seeds} seeds, eval every {args.eval_freq} steps: "
          f"compile {compile_s:.1f} s, run {run_s:.1f} s, final eval {final.mean():.1f} ± "
          f"{final.std():.1f}")


if __name__ == "__main__":
    main()
