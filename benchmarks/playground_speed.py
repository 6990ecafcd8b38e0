"""Environment steps per second of MuJoCo Playground tasks behind purerl's adapter.

    python benchmarks/playground_speed.py [--tasks CartpoleBalance CheetahRun]
                                          [--num-envs 16 256] [--steps 1000] [--no-raw]

For each task and batch size: one compiled ``lax.scan`` of ``--steps`` batched
``purerl.envs.make("playground/<Task>").step`` calls (vmapped, auto-resetting, with episode
statistics) under uniformly random actions, timed after compilation (best of ``--repeats``
runs, ``block_until_ready``). With the default 1000 steps every environment crosses one time
limit, so the auto-reset is exercised. For comparison, the same scan over the raw Playground
task's vmapped ``step`` (no time limit, no reset, no statistics) shows what the gymnax contract
costs: the auto-resetting step computes a fresh reset (an MJX forward pass) on every step,
because under ``vmap`` a reset for the finished environments cannot be skipped for the others.
Prints a markdown table; needs the ``mujoco`` extra.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Callable

import jax
import jax.numpy as jnp

import purerl
from purerl import envs


def time_program(fn: Callable[[jax.Array], jax.Array], repeats: int) -> tuple[float, float]:
    """(compile seconds, best run seconds) of ``purerl.jit(fn)`` on a fixed key."""
    key = jax.random.key(0)
    start = time.perf_counter()
    compiled = purerl.jit(fn).lower(key).compile()
    compile_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(key))
        best = min(best, time.perf_counter() - start)
    return compile_s, best


def adapter_program(task: str, num_envs: int, steps: int) -> Callable[[jax.Array], jax.Array]:
    """Random actions through purerl's batched, auto-resetting step; returns the summed reward
    of completed episodes (so nothing is dead code)."""
    env = envs.make(f"playground/{task}")
    low, high = env.spec.action_low, env.spec.action_high

    def run(key):
        reset_key, key = jax.random.split(key)
        state = env.reset(reset_key, num_envs)

        def body(state, k):
            action_key, step_key = jax.random.split(k)
            action = jax.random.uniform(action_key, (num_envs, *env.spec.action_shape),
                                        minval=low, maxval=high)
            state, tr = env.step(step_key, state, action)
            return state, tr.completed_return.sum()

        _, completed = jax.lax.scan(body, state, jax.random.split(key, steps))
        return completed.sum()

    return run


def raw_program(task: str, num_envs: int, steps: int) -> Callable[[jax.Array], jax.Array]:
    """The same loop over the raw Playground task: vmapped ``step`` only."""
    from mujoco_playground import registry

    raw = registry.load(task, config_overrides={"impl": "jax"})

    def run(key):
        reset_key, key = jax.random.split(key)
        state = jax.vmap(raw.reset)(jax.random.split(reset_key, num_envs))

        def body(state, k):
            action = jax.random.uniform(k, (num_envs, raw.action_size), minval=-1.0, maxval=1.0)
            state = jax.vmap(raw.step)(state, action)
            return state, state.reward.sum()

        _, rewards = jax.lax.scan(body, state, jax.random.split(key, steps))
        return rewards.sum()

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["CartpoleBalance", "CheetahRun"])
    parser.add_argument("--num-envs", nargs="+", type=int, default=[16, 256])
    parser.add_argument("--steps", type=int, default=1000, help="scan length (steps per env)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-raw", action="store_true", help="skip the raw-task comparison")
    args = parser.parse_args(argv)

    dev = jax.devices()[0]
    where = (f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
             if dev.platform == "cpu" else f"{dev.platform.upper()} {dev.device_kind}")
    print(f"MuJoCo Playground through purerl.envs, impl=jax, {args.steps} steps per env, "
          f"{where}, jax {jax.__version__}\n")
    print("| task | envs | adapter compile s | adapter run s | adapter steps/s "
          "| raw step steps/s | adapter / raw |")
    print("|---|---|---|---|---|---|---|")
    for task in args.tasks:
        for n in args.num_envs:
            total = n * args.steps
            comp, run = time_program(adapter_program(task, n, args.steps), args.repeats)
            raw_cell, ratio = "-", "-"
            if not args.no_raw:
                _, raw_run = time_program(raw_program(task, n, args.steps), args.repeats)
                raw_cell, ratio = f"{total / raw_run:,.0f}", f"{raw_run / run:.2f}"
            print(f"| {task} | {n} | {comp:.1f} | {run:.2f} | {total / run:,.0f} | {raw_cell} "
                  f"| {ratio} |", flush=True)


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing
    main()
