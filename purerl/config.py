"""Trainer configuration: frozen dataclasses whose fields declare their kind, their check and
their help text.

Every trainer's ``Config`` subclasses :class:`BaseConfig`. Fields come in two kinds:

* static fields (:func:`static`, :func:`choice`) fix array shapes or control flow and must be
  Python values when the trainer is built (env name, batch sizes, layer sizes, flags);
* hyperparameters (:func:`hparam`) are numbers that the trainer reads from its train state, so
  they may be JAX tracers: ``train(key, {"lr": lr})`` under ``jax.vmap`` sweeps them inside one
  compiled program.

Each field names a :class:`Check` (written once per kind of value: :data:`POSITIVE`,
:data:`UNIT_INTERVAL`, ...) and a help string (``purerl list ALGO`` prints them). Types come from
the annotations, resolved with :func:`typing.get_type_hints`. Every numeric value must be
finite. Errors a user can make (unknown key, wrong type, out-of-range or non-finite value,
contradictory fields) are a one-line ``ValueError`` naming the field, raised when the config is
built -- by ``Config(...)``, ``Config.from_dict`` and ``dataclasses.replace`` alike -- never from
inside a jitted function.

The checks are data. A class's field table (:meth:`BaseConfig.field_table`: one
:class:`FieldSpec` per field, read from the declarations) is walked by one loop when a config is
built; a class may replace a field's check (``tightened``) and declare checks across fields as
rows of ``rules`` (:class:`Rule`), which :meth:`BaseConfig.validate` runs after the per-field
checks. Subclasses add the checks that are not a comparison of two fields to ``validate``.

Some edge values are allowed on purpose: ``gamma=1`` (undiscounted returns stay finite because
every environment's episodes end, by termination or by its time limit), ``ent_coef=0`` and
``learning_starts=0``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import numbers
import typing
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from purerl import presets

C = TypeVar("C", bound="BaseConfig")

# the trainers whose ``memory`` field may be set (purerl.recurrent)
MEMORY_ALGOS = ("ppo", "a2c", "trpo", "a3c", "reinforce", "actor_critic")


# ------------------------------------------------------------------------------- checks


class Check(NamedTuple):
    """A test of a field's value and the phrase that says what a valid value is. ``test`` is
    elementwise on numbers and NumPy arrays (a swept hyperparameter is checked element by
    element)."""

    test: Callable[[Any], Any]
    why: str

    def holds(self, value: Any) -> bool:
        if isinstance(value, (str, tuple)):
            return bool(self.test(value))
        return bool(np.all(self.test(np.asarray(value))))


POSITIVE = Check(lambda x: x > 0, "must be > 0")
NON_NEGATIVE = Check(lambda x: x >= 0, "must be >= 0")
AT_LEAST_ONE = Check(lambda x: x >= 1, "must be >= 1")
UNIT_INTERVAL = Check(lambda x: (x >= 0) & (x <= 1), "must be in [0, 1]")
OPEN_UNIT_INTERVAL = Check(lambda x: (x > 0) & (x < 1), "must be in (0, 1)")
HALF_OPEN_UNIT_INTERVAL = Check(lambda x: (x > 0) & (x <= 1), "must be in (0, 1]")
ANY_NUMBER = Check(lambda x: np.ones_like(x, bool), "")
LAYER_SIZES = Check(lambda t: len(t) > 0 and all(h > 0 for h in t),
                    "must be a non-empty tuple of positive ints, e.g. (64, 64)")


def one_of(*options: str) -> Check:
    return Check(lambda x: x in options, f"must be one of {', '.join(map(repr, options))}")


class Rule(NamedTuple):
    """A check of field ``field`` against other fields (a row of a Config's ``rules``): unless
    ``holds(config)``, :meth:`BaseConfig.validate` raises the one-line ValueError
    ``<algo> config field '<field>'=<value> <why>``, ``why`` formatted with the config as ``c``."""

    field: str
    holds: Callable[[Any], bool]
    why: str


# ------------------------------------------------------------------------------- fields

_HPARAM, _CHECK, _HELP, _ONLY = "purerl_hparam", "purerl_check", "purerl_help", "purerl_only"


def _field(default: Any, help: str, check: Check | None, hparam: bool, only: str | None) -> Any:
    if isinstance(default, (list, dict, set)):
        raise TypeError("config defaults must be immutable (use a tuple)")
    if only not in (None, "continuous", "discrete"):
        raise ValueError(f"only= must be 'continuous' or 'discrete', got {only!r}")
    return dataclasses.field(default=default, metadata={
        _HPARAM: hparam, _CHECK: check, _HELP: help, _ONLY: only})


class FieldSpec(NamedTuple):
    """One row of a Config class's field table (:meth:`BaseConfig.field_table`): what the
    field's declaration (:func:`static`, :func:`choice`, :func:`hparam`) says, its resolved
    annotation and the check the class applies (:meth:`BaseConfig.check_of`)."""

    name: str
    type: Any
    default: Any
    hparam: bool  # a traced hyperparameter (else static)
    check: Check | None
    help: str
    only: str | None  # "continuous" / "discrete": may differ from the default only there

    def error(self, value: Any, annotation: Any) -> str | None:
        """Why ``value`` is not a valid value of the field with annotation ``annotation``: the
        end of the one-line error after "<algo> config field ", or None if it is valid: it must
        have the type, be finite and pass the check. A non-number of a hyperparameter is a
        concrete array of a sweep, checked element by element."""
        if self.hparam and not isinstance(value, numbers.Number):
            value = np.asarray(value)
            bad_type = not np.issubdtype(value.dtype, np.number)
        else:
            bad_type = not _type_matches(value, annotation)
        if bad_type:
            hint = ""
            if typing.get_origin(annotation) is tuple and isinstance(value, numbers.Number):
                hint = f"; use a tuple, e.g. {self.name}=({value},)"  # hidden_sizes=64
            return (f"{self.name!r}: expected {_type_name(annotation)}, got {value!r} "
                    f"({type(value).__name__}){hint}")
        if isinstance(value, (numbers.Number, np.ndarray)) and not np.all(np.isfinite(value)):
            return f"{self.name!r}={value!r} must be finite"
        if self.check is not None and not self.check.holds(value):
            return f"{self.name!r}={value!r} {self.check.why}"
        return None

    def row(self) -> tuple[str, str, str, str, str]:
        """The field's row of :meth:`BaseConfig.describe`: (name, type, default, "traced" or
        "static", help followed by the check's phrase and any action-space restriction)."""
        help_text = self.help
        if self.check is not None and self.check.why:
            help_text = f"{help_text}; {self.check.why}" if help_text else self.check.why
        if self.only:
            help_text = f"{help_text} ({self.only} actions only)"
        return (self.name, _type_name(self.type), repr(self.default),
                "traced" if self.hparam else "static", help_text)


def static(default: Any, help: str, check: Check | None = None, *,
           only: str | None = None) -> Any:
    """A static field. ``only="continuous"`` (``"discrete"``): the field may only differ from
    its default on environments with continuous (discrete) actions, where it has an effect."""
    return _field(default, help, check, False, only)


def choice(default: str, options: tuple[str, ...], help: str, *, only: str | None = None) -> Any:
    """A static string field with a fixed set of values."""
    return _field(default, help, one_of(*options), False, only)


def hparam(default: float, help: str, check: Check = ANY_NUMBER, *,
           only: str | None = None) -> Any:
    """A numeric hyperparameter that may be traced (vmapped over) at run time."""
    return _field(default, help, check, True, only)


def redefault(name: str, default: Any) -> Any:
    """Field ``name`` of :class:`BaseConfig`, :class:`RolloutConfig` or :class:`OffPolicyConfig`
    with a new default and the same check and help, for a trainer's Config that only changes
    the default: ``activation: str = redefault("activation", "relu")``."""
    for cls in (OffPolicyConfig, RolloutConfig, BaseConfig):
        f = cls.__dataclass_fields__.get(name)
        if f is not None:
            return dataclasses.field(default=default, metadata=f.metadata)
    raise KeyError(f"no shared config field {name!r} to give a new default")


def suggest(name: str, valid) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or an empty string."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def counter_max() -> int:
    """The largest value of purerl's step counters: int64 with ``JAX_ENABLE_X64=1``, else int32
    (see :func:`purerl.loop.counter_dtype`)."""
    return int(np.iinfo(np.int64 if jax.config.read("jax_enable_x64") else np.int32).max)


def seed_range() -> tuple[int, int]:
    """The integer seeds ``jax.random.key`` takes without aliasing: int32 and uint32 values
    (-2**31 .. 2**32 - 1; larger ones are silently reduced mod 2**32), or int64 with
    ``JAX_ENABLE_X64=1`` (beyond it: OverflowError)."""
    if jax.config.read("jax_enable_x64"):
        return -2**63, 2**63 - 1
    return -2**31, 2**32 - 1


def check_seed(seed: Any, what: str = "seed") -> int:
    """``seed`` as an int, or a one-line ValueError when ``jax.random.key`` cannot take it."""
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"{what} must be an integer, got {seed!r}")
    low, high = seed_range()
    if not low <= seed <= high:
        hint = "" if high > 2**32 else "; JAX_ENABLE_X64=1 allows 64-bit seeds"
        raise ValueError(f"{what} {seed} is outside the PRNG's seed range {low}..{high}{hint}")
    return int(seed)


