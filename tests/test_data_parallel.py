"""Data parallel on 4 fake CPU devices: PPO, A2C, TRPO, DQN and SAC (continuous and discrete)
with their ``num_envs`` environments split over the devices equal one device with the same
config (4x each device's environments), states and every metric; chunked runs too; configs
that do not split are one-line errors.

The device count must be set before JAX starts: the 4-device process is
``tests/test_distributed.py parallel`` (its ``_parallel``, beside the other distributed
checks), started by this file's fixture; a file of its own so that pytest-xdist runs it beside
test_distributed.py's processes on the other worker.
"""

from __future__ import annotations

import json

import pytest
from helpers import DISTRIBUTED_TOL as TOL
from helpers import run_distributed_script


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("data_parallel") / "parallel.json"
    run_distributed_script([(["parallel", str(out)], 4)])
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", ["ppo_dp", "dqn_dp", "a2c_dp", "trpo_dp", "sac_dp",
                                  "sac_discrete_dp"])
def test_data_parallel_on_4_devices_equals_one_device_with_4x_the_envs(report, name):
    # state (params, optimiser, environments, normaliser, replay buffer) and every metric
    assert report[name] <= TOL, report
    assert report[name + "_learned"] > 1e-3  # the parameters did move: a real comparison


@pytest.mark.parametrize("algo, overrides, message", [
    ("a2c", dict(num_envs=6), "needs num_envs divisible by 4, got num_envs=6"),
    ("trpo", dict(num_envs=6), "needs num_envs divisible by 4, got num_envs=6"),
    ("sac", dict(num_envs=4, buffer_size=302), "needs a replay capacity divisible by num_envs=4"),
    ("sac", dict(num_envs=4, batch_size=30), "needs batch_size divisible by 4, got 30"),
])
def test_a_data_parallel_config_that_does_not_split_is_a_one_line_error(algo, overrides,
                                                                        message):
    import purerl
    from purerl.parallel import DataParallel

    module = purerl.get_algorithm(algo)
    with pytest.raises(ValueError, match=message):
        module.make_agent(module.Config(**overrides), data_parallel=DataParallel("data", 4))


def test_data_parallel_names_the_trainers_that_have_it():
    from purerl import ddpg, distributed

    with pytest.raises(ValueError,
                       match="implemented for a2c, dqn, off_policy_ac, ppo, sac, trpo, not ddpg"):
        distributed.make_agent(ddpg.Config())


def test_chunked_data_parallel_dqn_equals_one_device(report):
    assert report["dqn_dp_chunked"] <= TOL, report  # run_chunked(data_parallel=True)
