"""Trainer configuration: frozen dataclasses with checked construction.

Every trainer's ``Config`` subclasses :class:`BaseConfig`. Fields come in two kinds:

* static fields (env name, batch sizes, layer sizes, flags) fix array shapes or control flow and
  must be Python values when the trainer is built;
* hyperparameters, declared with :func:`hparam`, are plain numbers that the trainer reads from
  its train state, so they may be JAX tracers — ``train(key, {"lr": lr})`` under ``jax.vmap``
  sweeps them inside one compiled program.

Errors a user can make (unknown key, wrong type, out-of-range value) are ``ValueError`` naming
the field, raised when the config is built — never from inside a jitted function.
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
from typing import Any, Callable, ClassVar, Mapping, TypeVar

C = TypeVar("C", bound="BaseConfig")

_HPARAM = "purerl_hparam"
_CONTINUOUS_ONLY = "purerl_continuous_only"
_DISCRETE_ONLY = "purerl_discrete_only"


def hparam(default: float, *, check: Callable[[float], bool] | None = None, why: str = "",
           continuous_only: bool = False, discrete_only: bool = False) -> Any:
    """A numeric hyperparameter that may be traced (vmapped over) at run time.

    ``check`` validates concrete values (tracers are accepted unchecked); ``why`` describes the
    valid range in the error message. ``continuous_only`` / ``discrete_only``: see
    :func:`static`.
    """
    return dataclasses.field(default=default, metadata={
        _HPARAM: True, "check": check, "why": why, _CONTINUOUS_ONLY: continuous_only,
        _DISCRETE_ONLY: discrete_only})


def static(default: Any, *, check: Callable[[Any], bool] | None = None, why: str = "",
           continuous_only: bool = False, discrete_only: bool = False) -> Any:
    """A static field. ``continuous_only`` (``discrete_only``) fields may only differ from their
    default on environments with continuous (discrete) actions, where they have an effect."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("static defaults must be immutable (use a tuple)")
    return dataclasses.field(
        default=default,
        metadata={"check": check, "why": why, _CONTINUOUS_ONLY: continuous_only,
                  _DISCRETE_ONLY: discrete_only},
    )


def redefault(name: str, default: Any) -> Any:
    """Field ``name`` of :class:`BaseConfig`, :class:`RolloutConfig` or :class:`OffPolicyConfig`
    with a new default and the same checks, for a trainer's Config that only changes the
    default: ``activation: str = redefault("activation", "relu")``."""
    for cls in (OffPolicyConfig, RolloutConfig, BaseConfig):
        f = cls.__dataclass_fields__.get(name)
        if f is not None:
            return dataclasses.field(default=default, metadata=f.metadata)
    raise KeyError(f"no shared config field {name!r} to give a new default")


def positive(x) -> bool:
    return x > 0


def non_negative(x) -> bool:
    return x >= 0


def unit_interval(x) -> bool:
    return 0.0 <= x <= 1.0


def one_of(*options: str) -> Callable[[Any], bool]:
    def check(x) -> bool:
        return x in options

    check.options = options  # type: ignore[attr-defined]
    return check


