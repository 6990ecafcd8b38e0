"""purerl: classic deep-RL algorithms as pure, jit- and vmap-able JAX trainers on gymnax."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["ALGORITHMS", "compiler_options", "get_algorithm", "jit", "load", "sweep"]

__version__ = "0.1.0"

# name -> (module, action spaces, default environment)
ALGORITHMS: dict[str, tuple[str, str, str]] = {
    "reinforce": ("purerl.reinforce", "discrete, continuous", "CartPole-v1"),
    "actor_critic": ("purerl.actor_critic", "discrete, continuous", "CartPole-v1"),
    "a2c": ("purerl.a2c", "discrete, continuous", "CartPole-v1"),
    "a3c": ("purerl.a3c", "discrete, continuous", "CartPole-v1"),
    "ppo": ("purerl.ppo", "discrete, continuous", "CartPole-v1"),
    "trpo": ("purerl.trpo", "discrete, continuous", "CartPole-v1"),
    "dqn": ("purerl.dqn", "discrete", "CartPole-v1"),
    "pqn": ("purerl.pqn", "discrete", "CartPole-v1"),
    "ddpg": ("purerl.ddpg", "continuous", "Pendulum-v1"),
    "td3": ("purerl.td3", "continuous", "Pendulum-v1"),
    "sac": ("purerl.sac", "discrete, continuous", "Pendulum-v1"),
    "off_policy_ac": ("purerl.off_policy_ac", "discrete, continuous", "CartPole-v1"),
}


def get_algorithm(name: str) -> ModuleType:
    """The trainer module for ``name``; ValueError with the closest name if unknown."""
    from purerl.config import suggest  # lazy: it imports jax (see __getattr__)

    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}{suggest(name, ALGORITHMS)}; "
                         f"available: {', '.join(ALGORITHMS)}")
    return importlib.import_module(ALGORITHMS[name][0])


def __getattr__(name: str):
    # jax and orbax-checkpoint are imported when first used, so `import purerl` (and the
    # command line's signal handlers, purerl.signals) come before seconds of importing jax
    if name in ("jit", "compiler_options"):
        from purerl import loop

        return getattr(loop, name)
    if name == "load":
        from purerl.inference import load

        return load
    if name == "sweep":
        from purerl.sweeps import sweep

        return sweep
    raise AttributeError(f"module 'purerl' has no attribute {name!r}")
