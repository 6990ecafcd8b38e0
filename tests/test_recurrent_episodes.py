"""Recurrent policies in the whole-episode trainers (REINFORCE and batch actor-critic with
``memory="gru"`` / ``"lstm"``): the episode collection with a carry against each episode run
alone, the episode replay (values and backpropagation through time over the longest episode)
against the full scan and against a Python loop of flax's GRUCell, the trainer contract
(vmap, traced hyperparameters, chunked runs, checkpoints), the online mode's refusal, and
learning MemoryChain (where a feed-forward policy cannot: test_recurrent.py)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, assert_trees_equal, final_seed_evals

import purerl
from purerl import actor_critic, checkpoint, envs, loop, recurrent, reinforce, rollout

# a tiny recurrent run of each trainer: CartPole's random episodes have different lengths in
# every column and seed (so the replay's loops stop at different steps under vmap)
TINY = {
    "reinforce": dict(env="CartPole-v1", memory="gru", memory_size=6, hidden_sizes=(8,),
                      num_episodes=3, total_timesteps=3 * 500 * 6, vf_iters=2, eval_every=3,
                      eval_episodes=3),
    "actor_critic": dict(env="MemoryChain-3-bsuite", memory="lstm", memory_size=6,
                         hidden_sizes=(8,), num_envs=3, total_timesteps=3 * 1000 * 6,
                         vf_iters=2, eval_every=3, eval_episodes=3),
}


def _net(cell="gru", env="CartPole-v1"):
    spec = envs.make(env).spec
    net = recurrent.RecurrentActorCritic(spec, (8,), "tanh", cell, 6)
    return spec, net, recurrent.init_params(net, jax.random.key(0), spec)


# ----------------------------------------------------------------------------- collection


def test_collect_episodes_recurrent_equals_each_episode_run_alone():
    env = envs.make("CartPole-v1")
    spec, net, params = _net()
    N, H = 5, 6
    key = jax.random.key(3)

    # 1. a policy that ignores its carry collects exactly what collect_episodes does
    w = jax.random.normal(jax.random.key(1), (4, 2))

    def feed_forward(obs, k):
        u = jax.random.categorical(k, obs @ w)
        return u, u

    ff_traj, ff_mask = rollout.collect_episodes(env, feed_forward, key, N)
    traj, mask = rollout.collect_episodes_recurrent(
        env, lambda c, obs, start, k: (c, *feed_forward(obs, k)), key, N,
        net.initial_carry(N))
    assert_trees_equal((traj, mask), (ff_traj, ff_mask))

    # 2. the recurrent policy: store the core's output h with the sampled action
    def policy(carry, obs, start, k):
        carry, dist, _ = recurrent.one_step(net, params, carry, obs, start)
        u = dist.sample(k)
        h = recurrent.carry_output(net.cell, carry)
        return carry, jnp.concatenate([h, u[:, None].astype(h.dtype)], -1), u

    traj, mask = jax.jit(lambda k: rollout.collect_episodes_recurrent(
        env, policy, k, N, net.initial_carry(N)))(key)
    traj, mask = jax.tree.map(np.asarray, (traj, mask))
    lengths = mask.sum(0)
    assert len(set(lengths.tolist())) > 1  # episodes of different lengths
    ran = int(lengths.max())  # steps the loop ran
    step = jax.jit(lambda c, o, s: recurrent.one_step(net, params, c, o, s)[0])
    for b in range(N):
        n = int(lengths[b])
        # the mask is the first episode: a prefix that ends where it is done
        np.testing.assert_array_equal(mask[:, b], np.arange(len(mask)) < n)
        assert traj.terminated[n - 1, b] or traj.truncated[n - 1, b]
        assert not (traj.terminated[:n - 1, b] | traj.truncated[:n - 1, b]).any()
        # the episode alone, from a fresh carry, one step at a time (in row b of a batch of N
        # rows, all others zero: the same matmul shapes as the collection's, so the same bits)
        carry = net.initial_carry(N)
        for t in range(min(n + 2, ran)):  # on into the padding: the carry is not reset there
            alone = jnp.zeros_like(traj.obs[t]).at[b].set(traj.obs[t, b])
            carry = step(carry, alone, jnp.full((N,), t == 0))
            np.testing.assert_array_equal(traj.action[t, b, :H], np.asarray(carry[b]))
        # the actions reached the environment: the next observations follow from them
        np.testing.assert_array_equal(traj.obs[1:n, b], traj.next_obs[:n - 1, b])
    # the padding after the loop stopped is the buffer's zeros
    assert not traj.obs[ran:].any() and not mask[ran:].any()


# ----------------------------------------------------------------------------- replay


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_replay_equals_the_full_scan_under_vmap_with_different_lengths(cell):
    """replay_episodes (the first ``length`` steps, while loops with their own backward pass
    and vmap rule) against ``net.apply`` over the whole buffer (lax.scan, autodiff), values and
    gradients, with each seed's episodes of a different length."""
    spec, net, params = _net(cell)
    T, N = 9, 3
    k = jax.random.split(jax.random.key(1), 5)
    obs = jax.random.normal(k[0], (2, T, N, 4))
    next_obs = jax.random.normal(k[1], (2, T, N, 4))
    action = jax.random.randint(k[2], (2, T, N), 0, 2)
    w = jax.random.normal(k[3], (T, N))
    lengths = np.array([[6, 2, 5], [3, 3, 1]])  # per seed, per episode
    masks = jnp.asarray(np.arange(T)[None, :, None] < lengths[:, None, :])
    start = rollout.episode_starts(masks[0])

    def full(p, obs, next_obs, action, mask):
        out = net.apply(p, net.initial_carry(N), obs, start, next_obs)
        y = (out.value * w + out.dist.log_prob(action) * w ** 2 + out.dist.entropy()
             + jnp.sin(out.next_value))
        return jnp.sum(jnp.where(mask, y, 0.0))

    def replayed(p, obs, next_obs, action, mask):
        out = reinforce.replay_episodes(net, p, obs, reinforce.longest_episode(mask), action,
                                        next_obs, reinforce.REPLAY_OUTPUTS)
        y = (out["value"] * w + out["log_prob"] * w ** 2 + out["entropy"]
             + jnp.sin(out["next_value"]))
        return jnp.sum(jnp.where(mask, y, 0.0))

    seeds = jax.tree.map(lambda x: jnp.stack([x, 0.8 * x]), params)
    args = (seeds, obs, next_obs, action, masks)
    ours = jax.jit(jax.vmap(jax.value_and_grad(replayed)))(*args)
    ref = jax.vmap(jax.value_and_grad(full))(*args)
    assert_trees_close(ours, ref, rtol=1e-5, atol=1e-6)
    # one seed alone (no vmap rule) gives the same
    one = jax.value_and_grad(replayed)(*jax.tree.map(lambda x: x[1], args))
    assert_trees_close(one, jax.tree.map(lambda x: x[1], ours), rtol=1e-6, atol=1e-7)


