"""Presets (purerl.presets, Config.for_env, the CLI's use of them) and the conv torso."""

import dataclasses
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purerl
from purerl import cli, envs, networks, ppo, presets, sac, trpo

PRESETS = presets.all_presets()


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_builds_a_valid_config_and_agent(preset):
    if not preset.available:
        pytest.skip(f"{preset.env} needs the mujoco extra")
    config = preset.config()
    assert config.env == preset.env
    for key, value in preset.overrides.items():
        assert getattr(config, key) == value, key
    agent = purerl.get_algorithm(preset.algo).make_agent(config)
    assert agent.num_updates >= 1


def test_recorded_results_belong_to_the_current_presets():
    records = presets.load_results()
    names = {p.name for p in PRESETS}
    assert set(records) <= names, set(records) - names
    for name, record in records.items():
        preset = presets.lookup(*name.split("/", 1))
        assert preset.measured == record, f"{name}: stale record, re-run benchmarks/suite.py"
        # 8 seeds, 4 where the CPU allowed no more (MinAtar's DQN and SAC)
        assert record.seeds >= 4 and np.isfinite([record.mean, record.std]).all()
        if preset.available:
            assert record.steps <= preset.config().total_timesteps



@pytest.mark.parametrize("family", list(presets.FAMILIES))
def test_every_preset_of_a_family_is_measured(family):
    missing = [p.name for p in PRESETS if presets.family_of(p.env) == family and not p.measured]
    assert not missing, f"not measured (run benchmarks/suite.py): {missing}"


def test_for_env_is_the_preset_with_overrides_on_top():
    preset = presets.lookup("ppo", "Pendulum-v1")
    assert ppo.Config.for_env("Pendulum-v1") == preset.config()
    tuned = ppo.Config.for_env("Pendulum-v1", lr=1e-4)
    assert tuned.lr == 1e-4 and tuned.num_steps == preset.overrides["num_steps"]
    assert sac.Config(**sac.DISCRETE) == sac.Config.for_env("CartPole-v1")
    with pytest.raises(ValueError, match="unknown ppo config key 'lrr'"):
        ppo.Config.for_env("Pendulum-v1", lrr=1e-4)


def test_for_env_without_a_preset_warns_and_gives_the_defaults():
    assert presets.lookup("trpo", "Catch-bsuite") is None
    with pytest.warns(UserWarning, match="no trpo preset for Catch-bsuite"):
        config = trpo.Config.for_env("Catch-bsuite")
    assert config == trpo.Config(env="Catch-bsuite")


def test_stale_records_are_not_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(presets, "RESULTS_PATH", tmp_path / "presets.json")
    preset = presets.lookup("ppo", "Acrobot-v1")
    assert preset.measured is None and not preset.stale
    result = presets.Measured(150_000, 8, -80.0, 3.0, 10.0, "test", "2026-01-01", "cmd",
                              preset.config().to_dict())
    presets.record(preset, result)
    assert (preset.measured.mean, preset.measured.std, preset.measured.steps) == (-80, 3, 150_000)
    row = next(r for r in presets.table() if r[:2] == ("ppo", "Acrobot-v1"))
    assert row[3] == "-80.0 ± 3.0 over 8 seeds at 150k steps"
    presets.record(preset, result.__class__(**{**result.__dict__,
                                               "config": {**result.config, "lr": 1.0}}))
    assert preset.measured is None and preset.stale
    with pytest.raises(ValueError, match="non-finite"):
        presets.record(preset, result.__class__(**{**result.__dict__, "mean": float("nan")}))
    # a record made before a config field existed stays valid while the preset leaves that
    # field at its default (memory was added after most records), and not otherwise
    older = {k: v for k, v in result.config.items() if k not in ("memory", "memory_size")}
    presets.record(preset, result.__class__(**{**result.__dict__, "config": older}))
    assert preset.measured is not None and not preset.stale
    recurrent = dataclasses.replace(preset, overrides={**preset.overrides, "memory": "gru"})
    assert recurrent.measured is None and recurrent.stale


