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

import purerl

RESULTS_PATH = Path(__file__).with_name("presets.json")

# Environment families, in the order tables list them.
FAMILIES: dict[str, tuple[str, ...]] = {
    "classic control": ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1",
                        "MountainCarContinuous-v0"),
    "MinAtar": ("Breakout-MinAtar", "SpaceInvaders-MinAtar", "Asterix-MinAtar",
                "Freeway-MinAtar"),
    "bsuite": ("Catch-bsuite", "DeepSea-bsuite"),
    "partially observable": ("StatelessCartPole-v1", "StatelessPendulum-v1",
                             "MemoryChain-bsuite"),
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

    @property
    def variant(self) -> str:
        """The trainer's variant this preset selects where the environment decides it (SAC on
        discrete actions is discrete SAC), else an empty string."""
        if self.algo != "sac" or not self.available:
            return ""
        from purerl import envs  # lazy: gymnax, flax (seconds); config imports presets

        return "discrete SAC" if envs.make(self.env).spec.discrete else ""

    @property
    def caveat(self) -> str:
        """What a user should know before relying on it: that it does not solve its task (the
        measured return is then what a failing policy gets), else an empty string."""
        if not self.note.startswith("unsolved"):
            return ""
        return (f"{self.name} does not solve {self.env}: "
                f"{self.note.removeprefix('unsolved').lstrip(': ')}")

    def config(self, **overrides: Any):
        """The validated Config of this preset, with ``overrides`` on top."""
        module = purerl.get_algorithm(self.algo)
        return module.Config.from_dict({**self.overrides, "env": self.env, **overrides})

    @property
    def available(self) -> bool:
        """Whether its environment can be made here (``playground/`` ids need the extra)."""
        from purerl import playground  # lazy, like envs in variant: it imports gymnax

        return not self.env.startswith(playground.PREFIX) or playground.available()

    @property
    def measured(self) -> Measured | None:
        """The recorded result, if one exists and was produced by exactly this config. Where
        the environment needs an extra that is not installed the config cannot be built; the
        record is then compared with the overrides only."""
        record = load_results().get(self.name)
        if record is None:
            return None
        if not self.available:
            same = all(_same_config({k: record.config.get(k)}, {k: v})
                       for k, v in self.overrides.items())
            return record if same else None
        config = self.config()
        # a field added after the record was made, at its default, changes nothing it trained
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
        current = {k: v for k, v in config.to_dict().items()
                   if k in record.config or not _same_config({k: v}, {k: defaults.get(k)})}
        return record if _same_config(record.config, current) else None

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
        if not p.available:
            reaches += " (needs the mujoco extra)"
        if p.caveat:
            reaches += " (unsolved)"
        shown = ", ".join(f"{k}={v}" for k, v in p.overrides.items()) or "(defaults)"
        algo = f"{p.algo} ({p.variant})" if p.variant else p.algo
        rows.append((algo, p.env, family_of(p.env), reaches, shown))
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
register("actor_critic", "Acrobot-v1", total_timesteps=500_000, mode="online", num_envs=32,
         num_steps=16, lr=3e-4, vf_lr=3e-3, normalize_obs=True,
         note="online TD(0) mode; without observation normalisation 2 of 8 seeds stay at -500")
register("sac", "Acrobot-v1", total_timesteps=50_000, num_envs=5, num_gradient_steps=2,
         buffer_size=10_000, tau=0.05, activation="tanh", eval_every=2_000,
         target_entropy_ratio=0.3,
         note="the CartPole-v1 settings with a lower entropy target (0.7: -397 ± 178); "
              "3 of 8 seeds stay at -500")

# MountainCar-v0: -1 per step until the flag (200 steps); dithering exploration rarely reaches
# it, so the on-policy trainers normalise observations and train long (rl-baselines3-zoo's
# settings, Raffin 2020), and DQN explores for 20% of its budget.
register("dqn", "MountainCar-v0", total_timesteps=120_000, hidden_sizes=(256, 256), lr=4e-3,
         batch_size=128, buffer_size=10_000, gamma=0.98, target_update_every=300,
         epsilon_end=0.07, exploration_fraction=0.2, anneal_lr=False, eval_every=250,
         note="unsolved: epsilon-greedy never reaches the flag here (-200 on 8 of 8 seeds, with "
              "or without observation normalisation); the on-policy trainers solve it")
