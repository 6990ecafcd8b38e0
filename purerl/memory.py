"""A memory estimate checked before compiling: a run that cannot fit in memory fails at once
with a one-line error, instead of compiling and then allocating until the machine swaps or the
process is killed.

The estimate is deliberately simple and a lower bound, so that it never refuses a run that fits.
Per seed it adds

* the train state, exactly: ``jax.eval_shape(agent.init, key)`` traces ``init`` without
  allocating anything and gives every array's shape -- the networks and their optimiser state
  (``hidden_sizes``), the replay buffer (``buffer_size``, at most the run's env steps), the
  environments and the observation normaliser (``num_envs``);
* the metrics: ``num_updates`` x the 4 metrics every trainer reports (``episode_return``,
  ``episode_count``, ``env_steps``, ``eval_return``) x 4 bytes;

and, for a chunked run (:func:`purerl.loop.run_chunked`, the CLI), where a compiled chunk's
input state stays alive while it computes the next one,

* the state a second time, and the largest array one update computes (a rollout, a minibatch's
  activations; read from the update's jaxpr, leaving out arrays the size of a state array,
  which XLA may update in place).

needed = seeds x that. Everything else XLA allocates comes on top and is not counted.

The limit is the memory of the local accelerators (the sum of their ``memory_stats()``
``bytes_limit``) or, where devices report none (the CPU), the host's physical RAM. The
environment variable ``PURERL_MEMORY_LIMIT`` replaces it: a size such as ``64G`` or ``512M``
(binary units), or ``off`` to skip the check.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Iterator, NamedTuple

import jax

ENV_VAR = "PURERL_MEMORY_LIMIT"
METRICS_PER_UPDATE = 4  # episode_return, episode_count, env_steps, eval_return: every trainer's

# what each top-level field of a train state holds, and the config field that sizes it
_PARTS = {"buffer": ("replay buffer", "buffer_size"),
          "run": ("environments", "num_envs"),
          "memory": ("recurrent carries", "num_envs, memory_size")}
_NETWORKS = ("networks and optimiser state", "hidden_sizes")
_METRICS = ("per-update metrics", "total_timesteps")
_UPDATE = ("one update's largest array", "num_envs, num_steps or batch_size")


class Limit(NamedTuple):
    bytes: int | None  # None: no check
    source: str  # where the limit comes from, for the message


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"`` (binary units, as :func:`parse_size` reads them)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def parse_size(text: str) -> int | None:
    """``"64G"`` -> 64 GiB in bytes (units K, M, G, T; binary; a bare number is bytes);
    ``"off"``/``"none"``/``"0"`` -> None. ValueError if it does not parse."""
    text = text.strip().lower()
    if text in ("off", "none", "0", ""):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", text)
    if not match:
        raise ValueError(f"{ENV_VAR}={text!r}: expected a size such as 64G or 512M, or 'off'")
    return int(float(match[1]) * 1024 ** " kmgt".index(match[2] or " "))


def memory_limit() -> Limit:
    """The bytes a run may use: ``PURERL_MEMORY_LIMIT``, else the local devices' memory, else
    the host's RAM."""
    override = os.environ.get(ENV_VAR)
    if override is not None:
        return Limit(parse_size(override), f"{ENV_VAR}={override}")
    limits = []
    for device in jax.local_devices():
        try:
            stats = device.memory_stats()
        except Exception:  # noqa: BLE001 -- backends without memory stats raise or return None
            stats = None
        if stats and stats.get("bytes_limit"):
            limits.append(int(stats["bytes_limit"]))
    if limits:
        return Limit(sum(limits), f"the memory of {len(limits)} {jax.default_backend()} "
                                  "device(s)")
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): no check
        return Limit(None, "unknown")
    return Limit(int(ram), "the host's RAM")


@functools.lru_cache(maxsize=32)
def state_bytes(agent: Any) -> dict[tuple[str, str], int]:
    """Bytes of one seed's train state by part, ``{(what, config field): bytes}``, from the
    shapes of ``agent.init`` (traced, nothing allocated)."""
    shapes = jax.eval_shape(agent.init, jax.random.key(0))
    parts: dict[tuple[str, str], int] = {}
    fields = getattr(shapes, "__dataclass_fields__", None) or {}
    for name in fields or [None]:
        sub = getattr(shapes, name) if name is not None else shapes
        part = _PARTS.get(name, _NETWORKS)
        parts[part] = parts.get(part, 0) + sum(_nbytes(leaf) for leaf in jax.tree.leaves(sub))
    return parts


@functools.lru_cache(maxsize=32)
def update_bytes(agent: Any) -> int:
    """Bytes of the largest array one ``agent.update`` computes (one seed), other than arrays
    the size of a state array (XLA may write those in place), from its jaxpr (traced, nothing
    allocated or compiled)."""
    state = jax.eval_shape(agent.init, jax.random.key(0))
    in_place = {_nbytes(leaf) for leaf in jax.tree.leaves(state)}
    largest = 0
    for aval in _avals(jax.make_jaxpr(agent.update)(state).jaxpr):
        n = _nbytes(aval)
        if n not in in_place:
            largest = max(largest, n)
    return largest


def _nbytes(aval: Any) -> int:
    try:
        return int(aval.size) * aval.dtype.itemsize
    except (AttributeError, TypeError):  # tokens and other non-arrays
        return 0


def _avals(jaxpr: Any) -> Iterator[Any]:
    """The output avals of every equation of ``jaxpr`` and of the jaxprs nested in it (scan
    and loop bodies, cond branches, inner jits)."""
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            yield var.aval
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr or a Jaxpr
                if hasattr(inner, "eqns"):
                    yield from _avals(inner)


def estimate(agent: Any, chunked: bool) -> dict[tuple[str, str], int]:
    """One seed's bytes by part (see the module docstring)."""
    parts = dict(state_bytes(agent))
    if chunked:
        (_, field), _ = max(parts.items(), key=lambda kv: kv[1])
        parts[("a chunk's input copy of the state", field)] = sum(parts.values())
        parts[_UPDATE] = update_bytes(agent)
    parts[_METRICS] = agent.num_updates * METRICS_PER_UPDATE * 4
    return parts


def check(agent: Any, seeds: int = 1, *, chunked: bool = True, what: str = "this run",
          seeds_name: str = "the number of seeds") -> None:
    """A one-line ValueError when ``seeds`` seeds of ``agent`` (:func:`estimate`) need more
    than :func:`memory_limit`, saying how much and what to lower (``seeds_name`` when one seed
    fits, else the config field of the largest part)."""
    limit = memory_limit()
    if limit.bytes is None:
        return
    parts = estimate(agent, chunked)
    per_seed = sum(parts.values())
    needed = seeds * per_seed
    if needed <= limit.bytes:
        return
    breakdown = ", ".join(f"{what_} {format_bytes(n)}" for (what_, _), n in
                          sorted(parts.items(), key=lambda kv: -kv[1]) if n)
    if per_seed <= limit.bytes:
        lower = f"lower {seeds_name} (at most {limit.bytes // per_seed} fit)"
    else:
        (_, field), _ = max(parts.items(), key=lambda kv: kv[1])
        lower = f"lower {field}"
    count = "" if seeds == 1 else f" for {seeds} seeds x {format_bytes(per_seed)}"
    raise ValueError(
        f"{what} needs at least {format_bytes(needed)} of memory{count} ({breakdown}) but the "
        f"limit is {format_bytes(limit.bytes)} ({limit.source}); {lower} (or set {ENV_VAR}, "
        f"e.g. {ENV_VAR}=off)")
