"""Compile and run time of small training programs under XLA CPU compiler settings: what the
test suite (tests/conftest.py) compiles with, and what purerl.jit does for users.

    python benchmarks/compile_time.py [--algos ppo sac trpo dqn] [--record]

Each setting runs in its own process (XLA reads ``XLA_FLAGS`` once, at start): for every
algorithm, the small config of the test suite (tests/helpers.py ``SMALL``) vmapped over 2 seeds
is traced, compiled and run once with ``jax.jit`` (no ``compiler_options``, so the flags decide),
and the process CPU time of each phase is printed. ``--record`` appends the table to
benchmarks/RESULTS.md ("Compile time of the test suite").
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

from throughput import machine

HERE = Path(__file__).resolve().parent
SETTINGS = {
    "XLA defaults (LLVM -O2, fusion emitters)": "",
    "purerl.jit on CPU (-O1)": "--xla_backend_optimization_level=1",
    "-O1, no fusion emitters (the test suite: purerl.jit and jax.jit)":
        "--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false",
    "XLA's -O2, no fusion emitters (the test suite's plain jax.jit until 2026-12-07)":
        "--xla_cpu_use_fusion_emitters=false",
    "-O0, no fusion emitters (helpers.jit_level0: short learned-target checks)":
        "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false",
    "-O1, no fusion emitters, no expensive LLVM passes":
        "--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false "
        "--xla_llvm_disable_expensive_passes=true",
    "-O1, no fusion emitters, no YNNPACK fusions":
        "--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false "
        "--xla_cpu_experimental_ynn_fusion_type=",
}

CHILD = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import jax
from helpers import SMALL
import purerl

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

out = {}
for algo in sys.argv[2:]:
    train = jax.vmap(purerl.get_algorithm(algo).make_train(SMALL[algo]))
    keys = jax.random.split(jax.random.key(0), 2)
    c0 = cpu(); lowered = jax.jit(train).lower(keys); c1 = cpu()
    compiled = lowered.compile(); c2 = cpu()
    jax.block_until_ready(compiled(keys)); c3 = cpu()
    out[algo] = [c2 - c1, c3 - c2]
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["ppo", "sac", "trpo", "dqn"])
    parser.add_argument("--settings", nargs="+", type=int, metavar="I",
                        help="indices into SETTINGS (0-based; default all)")
    parser.add_argument("--flags", nargs="+", default=[], metavar="XLA_FLAGS",
                        help="also time these settings (each an XLA_FLAGS string)")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    tests = str(HERE.parent / "tests")
    rows = []
    chosen = list(SETTINGS.items())
    if args.settings:
        chosen = [chosen[i] for i in args.settings]
    chosen += [(f"ad hoc: {flags}", flags) for flags in args.flags]
    for name, flags in chosen:
        env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
        result = subprocess.run([sys.executable, "-c", CHILD, tests, *args.algos], env=env,
                                capture_output=True, text=True, check=True)
        times = json.loads(result.stdout.strip().splitlines()[-1])
        cells = " | ".join(f"{times[a][0]:.1f} / {times[a][1]:.2f}" for a in args.algos)
        rows.append(f"| {datetime.date.today()} | {machine()} | {name} | "
                    f"`{flags or '(none)'}` | {cells} |")
        print(rows[-1], flush=True)
    if args.record:
        from results_md import add_rows

        header = ("| date | machine | setting | XLA_FLAGS | " + " | ".join(
            f"{a}: compile / run CPU s" for a in args.algos) + " |\n|---|---|---|---|"
            + "---|" * len(args.algos) + "\n")
        add_rows("Compile time of the test suite (benchmarks/compile_time.py)", header, rows)


if __name__ == "__main__":
    main()
