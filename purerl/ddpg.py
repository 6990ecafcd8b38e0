"""Deep Deterministic Policy Gradient (Lillicrap et al. 2016, arXiv:1509.02971, Algorithm 1).

A deterministic tanh actor mu(s) scaled to the environment's bounds and a critic Q(s, a), with
target copies mu', Q' that follow by Polyak averaging. The critic regresses to
y = r + gamma (1 - terminated) Q'(s', mu'(s')) (truncated transitions bootstrap); the actor
maximises Q(s, mu(s)). Exploration adds Gaussian or Ornstein-Uhlenbeck noise (``exploration``)
to mu(s). The loop (one env step per environment, then ``num_gradient_steps`` gradient steps in
a scan) is shared with TD3: see :mod:`purerl.dpg`. Continuous actions only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from purerl import dpg, loop
from purerl.dpg import DPGConfig, Params, TrainState

__all__ = ["Config", "Params", "TrainState", "make_agent", "make_train"]


@dataclasses.dataclass(frozen=True)
class Config(DPGConfig):
    """DDPG hyperparameters (fields in :class:`purerl.dpg.DPGConfig`): one critic, no target
    smoothing, the actor updated on every gradient step."""

    algo = "ddpg"


def make_agent(config: Config | Mapping[str, Any] | None = None) -> loop.Agent:
    return dpg.make_agent(Config.coerce(config))


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see "The trainer contract" in
    docs/contract.md."""
    return loop.make_train_fn(make_agent(config))
