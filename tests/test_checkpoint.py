"""Checkpoints (purerl.checkpoint), ``purerl resume`` / ``purerl eval`` and ``purerl.load``: an
interrupted run resumed in a new process equals the uninterrupted run bitwise, corrupt or
mismatched checkpoints are one-line errors that change no file, budgets extend only where no
schedule depends on them, and a loaded policy reproduces the run's final evaluation.

Each trainer's small run is trained once by the CLI (``trained``), with a checkpoint halfway;
the tests work on copies of its run directory."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL, assert_trees_equal, subprocess_env

import purerl
from purerl import checkpoint, dqn, inference, loop, ppo
from purerl.checkpoint import CheckpointError
from purerl.cli import main

# the checkpoint interval: a checkpoint after half of each small run's updates
HALF = {"ppo": 3, "a3c": 3, "dqn": 15, "sac": 60, "off_policy_ac": 60}
# test_contract's seed count and chunk length: the CLI runs here and test_contract's chunked
# runs compile the same chunk programs, so whichever file runs second loads them from the
# session's compilation cache (unless the two workers run both files at the same time)
SEEDS, CHUNK = 3, 3


def cli_args(algo: str, **overrides) -> list[str]:
    """``purerl train`` arguments for the small config of ``algo`` (tests/helpers.py)."""
    config = {**SMALL[algo], **overrides}
    args = ["train", algo, "--no-preset", "--seeds", str(SEEDS), "--env", config.pop("env"),
            "--total-timesteps", str(config.pop("total_timesteps"))]
    for key, value in config.items():
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        args += ["--set", f"{key}={text}"]
    return args


@functools.cache
def _root() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="purerl-test-checkpoint-"))


@functools.cache
def trained(algo: str) -> Path:
    """The run directory of ``algo``'s small run (trained once per session): checkpoints after
    half of the updates and after the last."""
    half = str(HALF[algo])
    assert main([*cli_args(algo), "--chunk", str(CHUNK), "--checkpoint-every", half,
                 "--out", str(_root()), "--name", algo]) == 0
    return _root() / algo


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    shutil.rmtree(_root(), ignore_errors=True)


def copy_run(algo: str, dest: Path) -> Path:
    shutil.copytree(trained(algo), dest)
    return dest


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes()
            for p in sorted(run.rglob("*")) if p.is_file()}


def one_line(text: str) -> str:
    assert text.count("\n") <= 1 and text.strip(), text
    return text.strip()


# ------------------------------------------------------------------------ exact resume


# A new process for an on-policy trainer and a replay one: what crosses the process boundary
# (the run directory's config, the checkpointed state and key, the CLI's chunk schedule) is the
# same code for every trainer, and each trainer's own state is restored and continued in
# process below (a new process costs ~15 s of import, tracing and loading).
@pytest.mark.parametrize("algo", ["ppo", pytest.param("sac", marks=pytest.mark.slow)])
def test_resume_in_a_new_process_equals_the_uninterrupted_run(algo, tmp_path):
    full = trained(algo)
    n = purerl.get_algorithm(algo).make_agent(SMALL[algo]).num_updates
    assert [u for u, _ in checkpoint.checkpoints(full)] == [HALF[algo], n]
    # a copy as if killed after the halfway checkpoint: no final checkpoint, no outputs
    split = copy_run(algo, tmp_path / "split")
    shutil.rmtree(split / "checkpoints" / str(n))
    for name in ("metrics.json", "metrics.csv", "summary.txt", "learning_curve.png"):
        (split / name).unlink()

    result = subprocess.run([sys.executable, "-m", "purerl", "resume", str(split)],
                            capture_output=True, text=True, timeout=600, env=subprocess_env())
    assert result.returncode == 0, result.stderr
    assert f"at update {HALF[algo]} of {n}" in result.stderr

    for name in ("metrics.json", "metrics.csv"):  # old rows followed by the new ones
        assert (split / name).read_bytes() == (full / name).read_bytes(), name
    resumed, uninterrupted = purerl.load(split), purerl.load(full)
    assert resumed.updates_done == uninterrupted.updates_done == n
    assert type(resumed.state) is type(uninterrupted.state)
    assert_trees_equal(resumed.state, uninterrupted.state)
    assert_trees_equal(resumed.metrics, uninterrupted.metrics)


@pytest.mark.parametrize("algo", list(HALF))
def test_run_chunked_continues_from_a_restored_state(algo):
    """In process, for each trainer's state (replay buffers, target networks, worker
    optimisers): the state restored from the halfway checkpoint, continued by
    ``run_chunked(state=...)``, gives the final checkpoint's state and metrics bitwise."""
    half = purerl.load(trained(algo) / "checkpoints" / str(HALF[algo]))
    final = purerl.load(trained(algo))
    assert type(half.state) is type(final.state)
    chunks = list(loop.run_chunked(half.agent, None, chunk=CHUNK, state=half.state,
                                   start=HALF[algo]))
    assert chunks[-1][0] == final.updates_done
    assert_trees_equal(chunks[-1][1], final.state)
    metrics = {k: np.concatenate([half.metrics[k]] + [c[2][k] for c in chunks], axis=1)
               for k in half.metrics}
    assert_trees_equal(metrics, final.metrics)
    with pytest.raises(ValueError, match="start=1"):
        next(loop.run_chunked(half.agent, None, state=half.state, start=1))


