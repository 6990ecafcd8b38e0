"""Shared test code: one small configuration per trainer and its cached vmapped run, how the
learning checks measure a run, where the metrics must be NaN (docs/contract.md), comparisons
of train states and metrics, the subprocesses of the multi-device checks and the notebooks'
execution. (Test modules import it as ``from helpers import ...``: pyproject.toml puts tests/
on pytest's ``pythonpath``.)"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

import purerl
from purerl import loop

# A few updates of every trainer on its reference environment, small enough to compile and run
# in seconds; the off-policy ones cross their warm-up and several target / actor updates.
OFF_POLICY_SMALL = dict(total_timesteps=240, num_envs=2, learning_starts=60, batch_size=32,
                        hidden_sizes=(16, 16), num_gradient_steps=2, eval_every=40,
                        eval_episodes=2)
SMALL: dict[str, dict] = {
    "reinforce": dict(env="CartPole-v1", num_episodes=3, total_timesteps=3 * 500 * 4,
                      vf_iters=3, eval_every=2, eval_episodes=2),
    "actor_critic": dict(env="CartPole-v1", num_envs=3, total_timesteps=3 * 500 * 4, vf_iters=3,
                         eval_every=2, eval_episodes=2),
    "a2c": dict(env="CartPole-v1", num_envs=4, num_steps=5, total_timesteps=4 * 5 * 6,
                eval_every=3, eval_episodes=2),
    "a3c": dict(env="CartPole-v1", num_envs=4, num_steps=5, num_workers=3,
                total_timesteps=3 * 4 * 5 * 6, eval_every=3, eval_episodes=2),
    "ppo": dict(env="CartPole-v1", num_envs=4, num_steps=32, total_timesteps=4 * 32 * 6,
                update_epochs=2, num_minibatches=2, eval_every=3, eval_episodes=2),
    "trpo": dict(env="CartPole-v1", num_envs=4, num_steps=32, total_timesteps=4 * 32 * 6,
                 vf_minibatches=4, vf_epochs=2, eval_every=3, eval_episodes=2),
    "dqn": dict(env="CartPole-v1", num_envs=4, num_gradient_steps=2, batch_size=8,
                buffer_size=64, learning_starts=16, target_update_every=5, hidden_sizes=(16, 16),
                total_timesteps=4 * 30, eval_every=10, eval_episodes=2),
    "pqn": dict(env="CartPole-v1", num_envs=4, num_steps=16, total_timesteps=4 * 16 * 6,
                update_epochs=2, num_minibatches=2, hidden_sizes=(16, 16), eval_every=3,
                eval_episodes=2),
    "ddpg": dict(env="Pendulum-v1", **OFF_POLICY_SMALL),
    "td3": dict(env="Pendulum-v1", **OFF_POLICY_SMALL),
    "sac": dict(env="Pendulum-v1", **OFF_POLICY_SMALL),
    "off_policy_ac": dict(env="CartPole-v1", **OFF_POLICY_SMALL),
}


def small_agent(algo: str, **overrides) -> loop.Agent:
    return purerl.get_algorithm(algo).make_agent({**SMALL[algo], **overrides})


@functools.cache
def vmapped_run(algo: str, seeds: int = 3, level: int = 1, **overrides):
    """``(keys, train, state, metrics)`` of ``jax.vmap(train)`` over ``seeds`` keys split from
    ``jax.random.key(0)``, ``train`` made from ``{**SMALL[algo], **overrides}``. Compiled and run
    once per process and shared by the tests that read it (so they must not modify it).
    ``level=0``: compiled at LLVM level 0 (:func:`purerl_jit_at_level0`), for tests that read its
    metrics or compare it only with level-0 runs."""
    train = purerl.get_algorithm(algo).make_train({**SMALL[algo], **overrides})
    keys = jax.random.split(jax.random.key(0), seeds)
    with purerl_jit_at_level0() if level == 0 else contextlib.nullcontext():
        vmapped = purerl.jit(jax.vmap(train))
    return keys, train, *vmapped(keys)


def jit_level0(fn):
    """``jax.jit`` at LLVM level 0: about half the compile time of level 1 (benchmarks/RESULTS.md,
    "Compile time of the test suite") and up to 2x the run time, with results that differ from
    level 1 in the last bits -- enough to flip a sampled action and send a run down another
    trajectory (a level-0 single run left the tolerance of the contract's vmapped level-1 run for
    PPO and SAC). So only for short programs checked against a learned target with a margin
    (the probes' values and actions, a temperature's direction, finite losses), never compared
    to another program's run, bitwise or to a tolerance."""
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0})