def test_playground_presets_without_the_extra_are_listed_and_checked_by_overrides(
        tmp_path, monkeypatch):
    from purerl import playground

    monkeypatch.setattr(playground, "available", lambda: False)
    monkeypatch.setattr(presets, "RESULTS_PATH", tmp_path / "presets.json")
    preset = presets.lookup("ppo", "playground/CartpoleBalance")
    assert not preset.available  # then its config is not built: the overrides are compared
    config = {"env": preset.env, **preset.overrides, "lr": 3e-4}
    result = presets.Measured(250_000, 8, 990.0, 5.0, 10.0, "test", "2026-01-01", "cmd", config)
    presets.record(preset, result)
    assert preset.measured == presets.load_results()[preset.name]
    row = next(r for r in presets.table() if r[:2] == ("ppo", "playground/CartpoleBalance"))
    assert row[3].startswith("990.0 ± 5.0") and row[3].endswith("(needs the mujoco extra)")
    presets.record(preset, result.__class__(**{**result.__dict__, "config": {
        **config, "total_timesteps": 1}}))
    assert preset.measured is None  # an override differs from the record's config


def _train_args(*extra):
    return cli.build_parser().parse_args(["train", *extra])


def test_cli_uses_the_preset_and_says_so(tmp_path, capsys):
    args = _train_args("ppo", "--env", "Pendulum-v1", "--set", "lr=2e-4", "--out", str(tmp_path))
    config, agent, _, name = cli.setup_train(args)
    assert name == "ppo/Pendulum-v1"
    # the preset's eval_every (the default 50) evaluates once in its 73 updates: the CLI
    # evaluates 10 times instead, and says so
    assert agent.num_updates == 73 and config.eval_every == 7
    assert config == ppo.Config.for_env("Pendulum-v1", lr=2e-4, eval_every=7)
    err = capsys.readouterr().err
    assert "preset ppo/Pendulum-v1" in err
    assert "evaluating every 7 updates (10 evaluations): eval_every=50 would evaluate 1 " in err

    config, _, _, name = cli.setup_train(_train_args("ppo", "--env", "Pendulum-v1", "--no-preset",
                                                "--set", "eval_every=50", "--out",
                                                str(tmp_path)))
    assert name is None and config == ppo.Config(env="Pendulum-v1")  # --set eval_every wins
    err = capsys.readouterr().err
    assert "--no-preset" in err and "preset ppo/" not in err and "evaluating" not in err

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, _, _, name = cli.setup_train(_train_args("trpo", "--env", "Catch-bsuite",
                                               "--out", str(tmp_path)))
    assert name is None
    assert capsys.readouterr().err.startswith("no trpo preset for Catch-bsuite")


@pytest.mark.parametrize("updates, every, expected", [
    (73, 50, 7), (292, 50, 29), (292, 20, 20), (5, 50, 1), (40, 0, 4), (100, 10, 10)])
def test_cli_runs_evaluate_at_least_ten_times(updates, every, expected):
    config = ppo.Config(num_envs=4, num_steps=32, num_minibatches=2,
                        total_timesteps=4 * 32 * updates, eval_every=every)
    adjusted, note = cli.enough_evaluations(config, updates)
    assert adjusted.eval_every == expected
    assert (note is None) == (expected == every)


def test_cli_run_saves_the_preset_name_and_lists_presets(tmp_path, capsys, purerl_jit_level0):
    code = cli.main(["train", "a2c", "--env", "Acrobot-v1", "--total-timesteps", "4000",
                     "--out", str(tmp_path), "--name", "run"])
    assert code == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["preset"] == "a2c/Acrobot-v1" and saved["total_timesteps"] == 4000
    assert cli.main(["list", "--presets"]) == 0
    out = capsys.readouterr().out
    for p in PRESETS:
        assert p.env in out
    assert cli.main(["list", "dqn", "--presets"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()
            if line.startswith("  ") and not line.startswith("   ")]  # preset lines
    assert set(rows) == {"dqn"} and len(rows) == len(presets_of("dqn"))


# ---------------------------------------------------------------------------- conv torso


def numpy_conv_valid(x, kernel, bias):
    """A 3x3 'valid' convolution, channels last, as explicit sums: [H, W, C] -> [H-2, W-2, F]."""
    h, w, _ = x.shape
    out = np.zeros((h - 2, w - 2, kernel.shape[-1]))
    for i in range(h - 2):
        for j in range(w - 2):
            out[i, j] = np.einsum("abc,abcf->f", x[i:i + 3, j:j + 3], kernel)
    return out + bias


def test_conv_encoder_matches_a_numpy_convolution():
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 3, 7, 6, 4)))
    encoder = networks.ConvEncoder("relu")
    params = encoder.init(jax.random.key(1), jnp.asarray(x))
    out = np.asarray(encoder.apply(params, jnp.asarray(x)))
    kernel = np.asarray(params["params"]["Conv_0"]["kernel"])
    assert kernel.shape == (3, 3, 4, 16) and out.shape == (2, 3, 5 * 4 * 16)
    expected = np.maximum(numpy_conv_valid(x[1, 2], kernel, 0.0), 0.0).reshape(-1)
    np.testing.assert_allclose(out[1, 2], expected, rtol=1e-5, atol=1e-5)
    # orthogonal init with gain sqrt(2) on the [9C, 16] matrix, as the dense torso layers
    k = kernel.reshape(-1, 16)
    np.testing.assert_allclose(k.T @ k, 2.0 * np.eye(16), atol=1e-4)


