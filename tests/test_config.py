"""Configs at the boundary: every field's type, check and help; non-finite numbers; budgets the
step counters cannot hold; hyperparameters passed to ``train`` at run time; training with
``JAX_ENABLE_X64=1``."""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL, subprocess_xla_flags

import purerl
from purerl import config as config_module
from purerl import dqn, ppo, sac

ALGOS = list(purerl.ALGORITHMS)
KNOWN_TYPES = {int, float, bool, str, tuple[int, ...]}


@pytest.mark.parametrize("algo", ALGOS)
def test_every_field_has_a_known_type_a_default_that_passes_and_help(algo):
    cls = purerl.get_algorithm(algo).Config
    types = cls.field_types()
    for name, _, _, kind, help_text in cls.describe():
        assert types[name] in KNOWN_TYPES, (name, types[name])
        assert len(help_text) > 10, name
        assert kind == ("traced" if name in cls.hparam_names() else "static")
    cls()  # the defaults pass every check


@pytest.mark.parametrize("algo", ALGOS)
def test_non_finite_numbers_are_rejected_naming_the_field(algo):
    cls = purerl.get_algorithm(algo).Config
    floats = [name for name, t in cls.field_types().items() if t is float]
    assert floats
    for name in floats:
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(ValueError, match=rf"'{name}'.*finite"):
                cls(**{name: bad})


def test_types_are_checked_from_the_resolved_annotations():
    with pytest.raises(ValueError, match=r"'num_envs': expected int"):
        ppo.Config(num_envs="4")
    with pytest.raises(ValueError, match=r"'num_envs': expected int"):
        ppo.Config(num_envs=4.0)
    with pytest.raises(ValueError, match=r"'anneal_lr': expected bool"):
        ppo.Config(anneal_lr=1)
    with pytest.raises(ValueError, match=r"'hidden_sizes': expected tuple\[int, ...\]"):
        ppo.Config(hidden_sizes=64)
    with pytest.raises(ValueError, match="hidden_sizes.*non-empty tuple of positive ints"):
        ppo.Config(hidden_sizes=(64, 0))
    assert ppo.Config(gamma=1).gamma == 1  # an int is a valid float
    assert ppo.Config(hidden_sizes=[32, 32]).hidden_sizes == (32, 32)  # JSON lists


def test_cross_field_checks():
    with pytest.raises(ValueError, match="epsilon_end.*epsilon_start"):
        dqn.Config(epsilon_start=0.1, epsilon_end=0.5)


@pytest.mark.parametrize("algo", ALGOS)
def test_a_budget_past_the_int32_counters_is_one_line_error(algo):
    cls = purerl.get_algorithm(algo).Config
    with pytest.raises(ValueError, match="total_timesteps.*int32.*JAX_ENABLE_X64=1") as e:
        cls(total_timesteps=3_000_000_000)
    assert "\n" not in str(e.value)
    assert config_module.counter_max() == 2**31 - 1


def test_gradient_steps_past_the_counters_are_refused():
    with pytest.raises(ValueError, match="num_gradient_steps.*int32"):
        sac.Config(total_timesteps=2**31 - 1, num_gradient_steps=2)


BAD_HPARAMS = [({"lr": -1.0}, "lr.*> 0"), ({"gamma": 5.0}, r"gamma.*\[0, 1\]"),
               ({"clip_eps": -0.2}, "clip_eps.*> 0"), ({"lr": math.nan}, "lr.*finite"),
               ({"lr": np.array([1e-3, -1.0])}, "lr.*> 0")]


@pytest.mark.parametrize("hparams, message", BAD_HPARAMS)
def test_concrete_train_time_hyperparameters_are_checked_before_tracing(hparams, message):
    agent = ppo.make_agent(SMALL["ppo"])
    with pytest.raises(ValueError, match=message) as e:
        agent.init(jax.random.key(0), hparams)
    assert "\n" not in str(e.value)
    # the same through train, and with concrete values closed over by a jitted function
    with pytest.raises(ValueError, match=message):
        ppo.make_train(SMALL["ppo"])(jax.random.key(0), hparams)
    with pytest.raises(ValueError, match=message):
        jax.jit(lambda k: agent.init(k, hparams))(jax.random.key(0))