register("ppo", "MountainCar-v0", total_timesteps=1_000_000, num_envs=16, num_steps=16,
         gae_lambda=0.98, update_epochs=4, ent_coef=0.0, normalize_obs=True, eval_every=250)
register("trpo", "MountainCar-v0", total_timesteps=1_000_000, normalize_obs=True)
register("a2c", "MountainCar-v0", total_timesteps=1_000_000, ent_coef=0.0, normalize_obs=True,
         eval_every=500)
register("a3c", "MountainCar-v0", total_timesteps=1_000_000, ent_coef=0.0, normalize_obs=True,
         eval_every=500)
register("reinforce", "MountainCar-v0", total_timesteps=320_000, normalize_obs=True,
         note="whole-episode vanilla policy gradient: no return signal until the flag is found")
register("actor_critic", "MountainCar-v0", total_timesteps=1_000_000, mode="online",
         num_envs=32, num_steps=16, lr=3e-4, vf_lr=3e-3, normalize_obs=True)
register("sac", "MountainCar-v0", total_timesteps=50_000, num_envs=5, num_gradient_steps=2,
         buffer_size=50_000, tau=0.05, activation="tanh", eval_every=2_000,
         target_entropy_ratio=0.3, note="unsolved: -200 on 8 of 8 seeds")

# classic control, continuous actions
register("ppo", "Pendulum-v1", total_timesteps=150_000, num_envs=8, num_steps=256,
         update_epochs=10, num_minibatches=32, gamma=0.9, lr=1e-3, ent_coef=0.0,
         normalize_obs=True, note="short horizon (gamma 0.9), many epochs")
register("trpo", "Pendulum-v1", total_timesteps=300_000, num_steps=200, max_kl=0.02, gamma=0.95,
         gae_lambda=0.95, normalize_obs=True, vf_epochs=10, vf_lr=3e-3)
register("ddpg", "Pendulum-v1")
register("td3", "Pendulum-v1")
register("sac", "Pendulum-v1")
# the policy-gradient family: PPO's Pendulum settings where they apply (short horizon, GAE,
# observation normalisation, Adam)
# A2C / A3C: many small updates (8 envs x 8 steps), and a gradient-norm clip of 10 -- at 0.5 the
# value loss of Pendulum's large negative returns takes the whole clipped norm and the policy
# barely moves (-1000 after 1M steps).
for _algo, _envs in (("a2c", 8), ("a3c", 2)):  # A3C: 4 workers x 2 envs
    register(_algo, "Pendulum-v1", total_timesteps=2_000_000, num_envs=_envs, num_steps=8,
             use_gae=True, gae_lambda=0.9, gamma=0.9, optimizer="adam", lr=1e-3, ent_coef=0.0,
             normalize_obs=True, normalize_advantages=True, max_grad_norm=10.0,
             eval_every=2_000,
             note="" if _algo == "a2c" else "per seed -117 to -771: A3C's stale gradients")
register("reinforce", "Pendulum-v1", total_timesteps=640_000, weighting="advantage",
         gamma=0.9, gae_lambda=0.9, normalize_obs=True, normalize_advantages=True, lr=1e-3,
         eval_every=20,
         note="unsolved: -1005 over 8 seeds (a random policy gets about -1200); whole-episode "
              "updates are too few at this budget: use ppo or trpo")
register("actor_critic", "Pendulum-v1", total_timesteps=1_000_000, mode="online",
         num_envs=32, num_steps=16, lr=3e-4, vf_lr=3e-3, gamma=0.9, normalize_obs=True,
         eval_every=100)

# MountainCarContinuous-v0: +100 at the flag minus 0.1 a^2 per step. Without a flag found early,
# every trainer learns to stand still (return ~0); temporally correlated exploration (OU noise,
# Lillicrap et al. 2016) and a long random warm-up find it.
for _algo in ("ddpg", "td3"):
    register(_algo, "MountainCarContinuous-v0", total_timesteps=50_000, exploration="ou",
             exploration_noise=1.0, learning_starts=10_000, eval_every=5_000,
             note="OU noise of scale 0.5 finds the flag on fewer seeds (TD3 21.6 ± 41.7)")
