"""Bad input never runs silently, never overwrites a run, never hangs (issue 15): one table of
API inputs and one of CLI invocations, each a one-line error within seconds; the memory
estimate; the divergence watchdog (exit code 3, every checkpoint finite)."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purerl
from purerl import (a2c, checkpoint, cli, ddpg, dqn, envs, inference, loop, memory, ppo, rundir,
                    sac, td3, trpo)
from purerl.config import check_seed

# Seconds a refused input may take: it must fail before compiling or allocating anything (a
# hang or an allocation of the impossible sizes below would take minutes).
FAST = 15
TINY = dict(env="CartPole-v1", hidden_sizes=(8,), num_envs=4, num_steps=8, total_timesteps=256)


@pytest.fixture(autouse=True)
def _fixed_memory_limit(monkeypatch):
    # the memory cases must not depend on the machine's RAM
    monkeypatch.setenv(memory.ENV_VAR, "16G")


def _replace_lrr():
    dataclasses.replace(ppo.Config(), lrr=0.1)


def _chunked_many_seeds():
    next(loop.run_chunked(ppo.make_agent(TINY), jax.random.split(jax.random.key(0), 10**7)))


# (id, call, a regex the one-line ValueError must match)
API_CASES = [
    ("lr=inf", lambda: ppo.Config(lr=math.inf), r"'lr'=inf must be finite"),
    ("ent_coef=inf", lambda: ppo.Config(ent_coef=math.inf), r"'ent_coef'=inf must be finite"),
    ("clip_eps=inf", lambda: ppo.Config(clip_eps=math.inf), r"'clip_eps'=inf must be finite"),
    ("max_grad_norm=inf", lambda: ppo.Config(max_grad_norm=math.inf), r"'max_grad_norm'.*finite"),
    ("sac target_entropy_scale=nan", lambda: sac.Config(target_entropy_scale=math.nan),
     r"'target_entropy_scale'=nan must be finite"),
    ("log_std_init=nan", lambda: ppo.Config(log_std_init=math.nan), r"'log_std_init'.*finite"),
    ("a2c vf_coef=-inf", lambda: a2c.Config(vf_coef=-math.inf), r"'vf_coef'.*finite"),
    ("trpo max_kl=nan", lambda: trpo.Config(max_kl=math.nan), r"'max_kl'.*finite"),
    ("swept lr=inf", lambda: ppo.make_agent(TINY).init(jax.random.key(0), {"lr": jnp.inf}),
     r"'lr'.*finite"),
    ("sac tau=0", lambda: sac.Config(tau=0.0), r"'tau'=0.0 must be in \(0, 1\]"),
    ("ddpg tau=0", lambda: ddpg.Config(tau=0.0), r"'tau'=0.0 must be in \(0, 1\]"),
    ("td3 swept tau=0", lambda: td3.make_agent(dict(total_timesteps=2000)).init(
        jax.random.key(0), {"tau": jnp.zeros(())}), r"'tau'.*must be in \(0, 1\]"),
    ("dqn epsilon_end > epsilon_start", lambda: dqn.Config(epsilon_start=0.1, epsilon_end=0.9),
     r"'epsilon_end'=0.9 must be <= epsilon_start"),
    ("batch_size > buffer_size", lambda: dqn.Config(batch_size=1000, buffer_size=100),
     r"'batch_size'=1000 must be <= buffer_size = 100"),
    ("learning_starts > total_timesteps",
     lambda: sac.Config(learning_starts=10**6, total_timesteps=1000),
     r"'learning_starts'=1000000 exceeds the run's 1000 env steps.*no gradient step"),
    ("total_timesteps=10**15", lambda: ppo.Config(total_timesteps=10**15),
     r"'total_timesteps'=1000000000000000 exceeds purerl's int32 step counters"),
    ("Config(lrr=)", lambda: ppo.Config(lrr=0.1), r"unknown ppo config key 'lrr' \(did you "
                                                  r"mean 'lr'\?\)"),
    ("replace(lrr=)", _replace_lrr, r"unknown ppo config key 'lrr' \(did you mean 'lr'\?\)"),
    ("hidden_sizes=64", lambda: ppo.Config(hidden_sizes=64),
     r"'hidden_sizes': expected tuple.*use a tuple, e.g. hidden_sizes=\(64,\)"),
    ("too many positional", lambda: ppo.Config(*range(99)), r"at most \d+ positional"),
    ("env keyword typo", lambda: envs.make("CartPole-v1", max_step=10),
     r"'CartPole-v1' does not take the keyword argument 'max_step'; it takes no keyword"),
    ("env keyword close", lambda: envs.make("Breakout-MinAtar", use_minimal_actions=True),
     r"did you mean 'use_minimal_action_set'\?\); valid keywords: use_minimal_action_set"),
    ("hidden_sizes=1e6,1e6", lambda: ppo.make_train({**TINY, "hidden_sizes": (10**6, 10**6)}),
     r"needs at least .*TiB of memory.*lower hidden_sizes"),
    ("num_envs=1e9", lambda: ppo.make_train({**TINY, "num_envs": 10**9, "num_steps": 1,
                                             "total_timesteps": 2 * 10**9}),
     r"needs at least .*GiB of memory.*environments.*lower num_envs"),
    ("dqn buffer_size=1e9", lambda: dqn.make_train(dict(buffer_size=10**9,
                                                        total_timesteps=10**9)),
     r"replay buffer .*GiB.*lower buffer_size"),
    ("10**7 keys", _chunked_many_seeds, r"for 10000000 seeds .*lower the number of keys"),
    ("seed 2**70", lambda: check_seed(2**70, "--seed"), r"outside the PRNG's seed range"),
    ("seed 2**32", lambda: check_seed(2**32, "--seed"), r"-2147483648\.\.4294967295"),
]


@pytest.mark.parametrize("call, pattern", [c[1:] for c in API_CASES],
                         ids=[c[0] for c in API_CASES])
def test_bad_api_input_is_a_one_line_value_error(call, pattern):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=pattern) as e:
        call()
    assert "\n" not in str(e.value)
    assert time.perf_counter() - start < FAST


def test_every_numeric_field_rejects_nan_and_inf():
    for algo in purerl.ALGORITHMS:
        cls = purerl.get_algorithm(algo).Config
        for name, kind in cls.field_types().items():
            if kind not in (int, float):
                continue
            for bad in (math.nan, math.inf, -math.inf):
                with pytest.raises(ValueError, match=rf"'{name}'"):
                    cls(**{name: bad})


def test_constructor_and_from_dict_give_the_same_error():
    for bad in ({"lrr": 0.1}, {"hidden_sizes": 64}, {"t_max": 5}):
        messages = []
        for build in (a2c.Config, a2c.Config.from_dict):
            with pytest.raises(ValueError) as e:
                build(**bad) if build is a2c.Config else build(bad)
            messages.append(str(e.value))
        assert messages[0] == messages[1]
    assert "renamed to 'num_steps'" in messages[0]


def test_what_stays_allowed():
    """Documented edge values, and construction paths the key check must not break."""
    assert ppo.Config(gamma=1.0).gamma == 1.0  # episodic tasks: undiscounted returns are finite
    assert dqn.Config(learning_starts=0).learning_starts == 0
    assert dqn.Config(tau=1.0).tau == 1.0  # a hard copy
    config = ppo.Config("Acrobot-v1", 4096)  # positional, in field order
    assert (config.env, config.total_timesteps) == ("Acrobot-v1", 4096)
    assert dataclasses.replace(config, lr=0.1).lr == 0.1
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(config)) == config == copy.copy(config)
    # a buffer_size past the run is sized to the run's env steps: nothing huge is allocated
    dqn.make_train(dict(buffer_size=10**9))
    assert check_seed(-1) == -1 and check_seed(2**32 - 1) == 2**32 - 1


def test_memory_estimate_parts_limit_and_override(monkeypatch):
    agent = ppo.make_agent(TINY)
    parts = memory.estimate(agent, chunked=True)
    state = jax.eval_shape(agent.init, jax.random.key(0))
    state_total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    assert sum(memory.state_bytes(agent).values()) == state_total
    assert parts[("a chunk's input copy of the state", "hidden_sizes")] == state_total
    assert memory.update_bytes(agent) >= 8 * 4 * 4 * 4  # at least the rollout's observations
    assert memory.parse_size("64G") == 64 * 2**30 and memory.parse_size("512m") == 512 * 2**20
    assert memory.parse_size("off") is None
    with pytest.raises(ValueError, match=memory.ENV_VAR):
        memory.parse_size("lots")
    monkeypatch.setenv(memory.ENV_VAR, "off")
    memory.check(agent, 10**12)  # the check is off
    monkeypatch.delenv(memory.ENV_VAR)
    assert memory.memory_limit().bytes > 2**28  # the devices' memory or the host's RAM
    # every algorithm's defaults, 8 seeds, fit the real limit of this machine
    for algo in purerl.ALGORITHMS:
        memory.check(purerl.get_algorithm(algo).make_agent(None), 8)


# ------------------------------------------------------------------------------ the CLI

PPO = ["train", "ppo", "--no-preset", "--set", "hidden_sizes=8"]

# (id, arguments, a substring of the one error line)
CLI_CASES = [
    ("--seeds 10000000", [*PPO, "--seeds", "10000000"], "lower --seeds"),
    ("num_envs=10**9", [*PPO, "--set", "num_envs=1000000000", "--set", "num_steps=1",
                        "--total-timesteps", "2000000000"], "lower num_envs"),
    ("hidden_sizes=1e6,1e6", [*PPO, "--set", "hidden_sizes=1000000,1000000"],
     "lower hidden_sizes"),
    ("dqn buffer_size=10**9", ["train", "dqn", "--set", "buffer_size=1000000000",
                               "--total-timesteps", "1000000000"], "lower buffer_size"),
    ("--total-timesteps 10**15", [*PPO, "--total-timesteps", str(10**15)], "int32 step counters"),
    ("--seed 2**70", [*PPO, "--seed", str(2**70)], "outside the PRNG's seed range"),
    ("lr=inf", [*PPO, "--set", "lr=inf"], "'lr'=inf must be finite"),
    ("ent_coef=nan", [*PPO, "--set", "ent_coef=nan"], "'ent_coef'=nan must be finite"),
    ("sac tau=0", ["train", "sac", "--set", "tau=0"], "'tau'=0.0 must be in (0, 1]"),
    ("dqn epsilon", ["train", "dqn", "--set", "epsilon_start=0.1", "--set", "epsilon_end=0.9"],
     "'epsilon_end'=0.9 must be <= epsilon_start"),
    ("dqn batch > buffer", ["train", "dqn", "--set", "batch_size=1000", "--set",
                            "buffer_size=100"], "'batch_size'=1000 must be <= buffer_size"),
    ("learning_starts > budget", ["train", "dqn", "--set", "learning_starts=100000",
                                  "--total-timesteps", "1000"], "no gradient step"),
    ("--name ../x", [*PPO, "--name", "../x"], "must be a single directory name"),
    ("--name a/b", [*PPO, "--name", "a/b"], "must be a single directory name"),
    ("--name ..", [*PPO, "--name", ".."], "must be a single directory name"),
    ("--name absolute", [*PPO, "--name", "/tmp/purerl-absolute-name"],
     "must be a single directory name"),
    ("--env vs --set env", [*PPO, "--env", "CartPole-v1", "--set", "env=Acrobot-v1"],
     "--env CartPole-v1 and --set env=Acrobot-v1 disagree"),
    ("--total-timesteps vs --set", [*PPO, "--total-timesteps", "1024", "--set",
                                    "total_timesteps=2048"], "disagree"),
    ("taken --name", [*PPO, "--name", "taken"], "already holds a run (metrics.json)"),
    ("Config(lrr=)", [*PPO, "--set", "lrr=0.1"], "did you mean 'lr'?"),
]


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b""
            for p in sorted(root.rglob("*"))}


def _one_error_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("purerl: error: "), err
    return err


@pytest.mark.parametrize("args, expected", [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_bad_cli_input_is_one_line_exit_2_and_writes_nothing(args, expected, tmp_path,
                                                             capsys):
    out = tmp_path / "out"  # a --name with a path would write next to it, under tmp_path
    (out / "taken").mkdir(parents=True)
    (out / "taken" / "config.json").write_text("{}\n")
    (out / "taken" / "metrics.json").write_text("{}\n")
    before = _listing(tmp_path)
    start = time.perf_counter()
    assert cli.main([*args, "--out", str(out)]) == 2
    assert time.perf_counter() - start < FAST
    assert expected in _one_error_line(capsys.readouterr().err)
    assert _listing(tmp_path) == before
    assert not Path("/tmp/purerl-absolute-name").exists()


def test_a_default_run_name_that_is_taken_gets_a_suffix(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: "T")
    assert rundir.new_run_dir(tmp_path, None, "ppo", "playground/X") == \
        tmp_path / "ppo_playground_X_T"
    for taken in ("ppo_playground_X_T", "ppo_playground_X_T_2"):
        (tmp_path / taken).mkdir()
        (tmp_path / taken / "metrics.csv").write_text("")
    assert rundir.new_run_dir(tmp_path, None, "ppo", "playground/X") == \
        tmp_path / "ppo_playground_X_T_3"
    (tmp_path / "empty").mkdir()  # an empty directory holds no run: it may be used
    assert rundir.new_run_dir(tmp_path, "empty", "ppo", "CartPole-v1") == tmp_path / "empty"
    # nor does one left by a run that stopped before its first checkpoint
    (tmp_path / "empty" / "config.json").write_text("{}\n")
    (tmp_path / "empty" / "checkpoints" / ".tmp-1-99-abc").mkdir(parents=True)
    assert rundir.new_run_dir(tmp_path, "empty", "ppo", "CartPole-v1") == tmp_path / "empty"


# ------------------------------------------------------------------------ divergence

def test_finite_check_names_the_seeds_and_updates():
    state = SimpleNamespace(params={"w": jnp.array([[1.0, 2.0], [1.0, jnp.nan]]),
                                    "b": jnp.array([0.0, jnp.inf]), "n": jnp.array([1, 2])})
    with pytest.raises(loop.DivergenceError, match="seed.s. 1 became non-finite during "
                                                   "updates 5-8") as e:
        loop.check_finite_params(state, 5, 8, 10)
    assert (e.value.first, e.value.last, e.value.seeds) == (5, 8, [1])
    loop.check_finite_params(SimpleNamespace(params={"w": jnp.ones((3, 2))}), 1, 1, 1)


def test_a_diverging_run_stops_with_exit_3_and_keeps_only_finite_checkpoints(tmp_path, capsys):
    """lr=1e30: Adam's first steps move every weight by about 1e30 (still finite); the next
    forward pass overflows, so the parameters are NaN after update 2 of 6."""
    args = ["train", "ppo", "--no-preset", "--total-timesteps", "192", "--set", "num_envs=4",
            "--set", "num_steps=8", "--set", "hidden_sizes=8", "--set", "update_epochs=1",
            "--set", "num_minibatches=1", "--set", "lr=1e30", "--set", "eval_episodes=1",
            "--chunk", "1", "--checkpoint-every", "1", "--out", str(tmp_path), "--name", "d"]
    assert cli.main(args) == 3
    err = capsys.readouterr().err.splitlines()[-1]
    assert "Traceback" not in err and err.startswith("purerl: error: training diverged")
    assert "non-finite in update 2 of 6" in err and "lr=1e+30" in err
    assert "checkpoints/1 (after update 1) is finite" in err
    run = tmp_path / "d"
    assert [n for n, _ in checkpoint.checkpoints(run)] == [1]  # nothing saved after update 1
    assert not (run / "metrics.json").exists()
    saved = inference.load(run)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(saved.state.params))
    # the diverged run's directory is taken now
    assert cli.main(args) == 2
    assert "already holds checkpoints" in _one_error_line(capsys.readouterr().err)


def test_compiler_options_leave_the_level_to_xla_flags(monkeypatch):
    """purerl.jit lowers LLVM's level to 1 on CPU unless XLA_FLAGS chooses one itself (this
    suite's conftest sets 1 that way, for plain jax.jit too)."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=false")
    assert loop.compiler_options() == {"xla_backend_optimization_level": 1}
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    assert loop.compiler_options() == {}


