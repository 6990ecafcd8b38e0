"""Does the conv torso earn its place? A preset against the same preset with the conv torso of
Young & Tian (2019), at equal env steps and at equal wall time.

    python benchmarks/torso.py ppo Breakout-MinAtar [--seeds 2] [--steps 1000000]

Three runs, each N vmapped seeds in one compiled program, timed after compilation (the
``--worker`` of ``benchmarks/peers.py``, evaluation once at the end):

1. the preset as registered (its torso, usually ``mlp``) for ``--steps`` env steps;
2. the preset with ``torso=cnn`` and one dense layer of 128 (the paper's network) for the same
   env steps;
3. that conv network for the env steps it covers in the wall time of run 1 (``--steps`` scaled
   by the ratio of the two run times, rounded down to whole updates by the trainer).

Prints and appends one row per run to ``benchmarks/RESULTS.md`` ("Torso: conv vs MLP").
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from peers import worker  # noqa: E402
from throughput import machine  # noqa: E402

from purerl import presets  # noqa: E402

CONV = dict(torso="cnn", hidden_sizes=(128,))
HEADER = ("| date | machine | algo | env | network | seeds | env steps / seed | run s (after "
          "compile) | compile s | final eval (mean, per seed) | training episodes, last 10 "
          "updates |\n|---|---|---|---|---|---|---|---|---|---|---|\n")


def describe(config: dict) -> str:
    if config.get("torso") == "cnn":
        return f"conv 3x3x16 + dense {','.join(map(str, config['hidden_sizes']))}"
    return f"{config.get('torso', 'mlp')} {','.join(map(str, config['hidden_sizes']))}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("algo")
    parser.add_argument("env")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, help="env steps per seed (default: the preset's)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    preset = presets.lookup(args.algo, args.env)
    if preset is None:
        raise SystemExit(f"no {args.algo} preset for {args.env}")
    base = {**preset.overrides, "env": args.env}
    steps = args.steps or base["total_timesteps"]
    runs = [({**base, "total_timesteps": steps}, "equal env steps (preset)"),
            ({**base, **CONV, "total_timesteps": steps}, "equal env steps")]
    results = [worker(args.algo, config, args.seeds) for config, _ in runs]
    ratio = results[0]["run_s"] / results[1]["run_s"]
    # at least one update of env steps: a tiny smoke budget would otherwise round to none
    per_update = base["num_envs"] * base.get("num_steps", 1)
    runs.append(({**base, **CONV, "total_timesteps": max(int(steps * ratio), per_update)},
                 "equal wall time"))
    results.append(worker(args.algo, runs[-1][0], args.seeds))
    rows = []
    for (config, what), r in zip(runs, results):
        row = (f"| {datetime.date.today()} | {machine()} | {args.algo} | {args.env} | "
               f"{describe(config)} ({what}) | {args.seeds} | {r['steps']} | {r['run_s']:.1f} | "
               f"{r['compile_s']:.1f} | {r['final_return_mean']:.1f} {r['finals']} | "
               f"{r['training_return_mean']:.1f} |")
        print(row, flush=True)
        rows.append(row)
    if not args.no_record:
        from results_md import add_rows

        add_rows("Torso: conv vs MLP (benchmarks/torso.py)", HEADER, rows)


if __name__ == "__main__":
    main()