register("sac", "MountainCarContinuous-v0", total_timesteps=50_000, learning_starts=10_000,
         eval_every=5_000,
         note="unsolved: learns to stand still (0 on 8 of 8 seeds); the entropy bonus of "
              "independent Gaussian noise does not find the flag")
register("ppo", "MountainCarContinuous-v0", total_timesteps=500_000, num_envs=8, num_steps=256,
         update_epochs=10, num_minibatches=32, gamma=0.99, lr=3e-4, ent_coef=0.0,
         normalize_obs=True, eval_every=25)
register("trpo", "MountainCarContinuous-v0", total_timesteps=500_000, normalize_obs=True)
for _algo in ("a2c", "a3c"):
    register(_algo, "MountainCarContinuous-v0", total_timesteps=500_000, normalize_obs=True,
             eval_every=250)
register("reinforce", "MountainCarContinuous-v0", total_timesteps=500_000, normalize_obs=True)
register("actor_critic", "MountainCarContinuous-v0", total_timesteps=500_000, mode="online",
         num_envs=32, num_steps=16, lr=3e-4, vf_lr=3e-3, normalize_obs=True)

# bsuite (Osband et al. 2020): Catch (reward +-1 at the end of a 9-step episode) and DeepSea
# (size 8: the treasure needs "right" at every one of 8 steps, 1 / 256 by dithering).
for _env in FAMILIES["bsuite"]:
    register("ppo", _env, total_timesteps=200_000, eval_every=10)
    register("dqn", _env, total_timesteps=50_000)

# MinAtar (Young & Tian 2019). Budgets are what the 2-core CPU allows (1M env steps per seed);
# every setting below was chosen by a vmapped grid (benchmarks/grid.py, recorded in
# benchmarks/RESULTS.md, "Tuning grids") and measured by `python benchmarks/suite.py --family
# MinAtar`. The torso: the conv torso of Young & Tian learns far more per env step, but costs
# 6-8x the time per step on this CPU, where an MLP on the flattened observation wins at equal
# wall time and matches PureJaxRL's run time (docs/presets.md, "MinAtar").
_MINATAR_NET = dict(torso="mlp", hidden_sizes=(64, 64), activation="relu")
# PPO: PureJaxRL's MinAtar example (64 envs x 128 steps, 4 epochs x 8 minibatches, entropy
# 0.01, lr annealed), learning rate per game from the grid 2.5e-3 / 5e-3 / 1e-2 (4 seeds; 8 on
# Breakout, whose returns at 1M steps spread most)
_MINATAR_PPO_LR = {"Breakout-MinAtar": 1e-2, "SpaceInvaders-MinAtar": 5e-3,
                   "Asterix-MinAtar": 2.5e-3, "Freeway-MinAtar": 5e-3}
# what the conv torso reached at the preset's 1M steps (benchmarks/torso.py, 2 seeds)
_MINATAR_PPO_CONV = {"Breakout-MinAtar": 46.0, "SpaceInvaders-MinAtar": 153.5,
                     "Asterix-MinAtar": 16.2, "Freeway-MinAtar": 56.7}
_MINATAR_A2C_LR = {"Breakout-MinAtar": 2e-3, "SpaceInvaders-MinAtar": 5e-3,
                   "Asterix-MinAtar": 2e-3, "Freeway-MinAtar": 2e-3}
_MINATAR_A2C_NOTE = {
    "Asterix-MinAtar": "unsolved: no rate of the grid learns in 1M steps (0.3; random play 0.5)",
    "Freeway-MinAtar": "every rate of the grid ends at the same greedy policy (about 18)"}