def suggest(name: str, valid) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or an empty string."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_concrete_number(x) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """Fields every trainer shares. Subclasses add their own and may override defaults."""

    env: str = static("CartPole-v1")
    total_timesteps: int = static(500_000, check=positive, why="must be > 0")
    hidden_sizes: tuple[int, ...] = static((64, 64))
    activation: str = static("tanh", check=one_of("tanh", "relu", "elu", "gelu", "swish"),
                             why="must be one of tanh, relu, elu, gelu, swish")
    normalize_obs: bool = static(False)
    eval_every: int = static(50, check=non_negative,
                             why="must be >= 0 (0 evaluates only after the last update)")
    eval_episodes: int = static(10, check=positive, why="must be > 0")

    # Name of the algorithm, set by each trainer's Config.
    algo: ClassVar[str] = "base"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # lists from JSON / CLI become tuples so configs hash
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            if f.metadata.get(_HPARAM):
                if isinstance(value, (bool, str, tuple)) or value is None:
                    raise ValueError(f"{self.algo} config field {f.name!r}: expected a number, "
                                     f"got {value!r}")
                if not _is_concrete_number(value):
                    continue  # a tracer or array: checked by the user's sweep, not here
            self._check_type(f, value)
            check = f.metadata.get("check")
            if check is not None and not check(value):
                why = f.metadata.get("why") or "is out of range"
                raise ValueError(f"{self.algo} config field {f.name!r}={value!r} {why}")
        if self.hidden_sizes == () or any(
                not isinstance(h, int) or isinstance(h, bool) or h <= 0
                for h in self.hidden_sizes):
            raise ValueError(f"{self.algo} config field 'hidden_sizes'={self.hidden_sizes!r} "
                             "must be a non-empty tuple of positive ints, e.g. (64, 64)")
        self.validate()

    def _check_type(self, f: dataclasses.Field, value: Any) -> None:
        annotation = str(f.type)
        bad = False
        if annotation == "int":
            bad = not isinstance(value, int) or isinstance(value, bool)
        elif annotation == "bool":
            bad = not isinstance(value, bool)
        elif annotation == "str":
            bad = not isinstance(value, str)
        elif annotation == "float" and not f.metadata.get(_HPARAM):
            bad = not _is_concrete_number(value)
        if bad:
            raise ValueError(f"{self.algo} config field {f.name!r}: expected {annotation}, "
                             f"got {value!r} ({type(value).__name__})")

    def validate(self) -> None:
        """Cross-field checks of the subclass (called after the per-field checks)."""

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any] | None = None, **overrides: Any) -> C:
        """Build from a mapping, rejecting unknown keys with the closest valid name."""
        merged = {**(d or {}), **overrides}
        names = cls.field_names()
        for key in merged:
            if key not in names:
                raise ValueError(f"unknown {cls.algo} config key {key!r}{suggest(key, names)}; "
                                 f"valid keys: {', '.join(sorted(names))}")
        return cls(**merged)

    @classmethod
    def coerce(cls: type[C], config: "C | Mapping[str, Any] | None") -> C:
        """Accept a Config of this class, a plain dict, or None (the defaults)."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, BaseConfig):
            raise ValueError(f"expected a {cls.algo} Config, got a {config.algo} Config")
        if isinstance(config, Mapping):
            return cls.from_dict(config)
        raise ValueError(f"config must be a {cls.__name__} or a dict, got {type(config).__name__}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def hparam_names(cls) -> tuple[str, ...]:
        """Numeric hyperparameters that may be traced / vmapped over."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get(_HPARAM))

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def hparams(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.hparam_names()}

    def with_hparams(self: C, hparams: Mapping[str, Any]) -> C:
        """This config with hyperparameters replaced by (possibly traced) values."""
        return dataclasses.replace(self, **hparams)

    def check_hparams(self, hparams: Mapping[str, Any] | None) -> dict[str, Any]:
        """Validate the keys of a user's hyperparameter override dict."""
        hparams = dict(hparams or {})
        valid = self.hparam_names()
        for key in hparams:
            if key not in valid:
                hint = suggest(key, valid)
                static_note = ""
                if key in self.field_names():
                    static_note = (" is a static field (it fixes shapes or control flow); build a "
                                   "separate trainer for each value")
                raise ValueError(f"{key!r} cannot be swept as a traced hyperparameter of "
                                 f"{self.algo}{static_note}{hint}; traceable: {', '.join(valid)}")
        return hparams

    def num_updates_for(self, steps_per_update: int, what: str) -> int:
        """total_timesteps // steps_per_update, or a ValueError if the budget does not cover one
        update; ``what`` says what one update is made of."""
        if self.total_timesteps < steps_per_update:
            raise ValueError(
                f"{self.algo} config field 'total_timesteps'={self.total_timesteps} is smaller "
                f"than one update ({what} = {steps_per_update} env steps)")
        return self.total_timesteps // steps_per_update

    def check_divides(self, field: str, total: int, what: str) -> None:
        """ValueError unless the integer field ``field`` divides ``total`` (``what``)."""
        value = getattr(self, field)
        if total % value:
            raise ValueError(f"{self.algo} config field {field!r}={value} must divide {what} "
                             f"= {total}")

    def initial_hparams(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """This config's hyperparameters updated by a checked ``overrides`` dict, as float32
        arrays: what a trainer's ``init`` stores in the train state."""
        import jax.numpy as jnp  # config stays importable without initialising JAX

        merged = {**self.hparams(), **self.check_hparams(overrides)}
        return {k: jnp.asarray(v, jnp.float32) for k, v in merged.items()}

    def check_action_space(self, discrete: bool, env_name: str) -> None:
        """Reject continuous-only options set on a discrete environment and discrete-only ones
        set on a continuous environment (they would be silently ignored)."""
        only, kind, other = ((_CONTINUOUS_ONLY, "continuous", "discrete") if discrete
                             else (_DISCRETE_ONLY, "discrete", "continuous"))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get(only) and value != f.default:
                raise ValueError(
                    f"{self.algo} config field {f.name!r}={value!r} only applies to {kind} "
                    f"actions, but {env_name} has {other} actions; remove it")


@dataclasses.dataclass(frozen=True)
class RolloutConfig(BaseConfig):
    """Fields of the trainers whose update collects a fixed-length rollout of ``num_steps``
    steps in each of ``num_envs`` environments (PPO, TRPO)."""

    num_envs: int = static(16, check=positive, why="must be > 0")
    num_steps: int = static(32, check=positive, why="must be > 0")

    def validate(self) -> None:
        self.num_updates  # noqa: B018 -- raises if the budget is below one rollout

    @property
    def steps_per_update(self) -> int:
        """Environment steps in one rollout: num_envs * num_steps."""
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.num_updates_for(self.steps_per_update, "num_envs * num_steps")


@dataclasses.dataclass(frozen=True)
class OffPolicyConfig(BaseConfig):
    """Fields of the replay-buffer trainers (DQN, DDPG, TD3, SAC). One update steps each of the
    ``num_envs`` environments once, adds the transitions to the buffer and then, once
    ``learning_starts`` env steps are stored, takes ``num_gradient_steps`` gradient steps on
    minibatches of ``batch_size``: the update-to-data ratio is ``num_gradient_steps /
    num_envs`` (:attr:`utd`)."""

    num_envs: int = static(1, check=positive, why="must be > 0")
    buffer_size: int = static(1_000_000, check=positive, why="must be > 0")
    batch_size: int = static(128, check=positive, why="must be > 0")
    learning_starts: int = static(1_000, check=non_negative,
                                  why="must be >= 0 (env steps before the first gradient step)")
    num_gradient_steps: int = static(1, check=positive,
                                     why="must be > 0 (gradient steps per update)")

    def validate(self) -> None:
        if self.buffer_size < self.num_envs:
            raise ValueError(f"{self.algo} config field 'buffer_size'={self.buffer_size} must be "
                             f">= num_envs = {self.num_envs} (one update adds num_envs "
                             "transitions)")
        self.num_updates  # noqa: B018 -- raises if the budget is below one env step per env

    @property
    def num_updates(self) -> int:
        return self.num_updates_for(self.num_envs, "num_envs")

    @property
    def buffer_capacity(self) -> int:
        """Slots to allocate: ``buffer_size``, or fewer when the run stores fewer transitions."""
        return min(self.buffer_size, self.num_updates * self.num_envs)

    @property
    def utd(self) -> float:
        """Update-to-data ratio: gradient steps per env step."""
        return self.num_gradient_steps / self.num_envs

    def learning(self, update_step: Any) -> Any:
        """Whether update ``update_step`` (0-based) takes its gradient steps: once the buffer
        holds ``learning_starts`` transitions after this update's add, i.e.
        (update_step + 1) num_envs >= learning_starts. A Python ``True`` when every update
        learns; otherwise a traced boolean that depends only on the counter."""
        if self.learning_starts <= self.num_envs:
            return True
        return (update_step + 1) * self.num_envs >= self.learning_starts
