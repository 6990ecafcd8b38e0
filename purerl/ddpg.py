"""Deep Deterministic Policy Gradient (Lillicrap et al. 2016; seeds 000 and 003).

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

from purerl import loop
from purerl.dpg import DPGConfig, Params, TrainState, make_agent as _make_dpg_agent

__all__ = ["Config", "Params", "TrainState", "make_agent", "make_train"]


@dataclasses.dataclass(frozen=True)
class Config(DPGConfig):
    """DDPG hyperparameters (fields in :class:`purerl.dpg.DPGConfig`)."""

    algo = "ddpg"


def make_agent(config: Config | Mapping[str, Any] | None = None) -> loop.Agent:
    return _make_dpg_agent(Config.coerce(config), twin_critics=False, target_smoothing=False)


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see the trainer contract."""
    return loop.make_train_fn(make_agent(config))
