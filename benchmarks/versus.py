"""Two purerl trainers at equal env steps: run time and return, side by side.

    python benchmarks/versus.py pqn dqn --env CartPole-v1 --steps 100000 --seeds 8 [--repeats 1]

Each side runs its preset for ``--env`` (its defaults where it has none) at the budget
``--steps``, ``--seeds`` vmapped seeds in one compiled program, in a fresh process
(``peers.py``'s worker: evaluation once, after the last update), the two alternating over
``--repeats``. Prints the median run time after compilation, the compile time and the final
deterministic evaluation of both, and appends one row to ``benchmarks/RESULTS.md`` ("Trainer
against trainer").
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
from pathlib import Path

from peers import _last_json, _machine
from results_md import add_rows

HERE = Path(__file__).resolve().parent
HEADER = ("| date | machine | env | env steps / seed | seeds | A | B | A run s (median) | "
          "B run s (median) | B / A | A compile s | B compile s | A final | B final |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")


def config_for(algo: str, env: str, steps: int) -> dict:
    """``algo``'s preset for ``env`` (or its defaults) at ``steps`` env steps, as a dict."""
    from purerl import presets

    found = presets.lookup(algo, env)
    return {**(found.overrides if found else {}), "env": env, "total_timesteps": steps}


def run(algo: str, config: dict, seeds: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "peers.py"), "--worker", algo,
                          json.dumps(config), str(seeds)], capture_output=True, text=True,
                         check=True).stdout
    return _last_json(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--env", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    sides = {name: [] for name in (args.a, args.b)}
    for _ in range(args.repeats):
        for name in sides:
            sides[name].append(run(name, config_for(name, args.env, args.steps), args.seeds))
            print(f"{name}: {sides[name][-1]['run_s']} s, final "
                  f"{sides[name][-1]['final_return_mean']:.1f}", file=sys.stderr)

    def med(name, key):
        return statistics.median(r[key] for r in sides[name])

    a, b = args.a, args.b
    final = {n: statistics.mean(r["final_return_mean"] for r in sides[n]) for n in sides}
    row = (f"| {datetime.date.today()} | {_machine()} | {args.env} | {args.steps} | {args.seeds} "
           f"| {a} | {b} | {med(a, 'run_s'):.1f} | {med(b, 'run_s'):.1f} | "
           f"**{med(b, 'run_s') / med(a, 'run_s'):.2f}x** | {med(a, 'compile_s'):.1f} | "
           f"{med(b, 'compile_s'):.1f} | {final[a]:.1f} | {final[b]:.1f} |")
    print(row)
    if not args.no_record:
        add_rows("Trainer against trainer (benchmarks/versus.py)", HEADER, [row])


if __name__ == "__main__":
    main()
