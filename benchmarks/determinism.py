"""What is bitwise and what agrees only to rounding: for each trainer, compare one
``jax.vmap(train)`` call with single runs of the same keys, with plain ``jax.jit``, with
``loop.run_chunked`` and with itself.

    python benchmarks/determinism.py [ALGO ...] [--seeds 2] [--no-record]

For each comparison it reports the first update whose metrics differ at all (``first bit``) and
the first whose metrics differ by more than 1% of their scale (``diverged``: float rounding has
grown into a different training run), and the final deterministic evaluations. The runs use the
configs below (each algorithm's defaults, on its default environment, at a learning budget).
Adds its rows to the determinism table of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime

import jax
import numpy as np
from results_md import add_rows
from throughput import machine

import purerl
from purerl import loop


CONFIGS = {
    "reinforce": dict(total_timesteps=40 * 16 * 500),
    "actor_critic": dict(total_timesteps=40 * 16 * 500),
    "a2c": dict(),
    "a3c": dict(),
    "ppo": dict(),
    "trpo": dict(total_timesteps=150_000),
    "dqn": dict(),
    "ddpg": dict(),
    "td3": dict(),
    "sac": dict(),
}


def divergence(a: dict, b: dict) -> tuple[str, str]:
    """(first update with any difference, first with a difference above 1% of the scale)."""
    names = sorted(k for k in a if np.issubdtype(np.asarray(a[k]).dtype, np.floating))
    n = np.asarray(a[names[0]]).shape[-1]
    any_diff = np.zeros(n, bool)
    big_diff = np.zeros(n, bool)
    for k in names:
        x, y = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64)
        x, y = x.reshape(-1, n), y.reshape(-1, n)
        both = ~(np.isnan(x) & np.isnan(y))
        d = np.where(both, np.abs(np.nan_to_num(x) - np.nan_to_num(y)), 0.0)
        scale = np.nanmax(np.abs(y)) + 1e-6
        any_diff |= (d > 0).any(0)
        big_diff |= (d > 0.01 * scale).any(0)

    def first(mask):
        return "never" if not mask.any() else str(int(np.argmax(mask)) + 1)

    return first(any_diff), first(big_diff)


def compare(algo: str, seeds: int) -> list[tuple[str, ...]]:
    module = purerl.get_algorithm(algo)
    config = module.Config(**CONFIGS[algo])
    agent = module.make_agent(config)
    train = loop.make_train_fn(agent)
    keys = jax.random.split(jax.random.key(0), seeds)
    _, vmapped = purerl.jit(jax.vmap(train))(keys)
    vmapped = jax.device_get(vmapped)
    runs = {
        "vmap(train) again": [jax.device_get(purerl.jit(jax.vmap(train))(keys)[1])],
        "single runs, purerl.jit": [jax.device_get(purerl.jit(train)(k)[1]) for k in keys],
        "single runs, jax.jit": [jax.device_get(jax.jit(train)(k)[1]) for k in keys],
        "run_chunked (chunk 10)": [{k: np.concatenate([c[2][k] for c in chunks], 1)
                                    for k in chunks[0][2]}
                                   for chunks in [list(loop.run_chunked(agent, keys, chunk=10))]],
    }
    rows = []
    for name, results in runs.items():
        other = results[0] if len(results) == 1 else {
            k: np.stack([r[k] for r in results]) for k in results[0]}
        first_bit, diverged = divergence(other, vmapped)
        finals = np.asarray(other["eval_return"])[:, -1]
        rows.append((algo, name, str(agent.num_updates), first_bit, diverged,
                     " / ".join(f"{v:.1f}" for v in finals),
                     " / ".join(f"{v:.1f}" for v in np.asarray(vmapped["eval_return"])[:, -1])))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("algos", nargs="*", default=list(CONFIGS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    header = ("| date | machine | jax | seeds | algo | compared with vmap(train) | updates | "
              "first bit | diverged (>1%) | final evals | vmap(train) final evals |\n"
              + "|---" * 11 + "|")
    run = (str(datetime.date.today()), machine(), jax.__version__, str(args.seeds))
    lines = []
    for algo in args.algos:  # import every trainer before the long runs start
        purerl.get_algorithm(algo)
    for algo in args.algos:
        for row in compare(algo, args.seeds):
            line = "| " + " | ".join(run + row) + " |"
            print(line, flush=True)
            lines.append(line)
    if not args.no_record:
        add_rows("Determinism (benchmarks/determinism.py)", header, lines)


if __name__ == "__main__":
    main()
