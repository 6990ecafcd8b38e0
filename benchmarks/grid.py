"""Tune a preset with one compiled program: a grid of one traced hyperparameter x seeds.

    python benchmarks/grid.py ppo Breakout-MinAtar --grid lr=2.5e-3,5e-3,1e-2 --seeds 4 \
        --steps 2000000 [--set torso=mlp --set hidden_sizes=64,64 ...] [--no-preset]

The config is the environment's preset (unless ``--no-preset``) with ``--set`` on top and the
budget ``--steps``; every grid value x every seed trains in one ``purerl.jit`` call (the grid's
hyperparameter is traced, ``jax.vmap`` over both axes). Prints, per value, the final
deterministic evaluation (mean ± std over seeds), the mean return of the training episodes of
the last 10 updates (PureJaxRL's measure) and the wall time of the whole program (compilation
included), and appends one row per value to ``benchmarks/RESULTS.md`` ("Tuning grids"), so
where a preset's chosen value sits in its grid is on record.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from throughput import machine

import purerl
from purerl import cli, presets

HERE = Path(__file__).parent
HEADER = ("| date | machine | algo | env | config (beyond the preset) | env steps / seed | seeds | "
          "grid value | final eval (mean ± std) | training episodes, last 10 updates | wall s "
          "(whole grid, incl. compile) |\n|---|---|---|---|---|---|---|---|---|---|---|\n")


def training_return(metrics: dict) -> np.ndarray:
    """Mean return of the episodes that ended in the last 10 updates, per run."""
    count = np.asarray(metrics["episode_count"])[..., -10:]
    total = np.nansum(np.asarray(metrics["episode_return"])[..., -10:] * count, axis=-1)
    return total / np.maximum(count.sum(axis=-1), 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("algo")
    parser.add_argument("env")
    parser.add_argument("--grid", required=True, metavar="KEY=V1,V2,...")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-preset", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)

    module = purerl.get_algorithm(args.algo)
    key, _, values = args.grid.partition("=")
    grid = [float(v) for v in values.split(",")]
    if key not in module.Config.hparam_names():
        raise SystemExit(f"{key} is not a traced hyperparameter of {args.algo}: "
                         f"{', '.join(module.Config.hparam_names())}")
    preset = None if args.no_preset else presets.lookup(args.algo, args.env)
    overrides = cli.parse_overrides(args.set, module.Config)
    config = module.Config.from_dict({**(preset.overrides if preset else {}), **overrides,
                                      "env": args.env, "total_timesteps": args.steps})
    train = module.make_train(config)
    keys = jax.random.split(jax.random.key(0), args.seeds)
    hparams = {key: jnp.asarray(grid, jnp.float32)}
    sweep = jax.vmap(jax.vmap(train, in_axes=(0, None)), in_axes=(None, 0))
    start = time.perf_counter()
    _, metrics = jax.block_until_ready(purerl.jit(sweep)(keys, hparams))
    wall = time.perf_counter() - start
    metrics = jax.device_get(metrics)
    finals = np.asarray(metrics["eval_return"])[:, :, -1]  # [grid, seeds]
    training = training_return(metrics)
    described = " ".join(args.set) or "(preset)"
    if args.no_preset:
        described = "--no-preset " + described
    rows = []
    for i, value in enumerate(grid):
        line = (f"{key}={value:g}: final eval {finals[i].mean():.1f} ± {finals[i].std():.1f} "
                f"{np.round(finals[i], 1).tolist()}, training episodes {training[i].mean():.1f}")
        print(line, flush=True)
        rows.append(f"| {datetime.date.today()} | {machine()} | {args.algo} | {args.env} | "
                    f"{described} | {args.steps} | {args.seeds} | {key}={value:g} | "
                    f"{finals[i].mean():.1f} ± {finals[i].std():.1f} | {training[i].mean():.1f} | "
                    f"{wall:.0f} |")
    print(f"wall {wall:.0f} s for {len(grid)} values x {args.seeds} seeds", file=sys.stderr)
    if not args.no_record:
        sys.path.insert(0, str(HERE))
        from results_md import add_rows

        add_rows("Tuning grids (benchmarks/grid.py)", HEADER, rows)


if __name__ == "__main__":
    main()
