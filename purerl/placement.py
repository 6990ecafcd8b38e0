"""Where the command line's chunked runs go: ``purerl train/resume --devices N
[--data-parallel]`` as a :class:`Placement` (one device, seeds sharded over N devices, or one
run's environments split over them). It serves :mod:`purerl.cli`; the machinery it picks from is
:mod:`purerl.distributed`'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import jax
from jax.sharding import Mesh

from purerl import distributed, loop

__all__ = ["Placement", "placement"]


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a chunked run goes (``purerl train --devices N [--data-parallel]``): ``mesh``
    None is one device and plain :func:`purerl.loop.run_chunked`, bitwise the run without the
    flags."""

    mesh: Mesh | None = None
    data_parallel: bool = False

    @property
    def num_devices(self) -> int:
        """How many devices the run uses."""
        return 1 if self.mesh is None else self.mesh.size

    def agent(self, config: Any, agent: loop.Agent) -> loop.Agent:
        """The agent to train: ``agent`` itself, or ``config``'s data-parallel agent."""
        return distributed.make_agent(config, self.mesh) if self.data_parallel else agent

    def run_chunked(self, agent: loop.Agent, keys: jax.Array | None, **kwargs: Any
                    ) -> Iterator[tuple[int, Any, loop.Metrics]]:
        """:func:`purerl.loop.run_chunked` on this placement's devices."""
        if self.mesh is None:
            return loop.run_chunked(agent, keys, **kwargs)
        return distributed.run_chunked(agent, keys, mesh=self.mesh,
                                       data_parallel=self.data_parallel, **kwargs)

    def describe(self, config: Any, seeds: int) -> str:
        """One line for the run's messages and summary."""
        if self.mesh is None:
            return f"1 ({jax.devices()[0].platform})"
        kind = jax.devices()[0].platform
        if self.data_parallel:
            each = config.num_envs // self.num_devices
            return (f"{self.num_devices} {kind}, data parallel: {each} of {config.num_envs} envs "
                    "each")
        padded = distributed.pad_to(seeds, self.num_devices)
        extra = f", padded to {padded} seeds (extra ones dropped)" if padded != seeds else ""
        return f"{self.num_devices} {kind}, seeds sharded{extra}"


def placement(devices: int | str | None, data_parallel: bool, config: Any) -> Placement:
    """The :class:`Placement` of ``--devices`` (None: one device, or every device with
    ``--data-parallel``; ``all``; N) and ``--data-parallel``; ValueError (one line) for a
    device count this process does not have or a config that cannot be split."""
    if devices is None and not data_parallel:
        return Placement()
    count = distributed.device_count(devices)
    if data_parallel:
        mesh = distributed.make_mesh(count, distributed.DATA_AXIS)
        # the checks: trainer supported, envs / buffer / batch divide
        distributed.make_agent(config, mesh)
        return Placement(mesh, True)
    return Placement(distributed.make_mesh(count, distributed.SEED_AXIS))
