"""Tuned configurations: (algorithm, environment) -> config overrides, with what they reach.

Each trainer's defaults are tuned for one environment. A :class:`Preset` is the set of fields
that differ from those defaults on another environment (``total_timesteps`` included: a preset
is tuned for its budget). What a preset reaches is not written by hand: ``benchmarks/suite.py``
trains it for N seeds and records the final deterministic evaluation, the budget, the wall time,
the machine and the command line in ``presets.json`` next to this file, together with the whole
config it trained. A record whose config no longer equals the preset's is reported as stale,
so the table never shows a number that the current preset did not produce.

    from purerl import ppo
    config = ppo.Config.for_env("Acrobot-v1")                  # the preset, validated
    config = ppo.Config.for_env("Acrobot-v1", lr=1e-3)         # the preset plus your overrides
    purerl.presets.lookup("ppo", "Acrobot-v1").measured        # what it reached, or None
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

RESULTS_PATH = Path(__file__).with_name("presets.json")

# Environment families, in the order tables list them.
FAMILIES: dict[str, tuple[str, ...]] = {
    "classic control": ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1",
                        "MountainCarContinuous-v0"),
    "MinAtar": ("Breakout-MinAtar", "SpaceInvaders-MinAtar", "Asterix-MinAtar",
                "Freeway-MinAtar"),
    "bsuite": ("Catch-bsuite", "DeepSea-bsuite"),
}


def family_of(env: str) -> str:
    for family, ids in FAMILIES.items():
        if env in ids:
            return family
    if env.startswith("playground/"):
        return "continuous control (MuJoCo Playground)"
    return "other"


@dataclasses.dataclass(frozen=True)
class Measured:
    """What a preset reached: the final deterministic evaluation (``eval_episodes`` episodes
    after the last update) per seed, summarised over ``seeds`` seeds."""

    steps: int  # env steps per seed
    seeds: int
    mean: float
    std: float
    wall_s: float  # one vmapped run of every seed, compilation included
    machine: str
    date: str
    command: str  # the line that measured it
    config: Mapping[str, Any]  # the full config it trained (to detect stale records)

    def summary(self) -> str:
        return (f"{self.mean:.1f} ± {self.std:.1f} over {self.seeds} seeds at "
                f"{_steps(self.steps)} steps")


@dataclasses.dataclass(frozen=True)
class Preset:
    algo: str
    env: str
    overrides: Mapping[str, Any]
    note: str = ""  # why these settings, or what is known to fail

    @property
    def name(self) -> str:
        return f"{self.algo}/{self.env}"

    def config(self, **overrides: Any):
        """The validated Config of this preset, with ``overrides`` on top."""
        import purerl

        module = purerl.get_algorithm(self.algo)
        return module.Config.from_dict({**self.overrides, "env": self.env, **overrides})

    @property
    def measured(self) -> Measured | None:
        """The recorded result, if one exists and was produced by exactly this config."""
        record = load_results().get(self.name)
        if record is None or not _same_config(record.config, self.config().to_dict()):
            return None
        return record

    @property
    def stale(self) -> bool:
        """A result is recorded, but for a config that differs from the current preset."""
        return self.name in load_results() and self.measured is None


def _steps(n: int) -> str:
    return f"{n / 1e6:.3g}M" if n >= 1_000_000 else f"{n / 1e3:.0f}k"


def _same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def canonical(d):
        return json.loads(json.dumps(dict(d), sort_keys=True))

    return canonical(a) == canonical(b)


_REGISTRY: dict[tuple[str, str], Preset] = {}


def register(algo: str, env: str, note: str = "", **overrides: Any) -> Preset:
    if "env" in overrides:
        raise ValueError("a preset's environment is its key, not an override")
    preset = Preset(algo, env, MappingProxyType(dict(overrides)), note)
    _REGISTRY[(algo, env)] = preset
    return preset


def lookup(algo: str, env: str) -> Preset | None:
    """The preset for ``algo`` on ``env``, or None."""
    return _REGISTRY.get((algo, env))


def all_presets() -> list[Preset]:
    """Every preset, by family and environment, then in ``purerl.ALGORITHMS`` order."""
    import purerl

    order = {env: i for i, env in enumerate(e for ids in FAMILIES.values() for e in ids)}
    algos = list(purerl.ALGORITHMS)
    return sorted(_REGISTRY.values(), key=lambda p: (order.get(p.env, len(order)), p.env,
                                                     algos.index(p.algo)))


def for_env(config_cls: type, env: str, **overrides: Any):
    """``config_cls``'s preset for ``env`` with ``overrides`` on top; the bare defaults with
    ``env`` (and a warning) where no preset exists."""
    preset = lookup(config_cls.algo, env)
    if preset is None:
        warnings.warn(f"no {config_cls.algo} preset for {env}: using the defaults, which are "
                      f"tuned for {config_cls().env}", stacklevel=3)
        return config_cls.from_dict({"env": env, **overrides})
    return preset.config(**overrides)


def load_results(path: Path | None = None) -> dict[str, Measured]:
    """Every recorded result by preset name (from ``presets.json`` unless ``path``)."""
    path = RESULTS_PATH if path is None else path
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {name: Measured(**{**r, "config": MappingProxyType(r["config"])})
            for name, r in raw.items()}


def record(preset: Preset, measured: Measured, path: Path | None = None) -> None:
    """Write ``measured`` as ``preset``'s result (what benchmarks/suite.py calls)."""
    path = RESULTS_PATH if path is None else path
    raw = json.loads(path.read_text()) if path.exists() else {}
    entry = dataclasses.asdict(measured)
    entry["config"] = json.loads(json.dumps(dict(measured.config)))
    if not all(math.isfinite(entry[k]) for k in ("mean", "std")):
        raise ValueError(f"{preset.name}: non-finite result {entry['mean']} ± {entry['std']}")
    raw[preset.name] = entry
    path.write_text(json.dumps(dict(sorted(raw.items())), indent=1) + "\n")