def test_recurrent_reinforce_loss_and_gradient_equal_a_python_loop():
    """The recurrent REINFORCE loss on three episodes of different lengths against flax's
    GRUCell run step by step over each episode alone, with the loss written out; the padding
    after each episode (here huge observations) changes nothing."""
    spec, net, params = _net("gru")
    T, N, H = 6, 3, 6
    lengths = [6, 2, 4]
    k = jax.random.split(jax.random.key(2), 3)
    mask = jnp.asarray(np.arange(T)[:, None] < np.array(lengths)[None, :])
    obs = jnp.where(mask[..., None], jax.random.normal(k[0], (T, N, 4)), 1e3)
    action = jax.random.randint(k[1], (T, N), 0, 2)
    weights = jax.random.normal(k[2], (T, N))
    ent_coef = 0.01

    def reference(params):
        p = params["params"]
        cell = nn.GRUCell(H)
        total = 0.0
        for b in range(N):
            h = jnp.zeros((1, H))
            for t in range(lengths[b]):
                x = jnp.tanh(obs[t, b:b + 1] @ p["encoder"]["MLP_0"]["Dense_0"]["kernel"]
                             + p["encoder"]["MLP_0"]["Dense_0"]["bias"])
                h, _ = cell.apply({"params": p["core"]}, h, x)
                ph = p["policy_head"]
                y = jnp.tanh(h @ ph["Dense_0"]["kernel"] + ph["Dense_0"]["bias"])
                logp = jax.nn.log_softmax((y @ ph["Dense_1"]["kernel"] + ph["Dense_1"]["bias"])[0])
                entropy = -jnp.sum(jnp.exp(logp) * logp)
                total += logp[action[t, b]] * weights[t, b] + ent_coef * entropy
        return -total / N

    def ours(params, obs=obs):
        return reinforce.recurrent_reinforce_loss(net, params, obs, action, weights, mask,
                                                  ent_coef)[0]

    np.testing.assert_allclose(ours(params), reference(params), rtol=1e-5, atol=1e-6)
    grads = jax.grad(ours)(params)
    assert_trees_close(grads, jax.grad(reference)(params), rtol=1e-4, atol=1e-6)
    assert not np.any(grads["params"]["value_head"]["Dense_0"]["kernel"])
    other = jnp.where(mask[..., None], obs, -7.0)  # other padding
    assert_trees_equal((ours(params, other), jax.grad(ours)(params, other)),
                       (ours(params), grads))


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("algo", ["reinforce", "actor_critic"])
def test_recurrent_episode_contract(algo, tmp_path):
    """vmap over seeds with a traced learning rate per seed, run_chunked equal to train
    bitwise, a checkpoint restored and continued equal to the uninterrupted run, and the
    agent's act / value / evaluate with a carry."""
    module = purerl.get_algorithm(algo)
    config = module.Config.coerce(TINY[algo])
    agent = module.make_agent(config)
    assert agent.initial_carry is not None and agent.num_updates == 6
    keys = jax.random.split(jax.random.key(0), 2)
    lrs = np.array([1e-3, 1e-2], np.float32)
    hparams = {"lr": jnp.asarray(lrs)}
    train = module.make_train(config)
    state, metrics = purerl.jit(jax.vmap(train))(keys, hparams)
    assert type(state) is module.TrainState and state.run.env_state is None
    for name in ("episode_return", "eval_return", "policy_loss", "value_loss", "entropy"):
        assert np.isfinite(metrics[name][:, -1]).all(), name
    assert (np.asarray(metrics["episode_count"]) == TINY[algo].get(
        "num_episodes", TINY[algo].get("num_envs"))).all()

    # the traced learning rates: Adam moves each policy parameter by at most about lr per
    # update (6 updates), and the larger rate moves some by more than the smaller can
    init = loop.vmapped_init(agent, True)(keys, hparams)
    moved = np.array([max(float(np.abs(a[i] - b[i]).max()) for a, b in zip(
        jax.tree.leaves(state.params.actor), jax.tree.leaves(init.params.actor)))
        for i in range(2)])
    assert (moved <= 6 * lrs * 1.01).all() and moved[1] > 6 * lrs[0] * 1.01, moved

    # chunks of 2 updates, with a checkpoint after the first 4 restored and continued
    chunks = list(loop.run_chunked(agent, keys, hparams, chunk=2))
    assert [c[0] for c in chunks] == [2, 4, 6]
    assert_trees_equal(chunks[-1][1], state)
    assert_trees_equal({k: np.concatenate([c[2][k] for c in chunks], axis=1)
                        for k in metrics}, metrics)
    half = {k: np.concatenate([c[2][k] for c in chunks[:2]], axis=1) for k in metrics}
    checkpoint.save(tmp_path, config, chunks[1][1], half)
    restored = checkpoint.restore(tmp_path)
    resumed = list(loop.run_chunked(restored.agent, None, chunk=2, state=restored.state))
    assert [c[0] for c in resumed] == [6]
    assert_trees_equal(resumed[-1][1], state)
    assert_trees_equal(resumed[-1][2], {k: v[:, 4:] for k, v in metrics.items()})

    # act with a carry, V of first observations, evaluate reproduces the final eval_return
    seed1 = jax.tree.map(lambda x: x[1], state)
    obs = envs.make(config.env).reset(jax.random.key(5), 4).obs
    actions, carry = agent.act(seed1, obs, agent.initial_carry(4))
    assert actions.shape == (4,) and jax.tree.leaves(carry)[0].shape == (4, 6)
    assert agent.value(seed1, obs).shape == (4,)
    np.testing.assert_allclose(agent.evaluate(seed1), metrics["eval_return"][1, -1], rtol=1e-6)