@contextlib.contextmanager
def purerl_jit_at_level0():
    """Within it, ``purerl.jit`` -- and so ``run_chunked``, the CLI, ``purerl.load``'s evaluation
    and the notebooks -- compiles at LLVM level 0 (as :func:`jit_level0`), the other options of
    ``purerl.compiler_options`` unchanged. For tests whose runs are checked for what they print,
    save or learn with a margin, resumed on one device to the same run's metrics (a
    single-device resume replays the same chunk program; checked in test_playground), or
    compared to float32 tolerance with other runs the same test compiles at level 0 (a vmapped
    sweep against separate runs, A3C with one worker against A2C); never compared with a
    level-1 program, and never where a chunked run must equal one call bitwise."""
    original = loop.compiler_options

    def level0(recurrent: bool = False) -> dict:
        options = original(recurrent)
        return {**options, "xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" \
            else options

    loop.compiler_options = level0
    try:
        yield
    finally:
        loop.compiler_options = original


# ------------------------------------------------- documented NaNs (docs/contract.md)

# the replay trainers, whose learning metrics are NaN on warm-up updates
OFF_POLICY_ALGOS = ("dqn", "ddpg", "td3", "sac", "off_policy_ac")
# metrics that exist on every update, warm-up or not
ALWAYS = {"episode_return", "episode_count", "env_steps", "eval_return", "epsilon", "lr",
          "noise_scale"}


def documented_nan(algo: str, cfg: dict, metrics: dict, num_updates: int, eval_every: int
                   ) -> dict[str, np.ndarray]:
    """For each metric, the updates on which NaN is documented -- and required: the cases of
    docs/contract.md, and TD3's actor loss as documented in :mod:`purerl.dpg`."""
    updates = np.arange(1, num_updates + 1)
    evaluated = updates == num_updates
    if eval_every > 0:
        evaluated |= updates % eval_every == 0
    nan = {name: np.zeros(num_updates, bool) for name in metrics}
    nan["episode_return"] = np.asarray(metrics["episode_count"]) == 0
    nan["eval_return"] = ~evaluated
    if algo in OFF_POLICY_ALGOS:
        # learning iff the buffer holds learning_starts transitions after the update's add
        learning = updates * cfg["num_envs"] >= cfg["learning_starts"]
        for name in set(metrics) - ALWAYS:
            nan[name] = ~learning
        policy_delay = getattr(purerl.get_algorithm(algo).Config.coerce(cfg), "policy_delay", 1)
        if policy_delay > 1:  # TD3: the actor steps on every policy_delay-th gradient step
            # the j-th learning update takes gradient steps j * G .. j * G + G - 1
            steps = cfg["num_gradient_steps"]
            actor = np.array([any((j * steps + k) % policy_delay == 0 for k in range(steps))
                              for j in np.cumsum(learning) - 1])
            nan["actor_loss"] = ~learning | ~actor
    return nan


def non_finite_report(algo: str, env: str, metrics: dict, num_updates: int, eval_every: int,
                      cfg: dict) -> list[str]:
    """The metrics that are NaN or infinite where docs/contract.md does not allow it, or finite
    where it documents NaN: one line per metric."""
    expected = documented_nan(algo, cfg, metrics, num_updates, eval_every)
    problems = []
    for name, value in sorted(metrics.items()):
        value = np.asarray(value, np.float64)
        assert value.shape == (num_updates,), (name, value.shape)
        bad = ~np.isfinite(value) & ~expected[name]
        bad |= ~np.isnan(value) & expected[name]
        if bad.any():
            problems.append(f"{algo} {env} {name}: updates {np.flatnonzero(bad).tolist()} of "
                            f"{num_updates}: {value.tolist()}")
    return problems


def final_seed_evals(module, config, seeds=4, key=0):
    """The final deterministic evaluation of each of ``seeds`` vmapped runs (keys split from
    ``jax.random.key(key)``): what the learning checks assert on."""
    keys = jax.random.split(jax.random.key(key), seeds)
    _, metrics = purerl.jit(jax.vmap(module.make_train(config)))(keys)
    return np.asarray(metrics["eval_return"][:, -1])


def _data(x):
    """A leaf as a NumPy array; typed PRNG keys as their key data."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def assert_trees_close(a, b, rtol=1e-4, atol=1e-5):
    """Equal up to float32 rounding: XLA uses different matmul kernels for batched (vmapped)
    and unbatched programs, so the last bits of the parameters may differ."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(_data(x), _data(y), rtol=rtol, atol=atol)


def assert_trees_equal(a, b):
    """Bitwise equal (NaN equals NaN); typed PRNG keys are compared by their key data."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(_data(x), _data(y))


def learned_networks(state) -> dict:
    """The parameters a trainer learns and its target networks, where it has them."""
    return {f: getattr(state, f) for f in ("params", "target", "target_params")
            if hasattr(state, f)}


def assert_vmap_equals_single_runs(single, batched, keys, part=learned_networks):
    """The trainer contract: seed i of the vmapped run ``batched = (state, metrics)`` equals the
    single run ``single(keys[i])`` on ``part(state)`` (default: the parameters and target
    networks) and on every metric, to float32 rounding (see :func:`assert_trees_close`).
    Optimiser moments near zero and replay-buffer observations (which go through the
    environment's dynamics) amplify the rounding differences, so they are not compared."""
    state_b, metrics_b = batched
    for i in range(len(keys)):
        state_i, metrics_i = single(keys[i])
        assert_trees_close(part(jax.tree.map(lambda x, i=i: x[i], state_b)), part(state_i))
        assert_trees_close({k: v[i] for k, v in metrics_b.items()}, metrics_i)


def run_updates(agent: loop.Agent, state, n: int):
    """``n`` updates of one unbatched state in one compiled scan: ``(state, stacked metrics)``."""
    return purerl.jit(lambda s: jax.lax.scan(lambda s, _: agent.update(s), s, None, n))(state)


def numpy_twin_q(obs, action):
    """Two fixed, different 'critics' as plain functions of (s, a)."""
    q1 = obs.sum(-1) + 2.0 * action[..., 0]
    q2 = 0.5 * obs[..., 0] - action[..., 0] ** 2 + 1.0
    return np.stack([q1, q2])


def subprocess_xla_flags(devices: int | None = None, level: int | None = None) -> str:
    """This session's XLA_FLAGS (tests/conftest.py) for a new process, with ``devices`` fake CPU
    devices and/or LLVM optimisation ``level`` (which ``purerl.jit`` then keeps, see
    ``purerl.compiler_options``).

    Level 0 compiles about 2.3x faster and runs up to 1.5x slower (benchmarks/RESULTS.md,
    "Compile time of the test suite"), with results that differ from level 1 in the last bits:
    so only for a process whose runs are compared to a tolerance with runs of the same process or
    of processes at the same level, never with a level-1 run. (Bitwise resumes are not safe
    there: a data-parallel run resumed at level 0 left the uninterrupted run's metrics.)"""
    dropped = ("--xla_force_host_platform_device_count", "--xla_backend_optimization_level")
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(dropped)]
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    flags.append(f"--xla_backend_optimization_level={1 if level is None else level}")
    return " ".join(flags)


def subprocess_env() -> dict[str, str]:
    """The environment of a new Python process that shares this session's compilation cache
    (tests/conftest.py), so it loads the programs compiled here instead of compiling again."""
    env = dict(os.environ)
    cache = os.environ.get("PURERL_TEST_XLA_CACHE")
    if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
    return env


# ------------------------------------------------------------------ multi-device subprocesses

# The largest difference the multi-device checks allow (tests/test_distributed.py's _max_diff).
DISTRIBUTED_TOL = 1e-5
# The device count must be set before JAX starts, so those checks run in subprocesses: this
# script (``python tests/test_distributed.py seeds|parallel|host ...``) is their program, for
# test_distributed.py and test_data_parallel.py alike.
DISTRIBUTED_SCRIPT = Path(__file__).resolve().with_name("test_distributed.py")


def run_distributed_script(runs: list[tuple[list[str], int | None]]) -> None:
    """Run :data:`DISTRIBUTED_SCRIPT` once per ``(arguments, fake CPU devices or None)``, all at
    once (the 2-core CI machine overlaps their compilations); fails with a process's output if
    it fails. Every process compiles at LLVM level 0 (:func:`subprocess_xla_flags`): their checks
    compare programs of those processes to :data:`DISTRIBUTED_TOL`."""
    env = dict(subprocess_env(), JAX_PLATFORMS="cpu")
    # the script imports this module, which imports purerl: the checkout's, installed or not
    root = str(DISTRIBUTED_SCRIPT.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    script = [sys.executable, str(DISTRIBUTED_SCRIPT)]
    procs = []
    for args, devices in runs:
        run_env = dict(env, XLA_FLAGS=subprocess_xla_flags(devices, level=0))
        procs.append(subprocess.Popen(script + args, env=run_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=420)[0])
        except subprocess.TimeoutExpired:
            p.kill()
            logs.append(p.communicate()[0])
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]


# ---------------------------------------------------------------------------------- notebooks

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))

# what each notebook must print when it has run to the end
NOTEBOOK_EXPECTED = {
    "ppo.ipynb": ["final deterministic return over 8 seeds", "greedy actions:", "V(s):"]
    + ["lr="] * 4,
    "policy_gradient.ipynb": ["final return"] * 10 + ["A3C staleness per update"],
    "off_policy.ipynb": ["final return"] * 6 + ["greedy actions:", "deterministic actions:"]
    + ["tau="] * 3,
}

# The off-policy notebook runs from its own file (test_notebook_off_policy.py): pytest-xdist
# hands out whole files, and the three notebooks in one file were the suite's longest tail.
NOTEBOOKS_SPLIT_OFF = {"off_policy.ipynb"}


def run_notebook(path: Path, monkeypatch, capsys) -> None:
    """Execute ``path``'s code cells at the test budget; check the lines it must print."""
    monkeypatch.setenv("PURERL_NOTEBOOK_BUDGET", "8192")
    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {}
    with purerl_jit_at_level0():  # checked for what they print; compiling is most of their time
        for cell in cells:
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)
    out = capsys.readouterr().out
    expected = NOTEBOOK_EXPECTED[path.name]
    for marker in set(expected):
        assert out.count(marker) == expected.count(marker), (marker, out)