def test_recurrent_programs_compile_without_ynn_fusions(monkeypatch):
    """make_train marks a recurrent policy's function, jax.vmap and functools.partial keep the
    mark, and purerl.jit then compiles without XLA:CPU's YNNPACK fusions (faster for the
    recurrent core, slower for feed-forward networks: benchmarks/RESULTS.md)."""
    import functools

    from purerl import ppo

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=false")
    assert loop.compiler_options(recurrent=True) == {
        "xla_backend_optimization_level": 1, "xla_cpu_experimental_ynn_fusion_type": ""}
    small = dict(num_envs=2, num_steps=4, num_minibatches=2, total_timesteps=16)
    gru = ppo.make_train(dict(small, memory="gru", memory_size=8))
    assert loop.is_recurrent(jax.vmap(jax.vmap(gru)))
    assert loop.is_recurrent(functools.partial(gru, hparams=None))
    assert not loop.is_recurrent(ppo.make_train(small))
    assert not loop.is_recurrent(lambda key: gru(key))  # documented: a lambda hides it

    def matmul(a, b):
        return a @ b

    a = jax.numpy.ones((8, 64, 64))
    texts = {r: loop.jit(matmul, recurrent=r).lower(a, a).compile().as_text() for r in (0, 1)}
    assert "__ynn_fusion" in texts[0]  # this jaxlib fuses the dot into YNNPACK by default
    assert "__ynn_fusion" not in texts[1]
