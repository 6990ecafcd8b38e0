"""Twin Delayed DDPG (Fujimoto et al. 2018; seeds 000 and 004).

DDPG plus three changes against overestimation: twin critics regressing to the smaller target,
y = r + gamma (1 - terminated) min_i Q'_i(s', a'); target-policy smoothing,
a' = clip(mu'(s') + clip(N(0, policy_noise^2), -noise_clip, noise_clip), low, high); and the
actor and all targets updated only every ``policy_delay``-th gradient step. The first
``learning_starts`` env steps take uniformly random actions (``random_warmup``). The loop is
shared with DDPG: see :mod:`purerl.dpg`. Continuous actions only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from purerl import loop
from purerl.config import hparam, non_negative, positive, static
from purerl.dpg import DPGConfig, Params, TrainState, make_agent as _make_dpg_agent

__all__ = ["Config", "Params", "TrainState", "make_agent", "make_train"]


@dataclasses.dataclass(frozen=True)
class Config(DPGConfig):
    """TD3 hyperparameters: :class:`purerl.dpg.DPGConfig`'s plus target smoothing; the policy
    is delayed by 2 gradient steps by default."""

    algo = "td3"

    policy_delay: int = static(2, check=positive, why="must be > 0")
    policy_noise: float = hparam(
        0.2, check=non_negative,
        why="must be >= 0 (target smoothing std, a fraction of the action half-range)")
    noise_clip: float = hparam(
        0.5, check=non_negative,
        why="must be >= 0 (target smoothing clip, a fraction of the action half-range)")


def make_agent(config: Config | Mapping[str, Any] | None = None) -> loop.Agent:
    return _make_dpg_agent(Config.coerce(config), twin_critics=True, target_smoothing=True)


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see the trainer contract."""
    return loop.make_train_fn(make_agent(config))
