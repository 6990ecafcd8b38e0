"""Twin Delayed DDPG (Fujimoto et al. 2018, arXiv:1802.09477, Algorithm 1).

DDPG plus three changes against overestimation: twin critics regressing to the smaller target
(clipped double-Q learning, eq. 10), y = r + gamma (1 - terminated) min_i Q'_i(s', a'); target
policy smoothing (eq. 14), a' = clip(mu'(s') + clip(N(0, policy_noise^2), -noise_clip,
noise_clip), low, high); and the actor and all targets updated only every ``policy_delay``-th
gradient step (section 5.2). The first ``learning_starts`` env steps take uniformly random
actions (``random_warmup``). The loop is shared with DDPG: see :mod:`purerl.dpg`. Continuous
actions only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

from purerl import dpg, loop
from purerl.config import NON_NEGATIVE, POSITIVE, hparam, static
from purerl.dpg import DPGConfig, Params, TrainState

__all__ = ["Config", "Params", "TrainState", "make_agent", "make_train"]


@dataclasses.dataclass(frozen=True)
class Config(DPGConfig):
    """TD3 hyperparameters: :class:`purerl.dpg.DPGConfig`'s plus target smoothing; twin critics;
    the policy is delayed by 2 gradient steps by default."""

    algo = "td3"
    twin_critics: ClassVar[bool] = True

    policy_delay: int = static(2, "gradient steps per actor and target update", POSITIVE)
    policy_noise: float = hparam(
        0.2, "target smoothing std, a fraction of the action half-range", NON_NEGATIVE)
    noise_clip: float = hparam(
        0.5, "target smoothing clip, a fraction of the action half-range", NON_NEGATIVE)

    def smoothing(self) -> tuple[Any, Any]:
        return self.policy_noise, self.noise_clip


def make_agent(config: Config | Mapping[str, Any] | None = None) -> loop.Agent:
    return dpg.make_agent(Config.coerce(config))


def make_train(config: Config | Mapping[str, Any] | None = None):
    """``train(key, hparams=None) -> (TrainState, metrics)``; see "The trainer contract" in
    docs/contract.md."""
    return loop.make_train_fn(make_agent(config))