def test_torso_defaults_by_observation_rank():
    minatar = envs.make("Breakout-MinAtar").spec
    assert networks.torso_for("auto", minatar.obs_shape) == "cnn"
    assert networks.torso_for("auto", (4,)) == "mlp"
    assert networks.torso_for("mlp", minatar.obs_shape) == "mlp"
    with pytest.raises(ValueError, match="torso='cnn' needs image observations"):
        ppo.make_train({"torso": "cnn"})  # CartPole-v1: rejected before anything is traced


@pytest.mark.parametrize("algo", ["ppo", "dqn", "sac", "a2c"])
def test_minatar_networks_have_the_conv_torso(algo):
    config = {"env": "Breakout-MinAtar", "hidden_sizes": (32,), "total_timesteps": 4096,
              "eval_episodes": 1}
    if algo in ("dqn", "sac"):
        config["learning_starts"] = 64
    state = jax.eval_shape(purerl.get_algorithm(algo).make_agent(config).init,
                           jax.random.key(0))
    shapes = {"/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path): leaf.shape
              for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}
    h, w, c = envs.make("Breakout-MinAtar").spec.obs_shape
    convs = [k for k in shapes if k.endswith("Conv_0/kernel")]
    assert convs and all(shapes[k] == (3, 3, c, 16) for k in convs), shapes
    dense_in = [s for k, s in shapes.items() if k.endswith("MLP_0/Dense_0/kernel")]
    assert dense_in and all(s == ((h - 2) * (w - 2) * 16, 32) for s in dense_in), shapes


def test_an_unsolved_preset_says_so_when_used(tmp_path, capsys):
    cli.setup_train(_train_args("sac", "--env", "MountainCarContinuous-v0", "--out", str(tmp_path)))
    err = capsys.readouterr().err
    assert ("note: sac/MountainCarContinuous-v0 does not solve MountainCarContinuous-v0: learns "
            "to stand still") in err
    cli.setup_train(_train_args("sac", "--env", "Pendulum-v1", "--out", str(tmp_path)))
    assert "note:" not in capsys.readouterr().err
    unsolved = {p.name for p in presets.all_presets() if p.caveat}
    assert {"dqn/MountainCar-v0", "sac/MountainCar-v0", "sac/MountainCarContinuous-v0"} <= unsolved


def test_preset_listing_names_the_discrete_sac_and_fits_a_terminal(capsys):
    assert cli.main(["list", "--presets"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120
    row = next(line for line in lines if "CartPole-v1" in line and line.split()[0] == "sac")
    assert "sac (discrete SAC)" in row
    assert not any("Pendulum-v1" in line and "(discrete SAC)" in line for line in lines)
    row = next(line for line in lines if "MountainCar-v0" in line and "dqn" in line)
    assert row.rstrip().endswith("(unsolved)")
    assert cli.main(["list", "sac", "--presets"]) == 0
    assert {line.split()[0] for line in capsys.readouterr().out.splitlines()
            if "over 8 seeds" in line} == {"sac"}


def presets_of(algo: str) -> list:
    return [p for p in presets.all_presets() if p.algo == algo]
