"""Env steps per second against the number of devices (purerl.distributed).

    python benchmarks/devices.py [--algo ppo] [--env CartPole-v1] [--devices 1 2 4 8]
                                 [--seeds 8] [--set key=value ...] [--no-record]

For every device count, a fresh Python process (the CPU's device count is fixed when JAX
starts: ``XLA_FLAGS=--xla_force_host_platform_device_count=N``) trains

* ``seeds``: ``--seeds`` seeds sharded over the devices (``distributed.train_seeds``);
* ``data parallel``: the same seeds, each run's ``num_envs`` environments split over the
  devices (``jax.vmap`` of ``distributed.data_parallel_train``; skipped where ``num_envs``
  does not divide, or for trainers without data parallelism),

and reports the run time of a second call (``block_until_ready``) and, as "compile s", the first
call's time minus the second's (compilation and placement; noisy at the 1 s level). On a CPU
the fake devices share the same cores, so the table shows the overhead of sharding, not a
speed-up. On a GPU machine the same command uses the real devices (counts above
``jax.device_count()`` are skipped). Rows are appended to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

HEADER = ("| date | machine | algo | env | mode | devices | seeds | num_envs | env steps / seed "
          "| compile s | run s | env steps/s | overrides |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
SECTION = "Devices: sharded seeds and data parallel (benchmarks/devices.py)"


def measure(algo: str, env: str, seeds: int, overrides: list[str], n: int) -> list[dict]:
    """In this process (its devices already fixed): both modes on the first ``n`` devices
    (none if there are fewer)."""
    import time

    import jax
    import numpy as np

    import purerl
    from purerl import distributed
    from purerl.cli import parse_overrides
    from throughput import machine

    module = purerl.get_algorithm(algo)
    config = module.Config.from_dict({**parse_overrides(overrides, module.Config), "env": env})
    keys = jax.random.split(jax.random.key(0), seeds)
    if n > jax.device_count():
        return []
    train, mesh = module.make_train(config), distributed.make_mesh(n)
    runs = {"seeds": lambda k: distributed.train_seeds(train, k, mesh=mesh)}
    if algo in distributed.DATA_PARALLEL and config.num_envs % n == 0:
        data_mesh = distributed.make_mesh(n, distributed.DATA_AXIS)
        runs["data parallel"] = purerl.jit(jax.vmap(distributed.data_parallel_train(config,
                                                                                      data_mesh)))
    rows = []
    for mode, run in runs.items():
        t0 = time.perf_counter()
        jax.block_until_ready(run(keys))  # compiles
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, metrics = jax.block_until_ready(run(keys))
        run_s = time.perf_counter() - t0
        steps = np.asarray(distributed.gather(metrics["env_steps"]))[:, -1]
        rows.append({"mode": mode, "devices": n, "seeds": seeds, "num_envs": config.num_envs,
                     "steps": int(steps.mean()), "compile_s": first - run_s, "run_s": run_s,
                     "sps": float(steps.sum() / run_s), "machine": machine()})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print("ROWS " + json.dumps(measure(args.algo, args.env, args.seeds, args.set,
                                           args.devices[0])))
        return
    rows = []
    for n in args.devices:
        # n fake CPU devices; a GPU machine's own devices are unaffected (the first n used)
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                                          f" --xla_force_host_platform_device_count={n}"))
        command = [sys.executable, __file__, "--child", "--algo", args.algo, "--env", args.env,
                   "--seeds", str(args.seeds), "--devices", str(n),
                   *[f"--set={s}" for s in args.set]]
        out = subprocess.run(command, env=env, capture_output=True, text=True,
                             cwd=Path(__file__).parent)
        line = [x for x in out.stdout.splitlines() if x.startswith("ROWS ")]
        if out.returncode or not line:
            print(f"{n} devices: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        if line[0] == "ROWS []":
            print(f"{n} devices: fewer available, skipped", file=sys.stderr)
        for row in json.loads(line[0][5:]):
            rows.append(row)
            print(f"{row['mode']:>13}  {n} device(s): compile {row['compile_s']:.1f} s, run "
                  f"{row['run_s']:.2f} s, {row['sps']:,.0f} env steps/s", flush=True)
    if rows and not args.no_record:
        from results_md import add_rows

        today = datetime.date.today()
        add_rows(SECTION, HEADER, [
            f"| {today} | {r['machine']} | {args.algo} | {args.env} | {r['mode']} | "
            f"{r['devices']} | {r['seeds']} | {r['num_envs']} | {r['steps']} | "
            f"{r['compile_s']:.1f} | {r['run_s']:.2f} | {r['sps']:,.0f} | "
            f"{' '.join(args.set) or '-'} |" for r in rows])


if __name__ == "__main__":
    main()
