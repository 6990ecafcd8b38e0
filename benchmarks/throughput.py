"""Throughput of a purerl trainer: compile time, run time and env steps per second.

    python benchmarks/throughput.py ALGO ENV --seeds N [--set key=value ...] [--plain-jit]

Trains N vmapped seeds in one compiled program, then prints the timings and appends a row to
benchmarks/RESULTS.md. Compile time is lowering + XLA compilation; run time is one full
training run after compilation (``block_until_ready``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import jax
import numpy as np

import purerl
from purerl.cli import parse_overrides
from results_md import add_rows

HEADER = ("| date | machine | algo | env | seeds | env steps / seed | jit | compile s | run s "
          "| env steps/s | final eval (mean ± std) | overrides |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|\n")


def machine() -> str:
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"CPU {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    return f"{dev.platform.upper()} {dev.device_kind}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("algo")
    parser.add_argument("env")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--plain-jit", action="store_true",
                        help="jax.jit without purerl.compiler_options()")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)

    module = purerl.get_algorithm(args.algo)
    overrides = parse_overrides(args.set, module.Config)
    config = module.Config.from_dict({**overrides, "env": args.env})
    train = jax.vmap(module.make_train(config))
    jitted = jax.jit(train) if args.plain_jit else purerl.jit(train)
    keys = jax.random.split(jax.random.key(0), args.seeds)

    t0 = time.perf_counter()
    compiled = jitted.lower(keys).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, metrics = jax.block_until_ready(compiled(keys))
    run_s = time.perf_counter() - t0

    # per-seed step counts differ for whole-episode trainers (reinforce, batch actor-critic)
    seed_steps = np.asarray(metrics["env_steps"][:, -1])
    steps = int(seed_steps.mean())
    final = np.asarray(metrics["eval_return"][:, -1])
    sps = seed_steps.sum() / run_s
    print(f"{args.algo} {args.env}: {args.seeds} seeds x {steps} env steps on {machine()}")
    print(f"compile {compile_s:.1f} s, run {run_s:.1f} s, {sps:,.0f} env steps/s, "
          f"final eval {final.mean():.1f} ± {final.std():.1f}")
    if not args.no_record:
        row = (f"| {datetime.date.today()} | {machine()} | {args.algo} | {args.env} | "
               f"{args.seeds} | {steps} | {'jax.jit' if args.plain_jit else 'purerl.jit'} | "
               f"{compile_s:.1f} | {run_s:.1f} | {sps:,.0f} | {final.mean():.1f} ± "
               f"{final.std():.1f} | {' '.join(args.set) or '-'} |")
        record(row)


def record(row: str) -> None:
    """Add ``row`` to RESULTS.md's throughput table."""
    add_rows("Throughput runs (benchmarks/throughput.py)", HEADER, [row])


if __name__ == "__main__":
    main()