def _chunk_program(agent: loop.Agent, state, length: int) -> str:
    """The StableHLO text of the chunk program ``run_chunked`` compiles for ``state``."""
    axes = loop._scan_axes(agent, state, loop.seed_axes(state))
    leaves, treedef = jax.tree.flatten(axes, is_leaf=lambda x: x is None)
    run = loop._vmapped_updates(agent, treedef, tuple(leaves))
    return run.lower(loop.unbatch(state, axes), jnp.asarray(0, loop.counter_dtype()),
                     length).as_text()


def test_a_restored_state_compiles_the_program_of_the_run_it_continues():
    """A fresh state (weakly typed leaves from the environments' resets, uncommitted arrays) and
    the same run restored from a checkpoint (strong types, committed to a device by orbax)
    lowered to different chunk programs, so a resumed run compiled again: in a new process even
    with a persistent compilation cache. Both now give the same program text."""
    half = checkpoint.restore(trained("ppo") / "checkpoints" / str(HALF["ppo"]))
    fresh = loop.vmapped_init(half.agent, False)(jax.random.split(jax.random.key(0), SEEDS),
                                                 None)
    assert not any(getattr(x, "weak_type", False) for x in jax.tree.leaves(fresh))
    assert not any(getattr(x, "committed", False) for x in jax.tree.leaves(half.state))
    assert _chunk_program(half.agent, half.state, HALF["ppo"]) == \
        _chunk_program(half.agent, fresh, HALF["ppo"])


def test_chunk_lengths_align_with_checkpoints():
    assert loop.even_chunk(100, 10) == 10 and loop.even_chunk(97, 10) == 10
    assert loop.even_chunk(100, 50, align=15) == 15  # at most the interval, divides it
    assert loop.even_chunk(120, 9, align=60) == 6  # divides both where one is near
    assert loop.even_chunk(121, 9, align=60) == 6  # divides the interval


# ------------------------------------------------------------------------------ errors


def _largest_file(ckpt: Path) -> Path:
    return max((p for p in (ckpt / "state").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)


def _remove(path: Path) -> None:
    path.unlink()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_remove, _truncate, _flip], ids=["removed", "truncated",
                                                                      "flipped"])
def test_corrupt_checkpoint_is_one_line_error_and_changes_nothing(damage, tmp_path, capsys):
    run = copy_run("ppo", tmp_path / "run")
    target = _largest_file(run / "checkpoints" / "6")
    damage(target)
    before = snapshot(run)

    with pytest.raises(CheckpointError) as info:
        purerl.load(run)
    message = one_line(str(info.value))
    assert "checkpoints/6 is corrupt" in message and target.name in message
    assert "delete" in message and "previous checkpoint 3" in message  # the fix
    for command in (["resume", str(run)], ["resume", str(run), "--total-timesteps", "2000"],
                    ["eval", str(run)]):
        assert main(command) == 2
        err = one_line(capsys.readouterr().err)
        assert err.startswith("purerl: error: checkpoint ") and "corrupt" in err
    assert snapshot(run) == before