# DQN: dueling double DQN at rejax's replay ratio (its tuned DQN config: 10 envs, 5 gradient
# steps of batch 100 per iteration, 50 replayed samples per env step, Polyak 0.98 once per
# iteration, epsilon 1 -> 0.05 over half the run, swish). On Breakout it beat Young & Tian
# (2019)'s replay ratio (30.0 against 15.7 at 500k steps) and ties rejax side by side
# (docs/presets.md, "DQN side by side with rejax"). Half the PPO budget: 50 samples per env
# step cost about 8x the other's CPU time.
_MINATAR_DQN_REJAX = dict(
    total_timesteps=500_000, num_envs=10, num_gradient_steps=5, batch_size=100,
    buffer_size=50_000, learning_starts=5_000, lr=1e-3, max_grad_norm=10.0, anneal_lr=False,
    tau=0.02, target_update_every=5, epsilon_end=0.05, exploration_fraction=0.5,
    double_dqn=True, dueling=True, eval_every=5_000, torso="mlp", hidden_sizes=(64, 64),
    activation="swish")
# Young & Tian (2019)'s replay (buffer 100k, batch 32, target copy every 1000 gradient steps,
# epsilon 1 -> 0.1 over the first 10%, Huber loss), one gradient step per 4 env steps over 16
# envs, Adam, lr from the Breakout grid 1e-4 / 3e-4 / 1e-3. Kept where it wins: on Freeway it
# reached 33.9 in 1M steps, rejax's config 9.6 in 500k (its long epsilon decay)
_MINATAR_DQN_YOUNG_TIAN = dict(
    total_timesteps=1_000_000, num_envs=16, num_gradient_steps=4, batch_size=32,
    buffer_size=100_000, learning_starts=5_000, lr=1e-3, target_update_every=1_000,
    epsilon_end=0.1, exploration_fraction=0.1, loss="huber", anneal_lr=False, eval_every=6_000,
    **_MINATAR_NET)
_MINATAR_DQN_YOUNG_TIAN_GAMES = ("Freeway-MinAtar",)
for _env in FAMILIES["MinAtar"]:
    register("ppo", _env, total_timesteps=1_000_000, num_envs=64, num_steps=128,
             update_epochs=4, num_minibatches=8, lr=_MINATAR_PPO_LR[_env], ent_coef=0.01,
             gamma=0.99, eval_every=12,
             note=f"per env step the conv torso does better (--set torso=cnn hidden_sizes=128: "
                  f"{_MINATAR_PPO_CONV[_env]} at 1M steps, 2 seeds) at 6-8x the CPU time",
             **_MINATAR_NET)
    # A2C: Mnih et al. (2016)'s 5-step RMSProp updates over 64 envs; lr per game from the grid
    # 7e-4 (theirs) / 2e-3 / 5e-3
    register("a2c", _env, total_timesteps=1_000_000, num_envs=64, num_steps=5,
             optimizer="rmsprop", lr=_MINATAR_A2C_LR[_env], ent_coef=0.01, eval_every=300,
             note=_MINATAR_A2C_NOTE.get(_env, ""), **_MINATAR_NET)
    register("dqn", _env, note=("unsolved: 0.5 in 500k steps, as random play (Young & Tian's "
                                "replay: 0.3 in 1M)" if _env == "Asterix-MinAtar" else ""),
             **(_MINATAR_DQN_YOUNG_TIAN if _env in _MINATAR_DQN_YOUNG_TIAN_GAMES
                else _MINATAR_DQN_REJAX))
    # discrete SAC (Christodoulou 2019) on DQN's replay ratio; the target entropy is a fraction
    # of log |A|, from the Breakout grid 0.1 / 0.3 / 0.6. Half DQN's budget: each update costs
    # two critics and an actor, so 1M steps x 4 seeds x 4 games did not fit the CPU session
    register("sac", _env, total_timesteps=500_000, num_envs=16, num_gradient_steps=4,
             batch_size=64, buffer_size=100_000, learning_starts=5_000, actor_lr=3e-4,
             critic_lr=3e-4, alpha_lr=3e-4, target_entropy_ratio=0.6, eval_every=3_000,
             **_MINATAR_NET)

