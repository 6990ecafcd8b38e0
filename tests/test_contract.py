"""The trainer contract (docs/contract.md), for every algorithm in ``purerl.ALGORITHMS``: vmap over
seeds equals single runs, one key gives one result, chunked runs equal one ``train`` call
bitwise, the common metrics and the evaluation schedule, and ``act`` / ``value`` /
``evaluate``."""

from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import (SMALL, assert_trees_equal, assert_vmap_equals_single_runs,
                     non_finite_report, purerl_jit_at_level0, small_agent, vmapped_run)

import purerl
from purerl import envs, loop, prng

ALGOS = list(purerl.ALGORITHMS)


# Trainers whose own test file already compares a vmapped program with unbatched runs of it, on
# another of their configurations (the suite is compile-bound: each single run is a program):
# there, one key giving one result is checked on the vmapped run, re-run.
SINGLE_RUNS_ELSEWHERE = {
    "ppo": "test_ppo.py::test_vmapped_learning_rate_sweep_equals_separate_runs",
    "ddpg": "test_ddpg_td3.py::test_ddpg_with_ou_exploration_vmap_over_seeds_equals_single_runs",
    "sac": "test_sac.py::test_discrete_value_network_vmap_over_seeds_equals_single_runs",
    "off_policy_ac": "test_off_policy_ac.py::"
                     "test_swept_learning_rates_each_equal_a_run_configured_with_them",
}


@pytest.mark.parametrize("algo", ALGOS)
def test_vmap_equals_single_runs_and_one_key_gives_one_result(algo, monkeypatch):
    keys, train, state, metrics = vmapped_run(algo)
    if algo in SINGLE_RUNS_ELSEWHERE:
        file, name = SINGLE_RUNS_ELSEWHERE[algo].split("::")
        assert f"def {name}(" in (Path(__file__).parent / file).read_text()
        # the same program, loaded from the compilation cache
        assert_trees_equal(purerl.jit(jax.vmap(train))(keys), (state, metrics))
        return
    # The single runs draw the same random numbers through JAX's own lowering of the generator
    # (purerl.prng, tested equal bit for bit in test_prng): an unbatched program compiles 2-3x
    # slower with the unrolled hash (benchmarks/RESULTS.md), and what is compared here is the
    # batching, to float32 rounding. The vmapped run is purerl's default.
    monkeypatch.setenv(prng.UNROLL_ENV, "0")  # read when `single` is traced, below
    single = purerl.jit(purerl.get_algorithm(algo).make_train(SMALL[algo]))
    assert_vmap_equals_single_runs(single, (state, metrics), keys)
    assert_trees_equal(single(keys[1]), single(keys[1]))


@pytest.mark.parametrize("algo", ALGOS)
def test_chunked_runs_equal_one_train_call_bitwise(algo):
    keys, _, state, metrics = vmapped_run(algo)
    agent = small_agent(algo)
    # chunks of about 3 updates (run_chunked evens them out to one compiled length)
    compiled = loop._vmapped_updates.cache_info().misses
    chunks = list(loop.run_chunked(agent, keys, chunk=3))
    assert len(chunks) > 1 and chunks[-1][0] == agent.num_updates
    # the first chunk too: the leaves equal for all seeds only at the start go in batched
    assert loop._vmapped_updates.cache_info().misses == compiled + 1
    assert_trees_equal({k: np.concatenate([c[2][k] for c in chunks], axis=1)
                        for k in metrics}, metrics)
    assert_trees_equal(chunks[-1][1], state)


@pytest.mark.parametrize("algo", ALGOS)
def test_common_metrics_and_evaluation_schedule(algo):
    _, _, state, metrics = vmapped_run(algo)
    agent = small_agent(algo)
    n, every = agent.num_updates, agent.eval_every
    for name in ("episode_return", "episode_count", "env_steps", "eval_return"):
        assert metrics[name].shape == (3, n), name
    steps = np.asarray(metrics["env_steps"])
    assert (np.diff(steps, axis=1) > 0).all() and (steps[:, 0] > 0).all()
    np.testing.assert_array_equal(steps[:, -1], state.run.env_steps)
    np.testing.assert_array_equal(state.run.update_step, n)
    evaluated = (np.arange(1, n + 1) % every == 0) | (np.arange(1, n + 1) == n)
    assert np.isfinite(metrics["eval_return"][:, evaluated]).all()
    assert np.isnan(metrics["eval_return"][:, ~evaluated]).all()


@pytest.mark.parametrize("algo", ALGOS)
def test_every_metric_is_finite_except_documented_nans(algo):
    """On the reference environment, for every seed: test_finite_metrics checks the other
    gymnax families with programs of their own."""
    _, _, _, metrics = vmapped_run(algo)
    agent = small_agent(algo)
    problems = [p for i in range(3)
                for p in non_finite_report(algo, f"{SMALL[algo]['env']} seed {i}",
                                           {k: v[i] for k, v in metrics.items()},
                                           agent.num_updates, agent.eval_every, SMALL[algo])]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("algo", ALGOS)
def test_act_value_and_evaluate(algo):
    _, _, states, _ = vmapped_run(algo)
    state = jax.tree.map(lambda x: x[0], states)
    agent = small_agent(algo)
    spec = envs.make(SMALL[algo]["env"]).spec
    obs = envs.make(spec.name).reset(jax.random.key(1), 5).obs
    greedy = agent.act(state, obs)
    assert greedy.shape == (5,) + spec.action_shape
    np.testing.assert_array_equal(greedy, agent.act(state, obs, jax.random.key(2), True))
    explore = np.asarray(agent.act(state, obs, jax.random.key(2), deterministic=False))
    if spec.discrete:
        assert explore.dtype.kind == "i" and ((explore >= 0) & (explore < spec.num_actions)).all()
    else:
        assert ((explore >= spec.action_low) & (explore <= spec.action_high)).all()
    if agent.value is not None:
        values = agent.value(state, obs)
        assert values.shape == (5,) and np.isfinite(values).all()
    with purerl_jit_at_level0():  # checked for finiteness only (not the shared vmapped_run)
        evaluate = purerl.jit(agent.evaluate)
    assert np.isfinite(evaluate(state))
