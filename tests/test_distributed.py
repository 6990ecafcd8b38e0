"""purerl.distributed on 4 fake CPU devices: sharded seeds and grids equal the unsharded vmap,
a two-process (multi-host) run equals one process with 4 devices, and a seed count that does
not divide is padded. (Data parallel: tests/test_data_parallel.py, whose 4-device process is
this file's ``parallel`` part.)

The device count must be set before JAX starts, so the checks run in subprocesses: this file
is also their script (``python tests/test_distributed.py seeds|parallel|host ...``). The three
processes of this file (one with 4 devices, two hosts with 2 each) start together in one module
fixture and report the largest difference of every check as JSON (or the hosts' arrays); the
tests read the report.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import DISTRIBUTED_TOL as TOL
from helpers import run_distributed_script  # runs this file as the subprocesses' script


# ------------------------------------------------------------------------ subprocess side


def _configs():
    from purerl import a2c, dqn, ppo, sac, trpo

    tiny = dict(hidden_sizes=(8,), eval_every=0, eval_episodes=2)
    return {
        # 3 updates of 4 envs x 8 steps
        "ppo": ppo.Config(env="CartPole-v1", num_envs=4, num_steps=8, total_timesteps=96,
                          update_epochs=2, num_minibatches=2, **tiny),
        "sac": sac.Config(env="Pendulum-v1", num_envs=2, total_timesteps=40, learning_starts=16,
                          batch_size=8, **tiny),
        # data parallel: 8 envs (2 per device); one minibatch (see purerl.distributed)
        "ppo_dp": ppo.Config(env="CartPole-v1", num_envs=8, num_steps=8, total_timesteps=256,
                             update_epochs=2, num_minibatches=1, normalize_obs=True, **tiny),
        "dqn_dp": dqn.Config(env="CartPole-v1", num_envs=8, total_timesteps=320,
                             learning_starts=64, batch_size=16, buffer_size=160,
                             num_gradient_steps=2, target_update_every=4, normalize_obs=True,
                             **tiny),
        "a2c_dp": a2c.Config(env="CartPole-v1", num_envs=8, num_steps=8, total_timesteps=256,
                             normalize_obs=True, normalize_advantages=True, **tiny),
        # one value-fitting minibatch (as PPO's); CG and the line search see every device
        "trpo_dp": trpo.Config(env="CartPole-v1", num_envs=8, num_steps=8, total_timesteps=256,
                               vf_minibatches=1, vf_epochs=2, cg_iters=4, max_backtracks=3,
                               normalize_obs=True, **tiny),
        # 4 warm-up updates (random actions), then 12 of gradient steps on 8-row minibatches
        "sac_dp": sac.Config(env="Pendulum-v1", num_envs=4, total_timesteps=64,
                             learning_starts=16, batch_size=8, buffer_size=32,
                             normalize_obs=True, **tiny),
        "sac_discrete_dp": sac.Config(env="CartPole-v1", num_envs=4, total_timesteps=64,
                                      learning_starts=16, batch_size=8, buffer_size=32, **tiny),
    }


def _max_diff(a, b) -> float:
    """The largest |a - b| / max(1, |a|) over every leaf: the absolute difference, relative
    for values above 1 (Pendulum's returns of -1400 differ in their 8th digit). NaNs in the
    same places count as equal, NaN against a number as infinite."""
    import jax

    from purerl import distributed

    worst = 0.0
    for x, y in zip(jax.tree.leaves(distributed.gather(a)), jax.tree.leaves(distributed.gather(b)),
                    strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape or (np.isnan(x) != np.isnan(y)).any():
            return float("inf")
        if x.size:
            worst = max(worst, float(np.nanmax(np.abs(x - y) / np.maximum(1.0, np.abs(x)),
                                               initial=0.0)))
    return worst


def _seeds(out: Path) -> None:
    """4 devices in one process: sharded seeds and grids, padding, and the reference result of
    the multi-host check."""
    import jax
    import jax.numpy as jnp

    from purerl import distributed, loop, ppo, sac

    assert jax.device_count() == 4
    cfg = _configs()
    report = {}
    sac_train, sac_keys = sac.make_train(cfg["sac"]), jax.random.split(jax.random.key(0), 4)
    report["sac_seeds"] = _max_diff(loop.jit(jax.vmap(sac_train))(sac_keys),
                                    distributed.train_seeds(sac_train, sac_keys))
    keys = jax.random.split(jax.random.key(0), 8)

    train = ppo.make_train(cfg["ppo"])
    reference = loop.jit(jax.vmap(train))(keys)
    sharded = distributed.train_seeds(train, keys)
    report["ppo_seeds"] = _max_diff(reference, sharded)
    report["ppo_seeds_sharding"] = str(jax.tree.leaves(sharded[0].params)[0].sharding.spec)
    # a recurrent policy: the carries kept between updates shard with their seeds
    gru = ppo.make_train(cfg["ppo"].replace(memory="gru", memory_size=8))
    report["ppo_gru_seeds"] = _max_diff(loop.jit(jax.vmap(gru))(keys[:4]),
                                        distributed.train_seeds(gru, keys[:4]))
    # 6 seeds on 4 devices: padded to 8 (the same compiled program), 6 come back
    padded = distributed.train_seeds(train, keys[:6])
    report["ppo_padded"] = _max_diff(jax.tree.map(lambda x: x[:6], reference), padded)
    try:
        distributed.train_seeds(train, keys[:6], pad=False)
        report["no_pad_error"] = ""
    except ValueError as e:
        report["no_pad_error"] = str(e)
    np.savez(out.with_suffix(".npz"), *jax.tree.leaves(distributed.gather(
        (sharded[0].params, sharded[1]))))
    # saved without metrics, restored onto the 4 devices: each seed back where it was
    from purerl import checkpoint

    checkpoint.save(out.parent / "ckpt", cfg["ppo"], sharded[0])
    restored = distributed.restore(out.parent / "ckpt").state
    report["restored"] = _max_diff(sharded[0].params, restored.params)
    report["restored_sharding"] = str(jax.tree.leaves(restored.params)[0].sharding.spec)

    grid = {"lr": jnp.array([1e-3, 3e-4, 1e-2, 2e-3]),
            "ent_coef": jnp.array([0.0, 0.01, 0.02, 0.0])}
    report["ppo_grid"] = _max_diff(loop.jit(jax.vmap(train, in_axes=(None, 0)))(keys[0], grid),
                                   distributed.train_grid(train, keys[0], grid))
    out.write_text(json.dumps(report))


def _parallel(out: Path) -> None:
    """4 devices in one process: every data-parallel trainer (tests/test_data_parallel.py)."""
    import jax

    from purerl import a2c, distributed, dqn, loop, ppo, sac, trpo

    assert jax.device_count() == 4
    cfg = _configs()
    report = {}
    singles = {}
    for name, module in (("ppo_dp", ppo), ("dqn_dp", dqn), ("a2c_dp", a2c), ("trpo_dp", trpo),
                         ("sac_dp", sac), ("sac_discrete_dp", sac)):
        key = jax.random.key(1)
        single = singles[name] = loop.jit(module.make_train(cfg[name]))(key)
        parallel = loop.jit(distributed.data_parallel_train(cfg[name]))(key)
        report[name] = _max_diff(single, parallel)
        report[name + "_learned"] = _max_diff(single[0].params,
                                              module.make_agent(cfg[name]).init(key).params)
    # the CLI's path: chunks of a data-parallel agent vmapped over (here one) seed
    mesh = distributed.make_mesh(axis=distributed.DATA_AXIS)
    agent = distributed.make_agent(cfg["dqn_dp"], mesh)
    chunks = list(distributed.run_chunked(agent, jax.random.key(1)[None], chunk=20, mesh=mesh,
                                          data_parallel=True))
    metrics = {k: np.concatenate([c[2][k][0] for c in chunks]) for k in chunks[0][2]}
    report["dqn_dp_chunked"] = _max_diff(
        singles["dqn_dp"], (jax.tree.map(lambda x: x[0], chunks[-1][1]), metrics))
    out.write_text(json.dumps(report))


def _host(out: Path, process_id: int, port: int) -> None:
    """One of two processes with 2 devices each: PPO's sharded seeds over all 4."""
    from purerl import distributed

    distributed.initialize(f"127.0.0.1:{port}", 2, process_id, local_devices=2)
    import jax

    from purerl import ppo

    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
    keys = jax.random.split(jax.random.key(0), 8)
    state, metrics = distributed.train_seeds(ppo.make_train(_configs()["ppo"]), keys)
    np.savez(out, *jax.tree.leaves(distributed.gather((state.params, metrics))))


# ---------------------------------------------------------------------------- test side


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run the three processes at once (one with 4 devices, two hosts with 2 each); the
    4-device report and the arrays of the reference and the two hosts. (The data-parallel
    checks run from tests/test_data_parallel.py, so that pytest-xdist can give them the other
    worker.)"""
    tmp = tmp_path_factory.mktemp("distributed")
    port = _free_port()
    run_distributed_script([(["seeds", str(tmp / "seeds.json")], 4)]
                           + [(["host", str(tmp / f"host{i}.npz"), str(i), str(port)], None)
                              for i in range(2)])
    report = json.loads((tmp / "seeds.json").read_text())
    arrays = {name: [np.load(tmp / f"{name}.npz")[k] for k in
                     sorted(np.load(tmp / f"{name}.npz").files, key=lambda k: int(k[4:]))]
              for name in ("seeds", "host0", "host1")}
    return report, arrays


def test_sharded_seeds_equal_the_unsharded_vmap_for_ppo_sac_and_recurrent_ppo(results):
    report, _ = results
    assert report["ppo_seeds"] <= TOL and report["sac_seeds"] <= TOL, report
    assert report["ppo_gru_seeds"] <= TOL, report  # recurrent PPO (memory="gru")
    assert report["ppo_seeds_sharding"] == "P('seed',)"  # each device holds its seeds


def test_a_checkpoint_saved_without_metrics_restores_onto_the_mesh(results):
    report, _ = results
    assert report["restored"] == 0.0, report
    assert report["restored_sharding"] == "P('seed',)"


def test_sharded_grid_equals_the_unsharded_grid(results):
    assert results[0]["ppo_grid"] <= TOL, results[0]


def test_a_seed_count_that_does_not_divide_the_devices_is_padded_or_refused(results):
    report, _ = results
    assert report["ppo_padded"] <= TOL  # 6 seeds on 4 devices: the first 6 of 8
    assert report["no_pad_error"] == ("6 seeds / grid points do not divide over 4 devices; use "
                                      "a multiple of 4 (or pad=True)")


def test_two_processes_with_2_devices_each_equal_one_process_with_4(results):
    _, arrays = results
    single = arrays["seeds"]
    for host in ("host0", "host1"):  # every host gathers the whole result
        assert len(arrays[host]) == len(single)
        for a, b in zip(single, arrays[host]):
            np.testing.assert_allclose(a, b, rtol=0, atol=TOL)


if __name__ == "__main__":  # the repository is on PYTHONPATH (helpers.run_distributed_script)
    if sys.argv[1] in ("seeds", "parallel"):
        {"seeds": _seeds, "parallel": _parallel}[sys.argv[1]](Path(sys.argv[2]))
    else:
        _host(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