def test_online_actor_critic_refuses_memory_in_one_line():
    with pytest.raises(ValueError, match="memory is supported by .*reinforce") as e:
        actor_critic.Config(mode="online", memory="gru")
    message = str(e.value)
    assert "\n" not in message and "mode='batch'" in message
    assert actor_critic.Config(mode="batch", memory="gru").memory == "gru"


# ----------------------------------------------------------------------------- learning

# MemoryChain-3: the context bit is shown at the start and asked for 3 steps later (+1 right,
# -1 wrong); each update's episodes last 4 steps, the time limit (the buffers) 1000
MEMORY_CHAIN = dict(env="MemoryChain-3-bsuite", memory_size=32, hidden_sizes=(32,),
                    eval_every=0, eval_episodes=64)
# 15 updates (an upper bound of 1000 steps per episode: the budget counts the buffers); the
# recurrent runs reached 1.0 on all 16 seeds of keys 0-3 (the feed-forward ones |mean| <= 0.34)
LEARNING = {
    "reinforce": dict(num_episodes=16, total_timesteps=15 * 16 * 1000),
    "actor_critic": dict(num_envs=16, vf_iters=10, total_timesteps=15 * 16 * 1000),
}


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["reinforce", "actor_critic"])
def test_memory_chain_is_learned_with_memory(algo):
    """The recurrent policy recalls the bit. A feed-forward policy sees the same observation at
    the question whatever the bit, so it scores 0 on average: the task's property, checked once
    with PPO (test_recurrent.py), not again here (each run is a program to compile)."""
    module = purerl.get_algorithm(algo)
    recalled = final_seed_evals(module, {**MEMORY_CHAIN, **LEARNING[algo], "memory": "gru"})
    assert recalled.mean() >= 0.8 and recalled.min() >= 0.5, recalled