def table() -> list[tuple[str, str, str, str, str]]:
    """Rows (algorithm, environment, family, reaches, overrides) for ``purerl list --presets``."""
    rows = []
    for p in all_presets():
        m = p.measured
        reaches = m.summary() if m else ("stale: re-run benchmarks/suite.py" if p.stale
                                         else "not measured yet")
        shown = ", ".join(f"{k}={v}" for k, v in p.overrides.items()) or "(defaults)"
        rows.append((p.algo, p.env, family_of(p.env), reaches, shown))
    return rows


# ----------------------------------------------------------------------------- the registry
# Each trainer's defaults are tuned for its default environment; that preset is the defaults.
# Budgets are per seed. Notes say why a setting differs from the defaults.

# classic control, discrete actions
register("reinforce", "CartPole-v1", total_timesteps=320_000)
register("actor_critic", "CartPole-v1", total_timesteps=320_000)
register("a2c", "CartPole-v1")
register("a3c", "CartPole-v1")
register("ppo", "CartPole-v1")
register("trpo", "CartPole-v1", total_timesteps=150_000)
register("dqn", "CartPole-v1")
# Discrete SAC (Christodoulou 2019): five envs and two gradient steps per update (update-to-data
# ratio 0.4), a recent-experience buffer of 10k transitions and fast targets (tau 0.05), as in
# rejax's tuned CartPole config.
register("sac", "CartPole-v1", total_timesteps=30_000, num_envs=5, num_gradient_steps=2,
         buffer_size=10_000, tau=0.05, activation="tanh", eval_every=1_000,
         note="small recent-experience buffer, fast targets")

register("reinforce", "Acrobot-v1", total_timesteps=320_000)
register("a2c", "Acrobot-v1", total_timesteps=150_000)
register("a3c", "Acrobot-v1", total_timesteps=150_000)
register("trpo", "Acrobot-v1", total_timesteps=150_000)
register("ppo", "Acrobot-v1", total_timesteps=150_000)
register("dqn", "Acrobot-v1", total_timesteps=100_000)

# classic control, continuous actions
register("ppo", "Pendulum-v1", total_timesteps=150_000, num_envs=8, num_steps=256,
         update_epochs=10, num_minibatches=32, gamma=0.9, lr=1e-3, ent_coef=0.0,
         normalize_obs=True, note="short horizon (gamma 0.9), many epochs")
register("trpo", "Pendulum-v1", total_timesteps=300_000, num_steps=200, max_kl=0.02, gamma=0.95,
         gae_lambda=0.95, normalize_obs=True, vf_epochs=10, vf_lr=3e-3)
register("ddpg", "Pendulum-v1")
register("td3", "Pendulum-v1")
register("sac", "Pendulum-v1")

# MinAtar: the conv torso of Young & Tian (2019) -- one 3x3x16 convolution, dense 128
_MINATAR_NET = dict(torso="cnn", hidden_sizes=(128,), activation="relu")
for _env in FAMILIES["MinAtar"]:
    register("ppo", _env, total_timesteps=1_000_000, num_envs=64, num_steps=128,
             update_epochs=4, num_minibatches=8, lr=5e-4, ent_coef=0.01, gamma=0.99,
             note="CPU-sized budget; gymnax-blines' references are at 10M steps",
             **_MINATAR_NET)