def test_traced_train_time_hyperparameters_are_checked_when_the_program_runs():
    agent = ppo.make_agent(SMALL["ppo"])
    init = jax.jit(jax.vmap(agent.init, in_axes=(None, 0)))
    good = init(jax.random.key(0), {"lr": jnp.array([1e-3, 3e-4])})
    np.testing.assert_allclose(good.run.hparams["lr"], [1e-3, 3e-4])
    with pytest.raises(Exception, match=r"ppo config field 'lr'.*must be > 0"):
        jax.block_until_ready(init(jax.random.key(0), {"lr": jnp.array([1e-3, -1.0])}))


X64_SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    from helpers import SMALL
    import purerl
    from purerl import loop
    for algo in {algos!r}:
        module = purerl.get_algorithm(algo)
        train = module.make_train(SMALL[algo])
        state, metrics = jax.eval_shape(train, jax.random.key(0))
        assert metrics["env_steps"].dtype == np.int64, (algo, metrics["env_steps"].dtype)
        for leaf in jax.tree.leaves(state.params):
            assert leaf.dtype == np.float32, (algo, leaf.dtype)
        if algo in {trained!r}:
            state, metrics = purerl.jit(train)(jax.random.key(0))
            assert np.isfinite(metrics["eval_return"][-1]), algo
            print("trained", algo)
        else:
            purerl.jit(train).lower(jax.random.key(0))
            print("lowered", algo)
    # a budget past 2^31 env steps builds, and the counters count past it
    for algo in {big!r}:
        module = purerl.get_algorithm(algo)
        agent = module.make_agent({{**SMALL[algo], "total_timesteps": 3_000_000_000}})
        shapes = jax.eval_shape(loop.make_train_fn(agent), jax.random.key(0))[1]
        assert shapes["env_steps"].dtype == np.int64
        start = agent.num_updates - 3
        state = agent.init(jax.random.key(0))
        per_update = 2**31 // start + 1  # any count past 2^31 - 1
        state = state.replace(run=state.run.replace(update_step=np.int64(start),
                                                    env_steps=np.int64(start * per_update)))
        _, m = jax.jit(lambda s: loop.run_updates(agent, s, start, 3))(state)
        steps = np.asarray(m["env_steps"])
        assert steps[0] > 2**31 and (np.diff(steps) > 0).all(), (algo, steps)
        print("counted", algo)
""")

# two halves, each one subprocess (JAX reads JAX_ENABLE_X64 when it starts): one trainer of each
# code path traced and lowered -- whole-episode (REINFORCE), fixed rollouts (PPO, TRPO, A3C with
# the A2C worker), replay (DQN, TD3 with the DPG core of DDPG, SAC): the dtype errors x64 causes
# (a scan carry or cond branch that turns float64) are tracing errors -- and one of each path
# compiled and trained (all seven compiled took 321 s of a profiled suite run); the counters past
# 2^31 for a fixed-rollout, a whole-episode and a replay trainer. LLVM level 0: nothing is
# compared with another run, and it compiles about 2.3x faster
X64_GROUPS = {"on-policy": (["reinforce", "a3c", "ppo", "trpo"], ["reinforce", "ppo"],
                            ["ppo", "reinforce"]),
              "off-policy": (["dqn", "td3", "sac"], ["dqn"], ["dqn"])}


@pytest.mark.parametrize("group", list(X64_GROUPS))
def test_trains_and_counts_past_int32_with_jax_enable_x64(group):
    algos, trained, big = X64_GROUPS[group]
    script = X64_SCRIPT.format(tests=str(Path(__file__).parent), algos=algos, trained=trained,
                               big=big)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "JAX_ENABLE_X64": "1",
                                              "JAX_PLATFORMS": "cpu",
                                              "XLA_FLAGS": subprocess_xla_flags(level=0)})
    assert result.returncode == 0, result.stderr[-3000:]
    for algo in algos:
        assert f"{'trained' if algo in trained else 'lowered'} {algo}" in result.stdout
    for algo in big:
        assert f"counted {algo}" in result.stdout