def test_corrupt_metadata_and_incomplete_checkpoints(tmp_path):
    run = copy_run("ppo", tmp_path / "run")
    meta = run / "checkpoints" / "6" / checkpoint.METADATA
    text = meta.read_text()
    meta.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        purerl.load(run)
    meta.write_text(text.replace('"seed": 0', '"seed": 1'))  # valid JSON, wrong checksum
    with pytest.raises(CheckpointError, match="checksum"):
        purerl.load(run)
    # a half-written checkpoint (no metadata yet) and a temporary directory are never picked
    meta.unlink()
    (run / "checkpoints" / ".tmp-9-abc" / "state").mkdir(parents=True)
    assert checkpoint.latest(run) == run / "checkpoints" / "3"
    assert purerl.load(run).updates_done == 3
    with pytest.raises(CheckpointError, match="incomplete"):
        purerl.load(run / "checkpoints" / "6")


def test_missing_run_or_checkpoints(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="does not exist"):
        purerl.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoints/ directory"):
        purerl.load(tmp_path / "empty")
    (tmp_path / "empty" / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        purerl.load(tmp_path / "empty")
    for command in ("resume", "eval"):
        assert main([command, str(tmp_path / "nope")]) == 2
        assert one_line(capsys.readouterr().err).startswith("purerl: error: ")


def test_train_refuses_a_run_directory_with_checkpoints(tmp_path, capsys):
    run = copy_run("ppo", tmp_path / "run")
    before = snapshot(run)
    assert main([*cli_args("ppo"), "--out", str(tmp_path), "--name", "run"]) == 2
    err = one_line(capsys.readouterr().err)
    assert "already holds checkpoints" in err and "purerl resume" in err
    assert snapshot(run) == before


def test_another_algorithms_run_is_refused(tmp_path, capsys):
    run = copy_run("ppo", tmp_path / "run")
    with pytest.raises(CheckpointError, match="is a ppo run, not a dqn run"):
        checkpoint.restore(run, algo="dqn")
    with pytest.raises(CheckpointError, match="is a ppo run, not a dqn run"):
        checkpoint.restore(run, dqn.Config(**SMALL["dqn"]))
    # a run directory whose config.json names another algorithm than its checkpoints
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "algo": "dqn"}))
    before = snapshot(run)
    assert main(["resume", str(run)]) == 2
    err = one_line(capsys.readouterr().err)
    assert "'dqn'" in err and "ppo run" in err
    assert snapshot(run) == before


def test_changed_static_field_on_resume_is_refused(tmp_path, capsys):
    run = copy_run("ppo", tmp_path / "run")
    with pytest.raises(CheckpointError, match="num_envs=8 differs from the num_envs=4"):
        checkpoint.restore(run, {**SMALL["ppo"], "num_envs": 8, "num_minibatches": 2})
    with pytest.raises(CheckpointError, match="traced hyperparameters"):
        checkpoint.restore(run, {**SMALL["ppo"], "lr": 0.5})
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "update_epochs": 3}))
    before = snapshot(run)
    assert main(["resume", str(run)]) == 2
    err = one_line(capsys.readouterr().err)
    assert "update_epochs=3 differs from the update_epochs=2" in err and "static" in err
    assert snapshot(run) == before


def test_state_layout_mismatch_is_refused(tmp_path):
    run = copy_run("ppo", tmp_path / "run")
    path = run / "checkpoints" / "6" / checkpoint.METADATA
    meta = json.loads(path.read_text())
    meta["fingerprint"] = "0" * 64  # as if written by a purerl with another train state
    meta["purerl_version"] = "0.0.1"
    meta["checksum"] = checkpoint.checksum(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="layout .*purerl 0.0.1"):
        purerl.load(run)


def test_keep_prunes_old_checkpoints(tmp_path):
    run = purerl.load(trained("ppo"))
    for done in (1, 2, 3):
        state = run.state.replace(run=run.state.run.replace(
            update_step=jnp.full_like(run.state.run.update_step, done)))
        checkpoint.save(tmp_path, run.config, state, keep=2)
    assert [u for u, _ in checkpoint.checkpoints(tmp_path)] == [2, 3]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    assert inference.load(tmp_path).updates_done == 3


# ----------------------------------------------------------------------------- budgets