# PQN (Gallici et al. 2025): rejax's PQN config for classic control (16 envs x 128 steps, 5 epochs
# x 16 minibatches, lambda 0.9, epsilon 1 -> 0.05 over half the run) is pqn's default; the
# learning rate from the grid 3e-4 (rejax's) / 1e-3, 4 seeds (benchmarks/RESULTS.md, "Tuning
# grids"): 1e-3 on Acrobot and MountainCar, a tie at 1.0 on Catch
register("pqn", "CartPole-v1")
register("pqn", "Acrobot-v1", lr=1e-3)
register("pqn", "MountainCar-v0", lr=1e-3)
register("pqn", "Catch-bsuite", total_timesteps=131_072, eval_every=8)
# MinAtar: the paper's MinAtar config (128 envs x 32 steps, 2 epochs x 32 minibatches, lambda
# 0.65, epsilon 1 -> 0.05 over the first 10%, lr annealed) on the MinAtar presets' MLP 64x64 at
# their 1M-step budget; lr per game from the grids 2.5e-4 .. 1.6e-2 (benchmarks/RESULTS.md,
# "Tuning grids", 4 seeds each); on SpaceInvaders also lambda from the grid 0.3 / 0.65 / 0.9
# SpaceInvaders and Asterix: a 256x256 MLP (the 64x64 one stayed below PPO's preset there:
# 94.2 and 1.8; 256x256 at lr 1e-3 reached 150.5 and 3.2 in the grids, 4 epochs on 64x64 138.8)
_MINATAR_PQN_LR = {"Breakout-MinAtar": 8e-3, "SpaceInvaders-MinAtar": 1e-3,
                   "Asterix-MinAtar": 1e-3, "Freeway-MinAtar": 8e-3}
_MINATAR_PQN_WIDE = ("SpaceInvaders-MinAtar", "Asterix-MinAtar")
for _env in FAMILIES["MinAtar"]:
    register("pqn", _env, total_timesteps=1_000_000, num_envs=128, num_steps=32,
             update_epochs=2, num_minibatches=32, lr=_MINATAR_PQN_LR[_env], anneal_lr=True,
             q_lambda=0.3 if _env == "SpaceInvaders-MinAtar" else 0.65, epsilon_end=0.05,
             exploration_fraction=0.1, eval_every=24,
             **{**_MINATAR_NET, **({"hidden_sizes": (256, 256)} if _env in _MINATAR_PQN_WIDE
                                   else {})})

# The off-policy actor-critic: its defaults are tuned for CartPole-v1; on Pendulum-v1 one env
# step per gradient step, slow targets and no entropy bonus (the Gaussian's pre-squash entropy
# bonus widens the squashed policy into bang-bang actions: -285 at 15k steps with 0.05)
register("off_policy_ac", "CartPole-v1")
# Acrobot-v1: the defaults over 100k steps (-82.0 on 4 seeds; entropy 0.01: -81.5)
register("off_policy_ac", "Acrobot-v1", total_timesteps=100_000, eval_every=2_000)
# MountainCarContinuous-v0: Pendulum's settings over 100k steps; the Gaussian's dithering never
# reaches the flag, so the policy learns to stand still (about 0)
register("off_policy_ac", "MountainCarContinuous-v0", total_timesteps=100_000, num_envs=4,
         num_gradient_steps=4, actor_lr=1e-3, ent_coef=0.0, tau=0.01, eval_every=2_500,
         note="unsolved: about 0 in 100k steps (stands still; the flag gives +100)")
register("off_policy_ac", "Pendulum-v1", total_timesteps=15_000, num_envs=4,
         num_gradient_steps=4, actor_lr=1e-3, ent_coef=0.0, tau=0.01, eval_every=375)