def _type_matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` is a valid value of the resolved annotation ``annotation``."""
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if typing.get_origin(annotation) is tuple:
        (element, *_) = typing.get_args(annotation)
        return isinstance(value, tuple) and all(_type_matches(v, element) for v in value)
    return True


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) if typing.get_origin(annotation) is None \
        else str(annotation)


# ------------------------------------------------------------------------------- configs


# what budget_schedules() says of a learning rate annealed to 0 at the last update
ANNEAL_LR_SCHEDULE = ("anneal_lr=True anneals the learning rate to 0 over the run's total number "
                      "of updates")


class _FieldTable:
    """The class-level part of :class:`BaseConfig` (every trainer's Config has these
    classmethods): the table of what its fields declare, the check of the keys a config is
    built from, and :meth:`coerce`."""

    @classmethod
    @functools.cache
    def field_table(cls) -> Mapping[str, FieldSpec]:
        """One :class:`FieldSpec` per field, in field order: what :meth:`BaseConfig.__post_init__`
        checks each value against."""
        hints = cls.field_types()
        return MappingProxyType({f.name: FieldSpec(
            f.name, hints[f.name], f.default, bool(f.metadata.get(_HPARAM)), cls.check_of(f.name),
            f.metadata.get(_HELP, ""), f.metadata.get(_ONLY)) for f in dataclasses.fields(cls)})

    @classmethod
    def check_of(cls, name: str) -> Check | None:
        """The check of field ``name``: the class's :attr:`~BaseConfig.tightened` one, else the
        field's own (so a class may tighten a field that a subclass defines)."""
        own = cls.__dataclass_fields__[name].metadata.get(_CHECK)
        return cls.tightened.get(name, own)

    @classmethod
    @functools.cache
    def field_types(cls) -> dict[str, Any]:
        """Every field's annotation, resolved (``int``, ``tuple[int, ...]``, ...)."""
        return typing.get_type_hints(cls)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def hparam_names(cls) -> tuple[str, ...]:
        """Numeric hyperparameters that may be traced / vmapped over."""
        return tuple(s.name for s in cls.field_table().values() if s.hparam)

    @classmethod
    def describe(cls) -> list[tuple[str, str, str, str, str]]:
        """One row per field: (name, type, default, "traced" or "static", help)."""
        return [spec.row() for spec in cls.field_table().values()]

    @classmethod
    def check_keys(cls, keys: Any, positional: int = 0) -> None:
        """ValueError for an unknown key (naming the closest valid one), more positional values
        than fields, or a field given both positionally and by name."""
        names = cls.field_names()
        for key in keys:
            if key not in names:
                hint = (f" (renamed to {cls.renamed[key]!r})" if key in cls.renamed
                        else suggest(str(key), names))
                raise ValueError(f"unknown {cls.algo} config key {key!r}{hint}; "
                                 f"valid keys: {', '.join(sorted(names))}")
        if positional > len(names):
            raise ValueError(f"{cls.algo} Config takes at most {len(names)} positional values "
                             f"(its fields in order), got {positional}; pass fields by name")
        twice = [k for k in names[:positional] if k in keys]
        if twice:
            raise ValueError(f"{cls.algo} config field {twice[0]!r} given both positionally "
                             "and by name")

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


class _Hyperparams:
    """The traced hyperparameters of a :class:`BaseConfig` (its :func:`hparam` fields), which a
    trainer reads from its train state and ``train(key, hparams)`` may override or sweep."""

    def hparams(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.hparam_names()}

    def with_hparams(self: C, hparams: Mapping[str, Any]) -> C:
        """This config with hyperparameters replaced by (possibly traced) values, unchecked:
        the one config an ``update`` reads, static and traced fields alike."""
        new = copy.copy(self)
        for name, value in hparams.items():
            object.__setattr__(new, name, value)
        return new

    def check_hparams(self, hparams: Mapping[str, Any] | None) -> dict[str, Any]:
        """Validate a user's hyperparameter override dict: every key must be a traceable field,
        and every concrete value (a number or an array, not a tracer) must pass the field's
        checks; returns the dict."""
        hparams = dict(hparams or {})
        valid = self.hparam_names()
        for key, value in hparams.items():
            if key not in valid:
                static_note = ""
                if key in self.field_names():
                    static_note = (" is a static field (it fixes shapes or control flow); build a "
                                   "separate trainer for each value")
                raise ValueError(f"{key!r} cannot be swept as a traced hyperparameter of "
                                 f"{self.algo}{static_note}{suggest(key, valid)}; traceable: "
                                 f"{', '.join(valid)}")
            if not is_tracer(value):
                self._check_value(key, value)
        return hparams

    def initial_hparams(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """This config's hyperparameters updated by a checked ``overrides`` dict, as float32
        arrays: what a trainer's ``init`` stores in the train state. Traced overrides are
        checked when the compiled program runs (a host callback; a bad value fails the run
        with an error naming the field)."""
        overrides = self.check_hparams(overrides)
        traced = {k: v for k, v in overrides.items() if is_tracer(v)}
        if traced:
            jax.debug.callback(functools.partial(_check_traced_hparams, self), traced)
        merged = {**self.hparams(), **overrides}
        return {k: jnp.asarray(v, jnp.float32) for k, v in merged.items()}


def _check_traced_hparams(config: BaseConfig, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        config._check_value(key, np.asarray(value))


class _CrossFieldChecks:
    """The checks of a :class:`BaseConfig` that involve more than one field, the run's budget or
    the environment, and the helpers that subclasses' :meth:`validate` call."""

    def validate(self) -> None:
        """Cross-field checks, called after the per-field checks: the class's
        :attr:`~BaseConfig.rules`, in order. Subclasses add theirs and call
        ``super().validate()``."""
        if self.memory != "none" and self.algo not in MEMORY_ALGOS:
            raise ValueError(f"{self.algo} config field 'memory'={self.memory!r}: {self.algo} has "
                             f"no recurrent policy; memory is supported by "
                             f"{', '.join(MEMORY_ALGOS)}")
        for rule in self.rules:
            if not rule.holds(self):
                raise ValueError(f"{self.algo} config field {rule.field!r}="
                                 f"{getattr(self, rule.field)} {rule.why.format(c=self)}")

    def _check_counter(self, name: str, value: int) -> None:
        """Refuse a count that the step counters (int32 unless JAX_ENABLE_X64=1) cannot hold."""
        limit = counter_max()
        if value > limit:
            raise ValueError(
                f"{self.algo} config field {name!r}={value} exceeds purerl's int32 step "
                f"counters (max {limit}); set JAX_ENABLE_X64=1 for int64 counters"
                if limit < 2**32 else
                f"{self.algo} config field {name!r}={value} exceeds the int64 step counters")

    def check_divides(self, field: str, total: int, what: str) -> None:
        """ValueError unless the integer field ``field`` divides ``total`` (``what``)."""
        value = getattr(self, field)
        if total % value:
            raise ValueError(f"{self.algo} config field {field!r}={value} must divide {what} "
                             f"= {total}")

    def check_order(self, low: str, high: str) -> None:
        """ValueError unless field ``low`` <= field ``high`` (concrete values only)."""
        a, b = getattr(self, low), getattr(self, high)
        if isinstance(a, numbers.Number) and isinstance(b, numbers.Number) and a > b:
            raise ValueError(f"{self.algo} config field {low!r}={a} must be <= {high}={b}")

    def check_action_space(self, discrete: bool, env_name: str) -> None:
        """Reject continuous-only options set on a discrete environment and discrete-only ones
        set on a continuous environment (they would be silently ignored)."""
        kind, other = ("continuous", "discrete") if discrete else ("discrete", "continuous")
        for s in self.field_table().values():
            value = getattr(self, s.name)
            if s.only == kind and value != s.default:
                raise ValueError(
                    f"{self.algo} config field {s.name!r}={value!r} only applies to {kind} "
                    f"actions, but {env_name} has {other} actions; remove it")

    def num_updates_for(self, steps_per_update: int, what: str) -> int:
        """total_timesteps // steps_per_update, or a ValueError if the budget does not cover one
        update; ``what`` says what one update is made of."""
        if self.total_timesteps < steps_per_update:
            raise ValueError(
                f"{self.algo} config field 'total_timesteps'={self.total_timesteps} is smaller "
                f"than one update ({what} = {steps_per_update} env steps)")
        return self.total_timesteps // steps_per_update

    def budget_schedules(self) -> tuple[str, ...]:
        """What in this config depends on ``total_timesteps`` beyond the number of updates (a
        schedule over the whole run, e.g. a learning rate annealed to 0 at the last update), one
        phrase each; empty when a run of this config can change its budget after training has
        started and match a run trained with the new budget from the start
        (``purerl resume --total-timesteps``). Trainers with such schedules override this."""
        return ()


@dataclasses.dataclass(frozen=True)
class BaseConfig(_FieldTable, _Hyperparams, _CrossFieldChecks):
    """Fields every trainer shares. Subclasses add their own and may change defaults."""

    env: str = static("CartPole-v1", "environment id (purerl list shows them)")
    total_timesteps: int = static(500_000, "environment steps per seed", POSITIVE)
    hidden_sizes: tuple[int, ...] = static((64, 64), "hidden layer widths of every MLP",
                                           LAYER_SIZES)
    activation: str = choice("tanh", ("tanh", "relu", "elu", "gelu", "swish"),
                             "hidden-layer activation")
    torso: str = choice("auto", ("auto", "mlp", "cnn"),
                        "feature extractor of every network: mlp (flattened observation), cnn "
                        "(one 3x3x16 convolution before the hidden layers, Young & Tian 2019); "
                        "auto: cnn for image observations")
    normalize_obs: bool = static(False, "running mean / variance observation normalisation")
    memory: str = choice("none", ("none", "gru", "lstm"),
                         "recurrent policy: none (feed-forward), gru or lstm; the carry resets "
                         "at every episode start (" + ", ".join(MEMORY_ALGOS) + " only)")
    memory_size: int = static(128, "units of the recurrent cell (memory != 'none')", POSITIVE)
    eval_every: int = static(50, "updates between deterministic evaluations (0: only after the "
                             "last update)", NON_NEGATIVE)
    eval_episodes: int = static(10, "episodes per deterministic evaluation", POSITIVE)

    # Name of the algorithm, set by each trainer's Config.
    algo: ClassVar[str] = "base"
    # Former field names -> current ones, for the unknown-key error.
    renamed: ClassVar[Mapping[str, str]] = {}
    # Left unannotated, so field_types() (and `purerl train --set`) do not list them:
    # field name -> a check that replaces the field's own in this class and its subclasses,
    tightened = MappingProxyType({})
    # and checks across fields, run by validate() in order after every field passed its own.
    rules = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> "BaseConfig":
        # Runs before the dataclass __init__ with the same arguments, so Config(lrr=0.1) and
        # dataclasses.replace(config, lrr=0.1) get from_dict's ValueError naming the closest
        # key instead of __init__'s TypeError. Pickling and copy.copy call __new__ without
        # arguments.
        cls.check_keys(kwargs, positional=len(args))
        return super().__new__(cls)

    def __post_init__(self) -> None:
        """Check every field against its row of :meth:`field_table`, then the step counters,
        then :meth:`validate`."""
        for spec in self.field_table().values():
            value = getattr(self, spec.name)
            if isinstance(value, list):  # lists from JSON / CLI become tuples so configs hash
                value = tuple(value)
                object.__setattr__(self, spec.name, value)
            if spec.hparam and not isinstance(value, numbers.Number):
                if isinstance(value, (bool, str, tuple)) or value is None:
                    raise ValueError(f"{self.algo} config field {spec.name!r}: expected a "
                                     f"number, got {value!r}")
                if is_tracer(value):
                    continue  # traced: see check_hparams
            self._check_value(spec.name, value, spec.type)
        self._check_counter("total_timesteps", self.total_timesteps)
        self.validate()

    def _check_value(self, name: str, value: Any, annotation: Any = float) -> None:
        """ValueError unless ``value`` has the field's type, is finite and passes its check."""
        error = self.field_table()[name].error(value, annotation)
        if error:
            raise ValueError(f"{self.algo} config field {error}")

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any] | None = None, **overrides: Any) -> C:
        """Build from a mapping, rejecting unknown keys with the closest valid name."""
        return cls(**{**(d or {}), **overrides})

    @classmethod
    def for_env(cls: type[C], env: str, **overrides: Any) -> C:
        """The tuned preset of this algorithm for ``env`` (:mod:`purerl.presets`) with
        ``overrides`` on top; the defaults with ``env`` and a warning where none exists."""
        return presets.for_env(cls, env, **overrides)

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class RolloutConfig(BaseConfig):
    """Fields of the trainers whose update collects a fixed-length rollout of ``num_steps``
    steps in each of ``num_envs`` environments (A2C, A3C, PPO, TRPO)."""

    # what steps_per_update multiplies, for error messages
    update_size: ClassVar[str] = "num_envs * num_steps"

    num_envs: int = static(16, "parallel environments", POSITIVE)
    num_steps: int = static(32, "rollout length per environment and update", POSITIVE)

    def validate(self) -> None:
        self.num_updates  # noqa: B018 -- raises if the budget is below one rollout
        super().validate()

    @property
    def steps_per_update(self) -> int:
        """Environment steps in one rollout: num_envs * num_steps."""
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.num_updates_for(self.steps_per_update, self.update_size)


@dataclasses.dataclass(frozen=True)
class OffPolicyConfig(BaseConfig):
    """Fields of the replay-buffer trainers (DQN, DDPG, TD3, SAC). One update steps each of the
    ``num_envs`` environments once, adds the transitions to the buffer and then, once
    ``learning_starts`` env steps are stored, takes ``num_gradient_steps`` gradient steps on
    minibatches of ``batch_size``: the update-to-data ratio is ``num_gradient_steps /
    num_envs`` (:attr:`utd`)."""

    num_envs: int = static(1, "parallel environments", POSITIVE)
    buffer_size: int = static(1_000_000, "replay buffer capacity (transitions)", POSITIVE)
    batch_size: int = static(128, "transitions per gradient step", POSITIVE)
    learning_starts: int = static(1_000, "env steps stored before the first gradient step",
                                  NON_NEGATIVE)
    num_gradient_steps: int = static(1, "gradient steps per update", POSITIVE)

    # tau = 0 would freeze the target networks at their random initialisation (the critic would
    # regress onto a fixed random target); tau = 1 is a hard copy
    tightened = MappingProxyType({"tau": HALF_OPEN_UNIT_INTERVAL})
    rules = (
        Rule("buffer_size", lambda c: c.buffer_size >= c.num_envs,
             "must be >= num_envs = {c.num_envs} (one update adds num_envs transitions)"),
        Rule("batch_size", lambda c: c.batch_size <= c.buffer_size,
             "must be <= buffer_size = {c.buffer_size} (a batch would repeat transitions); "
             "lower batch_size or raise buffer_size"),
        Rule("learning_starts", lambda c: c.learning_starts <= c.run_steps,
             "exceeds the run's {c.run_steps} env steps (total_timesteps={c.total_timesteps}): "
             "no gradient step would be taken; lower learning_starts or raise total_timesteps"),
    )

    def validate(self) -> None:
        super().validate()
        self._check_counter("learning_starts", self.learning_starts)
        self._check_counter("num_updates * num_gradient_steps",
                            self.num_updates * self.num_gradient_steps)

    @property
    def num_updates(self) -> int:
        return self.num_updates_for(self.num_envs, "num_envs")

    @property
    def run_steps(self) -> int:
        """Environment steps the run takes (and transitions it stores): num_updates * num_envs."""
        return self.num_updates * self.num_envs

    @property
    def buffer_capacity(self) -> int:
        """Slots to allocate: ``buffer_size``, or fewer when the run stores fewer transitions."""
        return min(self.buffer_size, self.run_steps)

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

    def warming_up(self, update_step: Any) -> Any:
        """Whether update ``update_step`` acts uniformly at random (``random_warmup``): fewer
        than ``learning_starts`` env steps were taken before it."""
        return update_step * self.num_envs < self.learning_starts
