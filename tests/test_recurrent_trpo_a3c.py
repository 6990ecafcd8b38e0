"""TRPO and A3C with memory (``memory="gru"`` / ``"lstm"``, purerl.recurrent): the recurrent
Fisher-vector product against a dense Fisher matrix, A3C with one worker against recurrent A2C,
chunked and checkpoint-resumed runs against one ``train`` call (bitwise, with traced
hyperparameters and the carries in the state), and recurrent TRPO learning a memory task that a
feed-forward policy cannot."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, assert_trees_equal, final_seed_evals

import purerl
from purerl import a2c, a3c, checkpoint, envs, loop, prng, recurrent, trpo
from purerl.parallel import DataParallel

# tiny runs on MemoryChain-3 (episodes of 4 steps: every segment crosses episode boundaries, so
# the carries are reset inside the sequences and carried across updates)
TINY = {
    "trpo": dict(env="MemoryChain-3-bsuite", num_envs=4, num_steps=6, total_timesteps=4 * 6 * 4,
                 memory="gru", memory_size=8, hidden_sizes=(8,), vf_minibatches=2, vf_epochs=2,
                 cg_iters=3, max_backtracks=2, eval_every=2, eval_episodes=2),
    "a3c": dict(env="MemoryChain-3-bsuite", num_envs=2, num_steps=5, num_workers=2,
                total_timesteps=2 * 2 * 5 * 4, memory="lstm", memory_size=8, hidden_sizes=(8,),
                eval_every=2, eval_episodes=2),
}
# per-seed hyperparameters: the chunked runs sweep traced values
HPARAMS = {"trpo": {"max_kl": jnp.array([0.01, 0.03]), "vf_lr": jnp.array([1e-3, 3e-3])},
           "a3c": {"lr": jnp.array([7e-3, 2e-3]), "ent_coef": jnp.array([0.01, 0.05])}}


# ------------------------------------------------------------------ the Fisher-vector product


def _tiny_sequences(cell: str, key: jax.Array):
    """A tiny recurrent policy (memory_size 4, hidden 4) on CartPole's spaces, its parameters
    and a batch of T=5, B=2 sequences with a reset inside one and random first carries."""
    config = trpo.Config(env="CartPole-v1", memory=cell, memory_size=4, hidden_sizes=(4,),
                         num_envs=2, num_steps=5, vf_minibatches=2)
    spec = envs.trainer_env(config).env.spec
    nets = trpo.make_recurrent_nets(config, spec)
    k = jax.random.split(key, 5)
    params = recurrent.init_params(nets.policy, k[0], spec)
    obs = jax.random.normal(k[1], (5, 2, 4))
    start = jnp.zeros((5, 2), bool).at[0, 0].set(True).at[3, 1].set(True)
    carry = jax.tree.map(lambda c: jax.random.normal(k[2], c.shape), nets.policy.initial_carry(2))
    action = jax.random.bernoulli(k[3], 0.5, (5, 2)).astype(jnp.int32)
    advantage = jax.random.normal(k[4], (5, 2))
    batch = trpo.Sequences(obs, action, advantage, jnp.zeros((5, 2)), start, carry, None)
    return nets, params, batch


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_recurrent_fisher_vector_product_is_the_dense_fisher_matrix_times_v(cell):
    nets, params, batch = _tiny_sequences(cell, jax.random.key(0))
    assert not nets.policy.fused_backward  # forward mode needs the autodiff scan
    obj = trpo.objectives(trpo.sequence_policy(nets.policy, batch), params, batch.action,
                          batch.advantage)
    n = obj.flat.size
    v = jax.random.normal(jax.random.key(1), (n,))
    damping = 0.1
    fvp = jax.jit(lambda v: trpo.fisher_vector_product(obj.mean_kl, obj.flat, v, damping))(v)

    # reference 1: the dense Hessian of the mean KL at theta' = theta, over flat parameters
    hessian = np.asarray(jax.jit(jax.hessian(obj.mean_kl))(obj.flat), np.float64)
    assert hessian.shape == (n, n)
    np.testing.assert_allclose(fvp, hessian @ np.asarray(v) + damping * np.asarray(v),
                               rtol=2e-4, atol=1e-6)

    # reference 2, without second derivatives: the Fisher matrix of the categorical policy,
    # mean over the T x B steps of J^T (diag p - p p^T) J, J = d logits / d theta (reverse mode)
    def logits(f):
        return nets.policy.apply(obj.unravel(f), batch.carry, batch.obs, batch.start).dist.logits

    jac = np.asarray(jax.jit(jax.jacrev(logits))(obj.flat), np.float64)  # [T, B, A, n]
    p = np.asarray(jax.nn.softmax(logits(obj.flat)), np.float64)
    metric = np.einsum("tba,ac->tbac", p, np.eye(p.shape[-1])) - np.einsum("tba,tbc->tbac", p, p)
    fisher = np.einsum("tban,tbac,tbcm->nm", jac, metric, jac) / (5 * 2)
    np.testing.assert_allclose(hessian, fisher, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(fvp, fisher @ np.asarray(v) + damping * np.asarray(v),
                               rtol=2e-4, atol=1e-6)
    assert np.abs(fisher).max() > 1e-3  # not trivially zero
    # the carries matter: replaying from zero carries gives another Fisher matrix
    zero = batch._replace(carry=jax.tree.map(jnp.zeros_like, batch.carry))
    other = trpo.objectives(trpo.sequence_policy(nets.policy, zero), params, batch.action,
                            batch.advantage)
    assert not np.allclose(trpo.fisher_vector_product(other.mean_kl, other.flat, v),
                           fvp - damping * v, rtol=1e-3)

    # the default core's hand-written backward pass takes no forward mode of its own: TRPO's
    # policy is built with the autodiff scan (fused_backward=False)
    fused = nets.policy.clone(fused_backward=True)
    fused_obj = trpo.objectives(trpo.sequence_policy(fused, batch), params, batch.action,
                                batch.advantage)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(fused_obj.mean_kl, (fused_obj.flat,), (v,))


# ----------------------------------------------------------------------------- A3C is A2C


def test_recurrent_a3c_with_one_worker_is_recurrent_a2c(purerl_jit_level0, monkeypatch):
    # both runs compiled here, at level 0, and unbatched: drawn through JAX's lowering of the
    # generator (the same bits, test_prng; the unrolled hash compiles 2-3x slower unbatched)
    monkeypatch.setenv(prng.UNROLL_ENV, "0")
    config = dict(env="MemoryChain-3-bsuite", num_envs=4, num_steps=5, total_timesteps=4 * 5 * 6,
                  memory="gru", memory_size=8, hidden_sizes=(16,), eval_every=3, eval_episodes=2)
    key = jax.random.key(3)
    s2, m2 = purerl.jit(a2c.make_train(config))(key)
    s3, m3 = purerl.jit(a3c.make_train({**config, "num_workers": 1, "lr": 7e-3,
                                        "ent_coef_spread": 3.0}))(key)
    assert isinstance(s3, a3c.RecurrentTrainState)
    assert_trees_close(s2.params, s3.params, rtol=1e-5, atol=1e-6)
    assert_trees_close(s2.params, jax.tree.map(lambda x: x[0], s3.worker_params))
    # every environment's carry and episode-start flag after the last update
    assert_trees_close(s2.memory, jax.tree.map(lambda x: x[0], s3.memory))
    assert_trees_equal(s2.run.env_steps, s3.run.env_steps)
    for name in m2:
        np.testing.assert_allclose(m3[name], m2[name], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(m3["staleness"], 0.0)


# -------------------------------------------------------------- the contract, with carries


@pytest.mark.parametrize("algo", ["trpo", "a3c"])
def test_chunked_and_resumed_runs_equal_one_train_call_bitwise(algo, tmp_path):
    module = purerl.get_algorithm(algo)
    config = module.Config(**TINY[algo])
    agent = module.make_agent(config)
    assert agent.initial_carry is not None and agent.num_updates == 4
    keys, hparams = jax.random.split(jax.random.key(0), 2), HPARAMS[algo]
    state, metrics = purerl.jit(jax.vmap(module.make_train(config)))(keys, hparams)
    assert np.isfinite(metrics["eval_return"][:, 1::2]).all()
    # the seeds' hyperparameters were used: they train differently
    leaves = jax.tree.leaves(state.params)
    assert any(not np.allclose(x[0], x[1]) for x in leaves)

    chunks = list(loop.run_chunked(agent, keys, hparams, chunk=2))
    assert [done for done, _, _ in chunks] == [2, 4]
    assert_trees_equal({k: np.concatenate([c[2][k] for c in chunks], axis=1) for k in metrics},
                       metrics)
    assert_trees_equal(chunks[-1][1], state)

    # a checkpoint after 2 updates (the carries are part of the state), restored and resumed
    done, half, half_metrics = chunks[0]
    checkpoint.save(tmp_path, config, half, half_metrics)
    run = checkpoint.restore(tmp_path)
    assert type(run.state) is type(half)
    assert_trees_equal(run.state, half)
    resumed = list(loop.run_chunked(run.agent, None, chunk=2, state=run.state))
    assert [d for d, _, _ in resumed] == [4]
    assert_trees_equal(resumed[-1][1], state)
    assert_trees_equal(resumed[-1][2], chunks[-1][2])


def test_memory_configs_and_data_parallel_refusal():
    assert {"trpo", "a3c"} <= set(purerl.config.MEMORY_ALGOS)
    with pytest.raises(ValueError, match="vf_minibatches.*num_envs"):
        trpo.Config(memory="gru", num_envs=4, num_steps=8, vf_minibatches=8)
    trpo.Config(memory="none", num_envs=4, num_steps=8, vf_minibatches=8)  # feed-forward: fine

    with pytest.raises(ValueError, match="trpo with memory='gru'.*data parallel") as err:
        trpo.make_agent(trpo.Config(memory="gru"), data_parallel=DataParallel("data", 4))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_recurrent_trpo_solves_memory_chain(purerl_jit_level0):
    """MemoryChain-3: the context bit of the first observation must be answered 3 steps later
    (+1 right, -1 wrong; a feed-forward policy scores ~0). 10 updates of 256 steps; all of 16
    seeds tried reach 1.0 (at level 1; compiled at level 0 here: compiling is most of it)."""
    config = dict(env="MemoryChain-3-bsuite", num_envs=16, num_steps=16,
                  total_timesteps=16 * 16 * 10, memory="gru", memory_size=16, hidden_sizes=(32,),
                  vf_minibatches=4, vf_epochs=5, vf_lr=3e-3, max_kl=0.02, gae_lambda=0.95,
                  eval_every=0, eval_episodes=16)
    evals = final_seed_evals(trpo, config, seeds=4)
    assert (evals >= 0.8).all(), evals
