"""Fingerprints of every trainer's single-device program, to show that a refactor changed no
computation: the jaxpr of ``make_train(config)`` (and of one ``update``) for each algorithm on a
discrete and, where supported, a continuous environment, hashed.

    python benchmarks/jaxprs.py --write /tmp/before.json    # before the change
    python benchmarks/jaxprs.py --check /tmp/before.json    # after: exits 1 on any difference

The jaxpr holds every primitive, shape, dtype and constant of the traced program, and no
source locations, so moving a function between modules leaves it unchanged while changing an
operation, its order or its inputs does not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import jax

import purerl
from purerl import loop

# (algorithm, environment, overrides): each algorithm on each action space it supports, plus
# the variants that take other code paths
CASES: list[tuple[str, str, dict]] = [
    ("reinforce", "CartPole-v1", {}),
    ("reinforce", "Pendulum-v1", {}),
    ("actor_critic", "CartPole-v1", {}),
    ("actor_critic", "Pendulum-v1", {}),
    ("a2c", "CartPole-v1", {}),
    ("a2c", "Pendulum-v1", {}),
    ("a3c", "CartPole-v1", {}),
    ("ppo", "CartPole-v1", {}),
    ("ppo", "Pendulum-v1", {}),
    ("ppo", "CartPole-v1", {"variant": "kl_penalty"}),
    ("ppo", "Pendulum-v1", {"normalize_obs": True}),
    ("trpo", "CartPole-v1", {}),
    ("trpo", "Pendulum-v1", {}),
    ("dqn", "CartPole-v1", {}),
    ("dqn", "Breakout-MinAtar", {"dueling": True, "loss": "huber"}),
    ("pqn", "CartPole-v1", {}),
    ("pqn", "Breakout-MinAtar", {"torso": "cnn", "loss": "huber", "anneal_lr": True}),
    ("ddpg", "Pendulum-v1", {}),
    ("td3", "Pendulum-v1", {}),
    ("sac", "Pendulum-v1", {}),
    ("sac", "CartPole-v1", {}),
    ("off_policy_ac", "CartPole-v1", {}),
    ("off_policy_ac", "Pendulum-v1", {}),
]


def fingerprints() -> dict[str, str]:
    out = {}
    key = jax.random.key(0)
    for algo, env, overrides in CASES:
        module = purerl.get_algorithm(algo)
        cfg = module.Config.from_dict({"env": env, "total_timesteps": 20_000, "eval_every": 0,
                                       **overrides})
        agent = module.make_agent(cfg)
        train = loop.make_train_fn(agent)
        texts = {"train": str(jax.make_jaxpr(train)(key))}
        state = jax.eval_shape(agent.init, key)
        texts["update"] = str(jax.make_jaxpr(agent.update)(state))
        for part, text in texts.items():
            out[f"{algo} {env} {overrides} {part}"] = hashlib.sha256(text.encode()).hexdigest()
        print(f"{algo:12s} {env:18s} {overrides}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", help="save the fingerprints to this JSON file")
    group.add_argument("--check", help="compare with fingerprints saved by --write")
    args = parser.parse_args(argv)
    prints = fingerprints()
    if args.write:
        with open(args.write, "w") as f:
            json.dump(prints, f, indent=1)
        print(f"{len(prints)} fingerprints written to {args.write}")
        return 0
    with open(args.check) as f:
        saved = json.load(f)
    changed = sorted(k for k in saved.keys() | prints.keys() if saved.get(k) != prints.get(k))
    for name in changed:
        print(f"CHANGED: {name}")
    print(f"{len(prints) - len(changed)} of {len(prints)} fingerprints identical")
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
