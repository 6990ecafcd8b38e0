"""Animated GIFs of a saved policy's episodes, drawn by gymnax's visualiser
(``gymnax.visualize.Visualizer``), which draws the classic-control tasks, bsuite Catch, MinAtar
and a few of gymnax's misc environments; :data:`RENDERABLE` lists them. The classic-control
frames come from Gymnasium's pygame renderer (``pip install 'purerl[render]'``); it builds a
Gymnasium environment per frame, so a 500-step CartPole episode takes about a minute."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import jax
import numpy as np

from purerl import envs, pomdp
from purerl.rollout import Recording

__all__ = ["RENDERABLE", "check_renderable", "save_gif"]

# the environments gymnax 1.0's Visualizer draws (its init/update dispatch on env.name)
_PYGAME = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCar-v0",
           "MountainCarContinuous-v0")  # drawn by Gymnasium's pygame renderer
RENDERABLE = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCar-v0",
              "MountainCarContinuous-v0", "Catch-bsuite", "Asterix-MinAtar", "Breakout-MinAtar",
              "Freeway-MinAtar", "Seaquest-MinAtar", "SpaceInvaders-MinAtar", "Pong-misc",
              "PointRobot-misc", "MetaMaze-misc", "FourRooms-misc")


def check_renderable(env_id: str) -> None:
    """ValueError (one line) unless gymnax's visualiser draws ``env_id`` here (a stateless
    task is drawn as its full task)."""
    env_id = pomdp.rendered_as(env_id)
    if env_id not in RENDERABLE:
        raise ValueError(f"gymnax's visualiser cannot draw {env_id!r} (it draws "
                         f"{', '.join(RENDERABLE)}); evaluate without --gif")
    if env_id in _PYGAME and importlib.util.find_spec("pygame") is None:
        raise ValueError(f"drawing {env_id} needs pygame (Gymnasium's classic-control "
                         "renderer): pip install 'purerl[render]'")


def save_gif(env: envs.Env, recording: Recording, path: str | os.PathLike) -> int:
    """Write the ``active`` steps of ``recording`` (one episode, unbatched numpy or jax arrays)
    as an animated GIF at ``path``, titled with the return so far. Returns the frame count."""
    check_renderable(env.spec.name)
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame: no sound device needed
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # frames are drawn off-screen; without this SDL probes for a display on every frame
        # and prints "XDG_RUNTIME_DIR is invalid or not set" each time on a headless machine
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    # lazy, after the variables above: it imports pyplot (and pygame reads them)
    from gymnax.visualize import Visualizer

    active = np.asarray(recording.active)
    length = int(active.sum())
    states: list[Any] = [jax.tree.map(lambda x, t=t: np.asarray(x)[t], recording.env_state)
                         for t in range(length)]
    returns = np.cumsum(np.asarray(recording.reward)[:length])
    drawn = getattr(env.env, "inner", env.env)  # a stateless task: the full task's drawing
    Visualizer(drawn, env.params, states, returns).animate(os.fspath(path))
    return length