def test_budget_extension_refused_with_annealing(tmp_path, capsys):
    run = copy_run("ppo", tmp_path / "run")  # PPO anneals its learning rate by default
    before = snapshot(run)
    assert main(["resume", str(run), "--total-timesteps", str(2 * 768)]) == 2
    err = one_line(capsys.readouterr().err)
    assert "cannot change the budget" in err and "anneal_lr=True" in err
    with pytest.raises(CheckpointError, match="anneal_lr"):
        checkpoint.restore(run, total_timesteps=2 * 768)
    assert main(["resume", str(run)]) == 2  # a finished run without a new budget
    assert "nothing to resume" in one_line(capsys.readouterr().err)
    assert snapshot(run) == before


def test_budget_schedules_of_the_trainers():
    assert ppo.Config(anneal_lr=False).budget_schedules() == ()
    assert "epsilon" in " ".join(dqn.Config(anneal_lr=False).budget_schedules())
    assert dqn.Config(anneal_lr=False, exploration_fraction=0.0).budget_schedules() == ()
    for algo in ("reinforce", "actor_critic", "trpo", "ddpg", "td3", "sac", "off_policy_ac"):
        assert purerl.get_algorithm(algo).Config().budget_schedules() == (), algo
    for algo in ("a2c", "a3c", "ppo", "dqn"):
        assert purerl.get_algorithm(algo).Config().budget_schedules(), algo


@pytest.mark.slow
def test_budget_extension_equals_a_run_trained_with_that_budget(tmp_path, capsys):
    """SAC has no budget-dependent schedule: its finished run extended to twice the budget
    equals a run trained with that budget from the start (the replay buffer, sized to the
    run, grows)."""
    run = copy_run("sac", tmp_path / "run")
    total = 2 * SMALL["sac"]["total_timesteps"]
    assert main(["resume", str(run), "--total-timesteps", str(total)]) == 0
    half = str(HALF["sac"])
    assert main([*cli_args("sac", total_timesteps=total), "--chunk", half,
                 "--checkpoint-every", half, "--out", str(tmp_path), "--name", "long"]) == 0
    capsys.readouterr()
    extended, long = purerl.load(run), purerl.load(tmp_path / "long")
    assert extended.config == long.config
    assert json.loads((run / "config.json").read_text())["total_timesteps"] == total
    assert_trees_equal(extended.state, long.state)
    # the rows of the first run stay as they were: here they equal the long run's too, since
    # the first run's last update falls on the evaluation schedule
    assert_trees_equal(extended.metrics, long.metrics)
    assert (run / "metrics.csv").read_bytes() == (tmp_path / "long" / "metrics.csv").read_bytes()


# ------------------------------------------------------------------- policies and eval


def test_loaded_policy_reproduces_the_final_evaluation():
    run = purerl.load(trained("ppo"))
    assert (run.algo, type(run.config), run.num_seeds) == ("ppo", ppo.Config, SEEDS)
    assert run.config == ppo.Config(**SMALL["ppo"]) and run.seed == 0
    returns = run.evaluate()  # the trainer's evaluation keys and episodes
    assert returns.shape == (SEEDS, SMALL["ppo"]["eval_episodes"])
    np.testing.assert_allclose(returns.mean(axis=1), run.metrics["eval_return"][:, -1],
                               rtol=1e-6)

    obs = jax.random.normal(jax.random.key(3), (SEEDS, 5, 4))
    batched = run.policy(obs)
    for i in range(SEEDS):
        expected = run.agent.act(run.seed_state(i), obs[i])
        np.testing.assert_array_equal(run.policy(obs[i], seed=i), expected)
        np.testing.assert_array_equal(batched[i], expected)
    sampled = run.policy(obs, jax.random.key(0), deterministic=False)
    assert sampled.shape == batched.shape
    with pytest.raises(ValueError, match="needs a key"):
        run.policy(obs, deterministic=False)
    with pytest.raises(ValueError, match="leading seed axis"):
        run.policy(obs[0])


def test_eval_command_prints_each_seed(capsys):
    run = trained("ppo")
    assert main(["eval", str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    final = json.loads((run / "metrics.json").read_text())["eval_return"]
    for i in range(SEEDS):
        (line,) = [x for x in lines if x.split()[:1] == [str(i)]]
        assert line.split()[1] == f"{final[i][-1]:.4g}" and "±" in line
    assert main(["eval", str(run / "checkpoints" / "3"), "--episodes", "3", "--stochastic",
                 "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "stochastic policy, 3 episode(s)" in out and "3 updates" in out
