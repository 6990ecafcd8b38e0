"""MuJoCo Playground adapter (:mod:`purerl.playground`): the gymnax contract purerl relies on,
checked against the raw Playground task stepped by hand, and a trainer running on it.

Tests that need the ``mujoco`` extra skip without it (they take the ``cartpole`` fixture, which
imports ``mujoco_playground`` through ``pytest.importorskip``); the registration and error tests
run everywhere. Compiling MJX programs dominates the time (CartpoleBalance's reset or step is
~6k jaxpr equations, several seconds of XLA each, and an auto-resetting step holds both), so the
contract checks share one compiled rollout, and the programs here compile with LLVM optimisation
off (``FAST_COMPILE``: about a quarter less compile time; they run for well under a second).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purerl
from purerl import envs, playground, ppo

EPISODE = 20  # agent steps per episode of the short CartpoleBalance
NUM_ENVS = 3
STEPS = 2 * EPISODE + 3  # two truncations and a few steps of the third episode
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def cartpole():
    pytest.importorskip("mujoco_playground")
    return envs.make("playground/CartpoleBalance", episode_length=EPISODE)


@pytest.fixture(scope="module")
def rollout(cartpole):
    """``STEPS`` batched adapter steps under fixed random actions, beside the raw Playground
    task stepped by hand (no time limit, no reset) from the same initial states, in one
    compiled program: (initial EnvState, per-step Step, obs, time, raw obs)."""
    env = cartpole
    raw = env.env.raw_env

    def run(key):
        reset_key, action_key, step_key = jax.random.split(key, 3)
        state = env.reset(reset_key, NUM_ENVS)
        actions = jax.random.uniform(action_key, (STEPS, NUM_ENVS, 1), minval=-1.0, maxval=1.0)

        def body(carry, xs):
            state, raw_state = carry
            action, k = xs
            state, tr = env.step(k, state, action)
            raw_state = jax.vmap(raw.step)(raw_state, action)
            return (state, raw_state), (tr, state.obs, state.env_state.time,
                                        jax.vmap(playground.flatten_obs)(raw_state.obs))

        _, outs = jax.lax.scan(body, (state, state.env_state.pstate),
                               (actions, jax.random.split(step_key, STEPS)))
        return state, outs

    return jax.device_get(jax.jit(run, compiler_options=FAST_COMPILE)(jax.random.key(0)))


def test_reset_and_step_have_purerl_shapes_and_dtypes(cartpole, rollout):
    state, (tr, obs, time, _) = rollout
    assert state.obs.shape == (NUM_ENVS, 5) and state.obs.dtype == np.float32
    assert obs.shape == (STEPS, NUM_ENVS, 5) and obs.dtype == np.float32
    assert tr.next_obs.shape == obs.shape and tr.next_obs.dtype == np.float32
    assert tr.reward.shape == (STEPS, NUM_ENVS) and tr.reward.dtype == np.float32
    assert tr.terminated.dtype == bool and tr.truncated.dtype == bool
    assert np.isfinite(tr.reward).all() and ((tr.reward >= 0) & (tr.reward <= 1)).all()
    np.testing.assert_array_equal(time[:EPISODE], np.broadcast_to(
        (np.arange(1, EPISODE + 1) % EPISODE)[:, None], (EPISODE, NUM_ENVS)))


def test_time_limit_truncates_and_keeps_the_real_last_observation(rollout):
    state, (tr, obs, time, raw_obs) = rollout
    ends = [EPISODE - 1, 2 * EPISODE - 1]
    expected = np.zeros((STEPS, NUM_ENVS), bool)
    expected[ends] = True
    np.testing.assert_array_equal(tr.truncated, expected)
    assert not tr.terminated.any()  # DM-Control tasks end only on a diverged simulation
    # until the first time limit the adapter is the raw task, step for step
    np.testing.assert_allclose(tr.next_obs[:EPISODE], raw_obs[:EPISODE], rtol=1e-5, atol=1e-6)
    t = ends[0]
    assert (time[t] == 0).all()
    # s' of the truncated transition is the raw task's; the carried obs is a fresh reset
    assert np.abs(obs[t] - raw_obs[t]).max() > 1e-3
    np.testing.assert_allclose(obs[:t], tr.next_obs[:t])
    np.testing.assert_allclose(tr.completed_return[t], tr.reward[:EPISODE].sum(0), rtol=1e-5)


def test_auto_reset_starts_a_new_random_episode_and_continues(rollout):
    state, (tr, obs, time, _) = rollout
    first_obs = [state.obs, obs[EPISODE - 1], obs[2 * EPISODE - 1]]
    for o in first_obs:  # CartpoleBalance's reset: cart in [-0.1, 0.1], pole within 0.034 rad
        assert (np.abs(o[:, 0]) <= 0.1).all() and (o[:, 1] >= np.cos(0.035)).all()
    # every reset draws a new state: across episodes and across environments
    assert np.abs(first_obs[1] - first_obs[0]).min() > 0 and np.abs(first_obs[2] - first_obs[1]
                                                                      ).min() > 0
    assert len(np.unique(first_obs[1][:, 0])) == NUM_ENVS
    # the step after a reset moves on from the reset observation
    t = EPISODE
    assert (time[t] == 1).all() and not tr.truncated[t].any()
    # (cart position, pole cos and sin move little in one 10 ms step; velocities may not)
    assert np.abs(tr.next_obs[t, :, :3] - obs[t - 1, :, :3]).max() < 0.01
    np.testing.assert_array_equal(time[-1], 3)


def test_spec_and_spaces(cartpole):
    gymnax_env, params, spec = cartpole
    assert spec.name == "playground/CartpoleBalance" and not spec.discrete
    assert spec.obs_shape == (5,) and spec.action_shape == (1,)
    np.testing.assert_array_equal(spec.action_low, [-1.0])
    np.testing.assert_array_equal(spec.action_high, [1.0])
    assert spec.max_episode_steps == params.max_steps_in_episode == EPISODE
    assert gymnax_env.observation_space(params).shape == (5,)
    # the task config's episode length (1000) by default, in agent steps of action_repeat
    assert envs.make("playground/CartpoleBalance",
                     action_repeat=3).spec.max_episode_steps == 334


def test_registered_ids_are_the_installed_dm_control_suite(cartpole):
    from mujoco_playground import dm_control_suite

    assert sorted(playground.DM_CONTROL_TASKS) == sorted(dm_control_suite.ALL_ENVS)
    ids = envs.registered()
    assert all(playground.PREFIX + task in ids for task in playground.DM_CONTROL_TASKS)


def test_unknown_task_names_the_dm_control_ids(monkeypatch):
    monkeypatch.setattr(playground, "available", lambda: True)
    with pytest.raises(ValueError, match="playground/CheetahRun") as exc:
        envs.make("playground/Go1JoystickFlatTerrain")
    assert "\n" not in str(exc.value)


def test_missing_extra_is_a_one_line_error_with_the_install_command(monkeypatch):
    monkeypatch.setattr(playground, "available", lambda: False)
    monkeypatch.setattr(envs, "_EXTRA", {k: v for k, v in envs._EXTRA.items()
                                         if not k.startswith(playground.PREFIX)})
    assert not any(e.startswith(playground.PREFIX) for e in envs.registered())
    with pytest.raises(ValueError, match=r'pip install -e "\.\[mujoco\]"') as exc:
        envs.make("playground/CartpoleBalance")
    assert isinstance(exc.value, ImportError) and "\n" not in str(exc.value)


def test_unknown_keyword_is_a_value_error(cartpole):
    with pytest.raises(ValueError, match="playground/CartpoleBalance"):
        envs.make("playground/CartpoleBalance", episode_len=5)


def test_dict_observations_flatten_to_the_state_entry_or_sorted_leaves():
    state = {"privileged_state": jnp.ones(3), "state": jnp.arange(2.0)}
    np.testing.assert_array_equal(playground.flatten_obs(state), [0.0, 1.0])
    other = {"b": jnp.full((2, 2), 2.0), "a": jnp.ones(1)}
    out = playground.flatten_obs(other)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, [1.0, 2.0, 2.0, 2.0, 2.0])


def test_ppo_builds_and_traces_on_a_playground_task(cartpole):
    """The whole PPO program (rollouts, updates, evaluation) traced, not compiled: the trainer
    accepts the id and the shapes line up. The jitted run is the learning check below."""
    train = ppo.make_train({"env": "playground/CartpoleBalance", "num_envs": 4, "num_steps": 16,
                            "total_timesteps": 4 * 16 * 2, "update_epochs": 1,
                            "num_minibatches": 2, "hidden_sizes": (16, 16), "eval_every": 0,
                            "eval_episodes": 2})
    _, metrics = jax.eval_shape(train, jax.random.key(0))
    assert metrics["env_steps"].shape == (2,) and metrics["eval_return"].dtype == jnp.float32


# Returns of full 1000-step CartpoleBalance episodes (reward in [0, 1] per step), mean of 16:
# uniformly random actions 387, the zero action 697. PPO with purerl's defaults (16 envs x 64
# steps) reached 992-1000 after 154k env steps and 999-1000 at 250k on each of 6 seeds.
RANDOM_RETURN, ZERO_ACTION_RETURN = 387.0, 697.0


# PPO's learning check on CartpoleBalance runs through the CLI with a checkpoint halfway: the
# same run serves the checkpoint and resume checks below (one MJX training program compiled,
# not two: the suite is compile-bound).
LEARN_UPDATES = 152  # 155.6k env steps of 16 envs x 64 steps (all 6 seeds at 992+ by 154k)
HALF = LEARN_UPDATES // 2
# chunks and checkpoints every quarter: the resume check continues from the third, so it runs
# one quarter of the updates again instead of half (the MJX step is most of its time)
QUARTER = LEARN_UPDATES // 4


@pytest.fixture(scope="module")
def cli_run(cartpole, tmp_path_factory):
    """``purerl train ppo`` on CartpoleBalance over two vmapped seeds (the auto-reset's batching
    rule under nested vmap) with purerl's defaults for 155.6k env steps, evaluated halfway and
    at the end, checkpointed every quarter (the newest three kept). Mostly XLA compiling the
    MJX program; at LLVM level 1 (level 0 compiled it faster but ran it slower: 82 s in the
    whole suite against 68 s)."""
    from purerl.cli import main

    out = tmp_path_factory.mktemp("playground_cli")
    args = ["train", "ppo", "--env", "playground/CartpoleBalance", "--no-preset", "--seeds",
            "2", "--total-timesteps", str(16 * 64 * LEARN_UPDATES), "--set", "num_envs=16",
            "--set", "num_steps=64", "--set", f"eval_every={HALF}", "--set", "eval_episodes=4",
            "--chunk", str(QUARTER), "--checkpoint-every", str(QUARTER), "--out", str(out),
            "--name", "pg"]
    assert main(args) == 0
    return out / "pg"


@pytest.mark.slow
def test_ppo_learns_cartpole_balance(cli_run):
    """Finite metrics, and a final evaluation far above both the random and the zero-action
    policy."""
    metrics = purerl.load(cli_run).metrics
    assert metrics["eval_return"].shape == (2, LEARN_UPDATES)
    for name in ("policy_loss", "value_loss", "entropy", "approx_kl"):
        assert np.isfinite(metrics[name]).all(), name
    completed = metrics["episode_return"][metrics["episode_count"] > 0]
    assert completed.size and np.isfinite(completed).all()
    final = metrics["eval_return"][:, -1]
    # 900: over twice the random policy's return and 200 above the zero action's
    assert (final >= 900).all(), (final, RANDOM_RETURN, ZERO_ACTION_RETURN)


@pytest.mark.slow
def test_cli_run_saves_and_restores_its_checkpoints(cli_run):
    """A Playground state holds zero-size arrays (``data.act`` of a model without actuator
    activations), which orbax refuses to save: every Playground run through the CLI lost its
    results at the final checkpoint. Now it evaluates, saves, and restores them (``purerl
    eval`` restores a checkpoint as ``purerl.load`` does here)."""
    from purerl import checkpoint, rundir

    assert [n for n, _ in checkpoint.checkpoints(cli_run)] == [HALF, HALF + QUARTER,
                                                              LEARN_UPDATES]
    assert not rundir.missing_results(cli_run)
    loaded = purerl.load(cli_run)
    assert any(np.size(x) == 0 for x in jax.tree.leaves(loaded.state))
    evals = np.asarray(loaded.metrics["eval_return"])  # the run's own evaluations
    assert np.isfinite(evals[:, [HALF - 1, -1]]).all() and evals[:, -1].min() > 0


@pytest.mark.slow
def test_cli_run_resumes_to_the_same_metrics(cli_run, tmp_path):
    """Resumed from the checkpoint before the last (with the run's chunk program, loaded from
    the compilation cache), the run writes the uninterrupted run's metrics."""
    import json
    import shutil

    from purerl.cli import main

    split = tmp_path / "split"  # as if interrupted after the third quarter's checkpoint
    shutil.copytree(cli_run, split)
    shutil.rmtree(split / "checkpoints" / str(LEARN_UPDATES))
    for name in ("metrics.json", "metrics.csv", "summary.txt", "learning_curve.png"):
        (split / name).unlink()
    assert main(["resume", str(split)]) == 0
    assert json.loads((split / "metrics.json").read_text()) == \
        json.loads((cli_run / "metrics.json").read_text())