# Partially observable tasks (purerl.pomdp, docs/memory.md): recurrent policies (memory). Each
# preset's feed-forward twin (memory="none", the same config and budget) is measured beside it
# (benchmarks/RESULTS.md, "Tuning grids").
# StatelessCartPole-v1: a GRU of 128 after a 128-unit layer (PureJaxRL's ppo_rnn shape), 16
# envs x 64 steps; 200k steps reached 416 on 4 seeds (the 64-unit net at lr 3e-3: 400 at 200k).
# 8 envs x 64 in 2 minibatches runs 2.4x faster but measured 363.2 +- 103.6 (suite.py) and
# 398.4 +- 121.5 (a sweep's seeds); lr 7e-4, 500k steps, ent_coef 0 / 0.003, normalised
# observations and 32 envs did no better (grids in RESULTS.md); with the heads' gain 2
# (PureJaxRL's, 2026-12-07) 362.5 +- 120.4 (before 381.3 +- 167.6). Entropy bonus 0.05: seeds
# that reached 500 fell back later at 0.01; a sweep of 8 seeds (RESULTS.md): 0.01 362.5, 0.03
# 340.8, 0.05 420.7, 0.1 416.3, 0.2 328.2
register("ppo", "StatelessCartPole-v1", total_timesteps=300_000, memory="gru",
         memory_size=128, hidden_sizes=(128,), activation="relu", num_envs=16, num_steps=64,
         num_minibatches=4, lr=1e-3, ent_coef=0.05, eval_every=30)
# StatelessPendulum-v1: the Pendulum preset's short horizon (gamma 0.9, normalised obs, no
# entropy, 10 epochs) with 32 envs x 64 steps split into 8 minibatches of 4 sequences
register("ppo", "StatelessPendulum-v1", total_timesteps=200_000, memory="gru", memory_size=64,
         hidden_sizes=(64,), num_envs=32, num_steps=64, update_epochs=10, num_minibatches=8,
         gamma=0.9, lr=1e-3, ent_coef=0.0, normalize_obs=True, eval_every=10)
# MemoryChain (memory_length 5): A2C answers right (1.0) on every seed within 30k steps; PPO
# with the default entropy bonus 0.01 settled on a guess on 1-2 seeds of 8 at any lr of the grid
# 1e-3 .. 5e-3 (0.86 at 50k), with 0.03 every seed answers right (grids in RESULTS.md)
_MEMORY_CHAIN = dict(memory="gru", memory_size=32, hidden_sizes=(32,), num_envs=8,
                     num_steps=16, lr=3e-3, eval_every=20, eval_episodes=32)
register("ppo", "MemoryChain-bsuite", total_timesteps=50_000, num_minibatches=2,
         ent_coef=0.03, **_MEMORY_CHAIN)
register("a2c", "MemoryChain-bsuite", total_timesteps=30_000, **_MEMORY_CHAIN)
# A2C on StatelessPendulum-v1: A2C's Pendulum-v1 preset (8 envs x 8 steps, GAE, gamma 0.9,
# Adam, normalised observations and advantages, clip 10, 2M steps) with a GRU of 64 after a
# 64-unit layer; lr 1e-3 -234.4 +- 75.2 (suite.py; a sweep of the same keys -233.7), lr 3e-3
# -575.2, the feed-forward twin -1004.7 (RESULTS.md); -224.0 +- 85.1 after the recurrent heads'
# initialisation became PureJaxRL's (gain 2)
register("a2c", "StatelessPendulum-v1", **{**lookup("a2c", "Pendulum-v1").overrides,
                                           "memory": "gru", "memory_size": 64,
                                           "hidden_sizes": (64,)})
# A2C on StatelessCartPole-v1: Adam, 16 envs x 32-step segments (backpropagation through each),
# entropy bonus 0.1. At 300k steps and 0.01: 357.8 +- 190.6, seeds that reach 500 and then fall
# back; sweeps of 8 seeds at 500k (RESULTS.md): ent_coef 0.01 355.3, 0.03 428.2, 0.1 462.3
# (lr 3e-3); GAE, normalised advantages and 32 or 64 envs did no better
register("a2c", "StatelessCartPole-v1", total_timesteps=500_000, memory="gru", memory_size=64,
         hidden_sizes=(64,), num_envs=16, num_steps=32, optimizer="adam", lr=3e-3,
         ent_coef=0.1, eval_every=30)

# MuJoCo Playground (Zakka et al. 2025), DM Control's cartpole balance: the cheapest task on
# the CPU (about 400k env steps/s); the others wait for a GPU.
register("ppo", "playground/CartpoleBalance", total_timesteps=250_000)
for _algo in ("ddpg", "td3", "sac"):
    register(_algo, "playground/CartpoleBalance", total_timesteps=50_000, eval_every=5_000)
