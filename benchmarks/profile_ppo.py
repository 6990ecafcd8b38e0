"""Where PPO's time goes: the pieces of one update timed separately, on PureJaxRL's CartPole
hyperparameters (benchmarks/peers.py's ``ppo-purejaxrl`` pairing), N vmapped seeds.

    python benchmarks/profile_ppo.py [--seeds 8] [--iters 100] [--repeats 3]

Each piece runs ``--iters`` times inside one compiled ``lax.scan`` (so Python dispatch is not
timed) under ``vmap`` over seeds, and the time per iteration is reported, with XLA's cost
analysis (FLOPs, bytes accessed) of one iteration:

* ``act``: the actor's forward pass and sampling alone, on the rollout's observations;
* ``env``: the environment step alone (purerl.envs.step, with gymnax's auto-reset), random
  actions;
* ``rollout``: ``rollout.collect`` (act + env step, ``num_steps`` steps);
* ``batch``: ``ppo.make_batch`` (values, GAE, old log-probabilities on the whole batch);
* ``shuffle``: one epoch's minibatch permutation of the ``num_envs * num_steps`` batch, by
  ``purerl.optim.random_permutation`` (what ``learn`` uses) and by ``jax.random.permutation``;
* ``learn``: ``ppo.learn`` (``update_epochs`` x ``num_minibatches`` Adam steps);
* ``nets``: the networks alone inside ``learn``: the actor's and the critic's forward and
  backward pass on one minibatch, as many times as ``learn`` takes Adam steps (no loss, no
  clipping, no Adam: the floor of ``learn`` for these networks);
* ``update``: one whole ``update`` (all of the above plus bookkeeping).

Each piece's input is perturbed by its own previous output, so that XLA cannot hoist the work
out of the loop. Prints one JSON line per piece.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import purerl  # noqa: E402
from purerl import envs, optim, ppo, prng, rollout  # noqa: E402
from peers import PAIRS  # noqa: E402


def _cost(compiled) -> dict:
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return {"flops": cost.get("flops"), "bytes": cost.get("bytes accessed")}
    except Exception:  # noqa: BLE001 - cost analysis is best effort
        return {}


def time_piece(name: str, fn, carry, iters: int, repeats: int, seeds: int) -> dict:
    """fn(carry) -> carry, vmapped over seeds, scanned ``iters`` times in one program."""

    def many(carry):
        return jax.lax.scan(lambda c, _: (fn(c), None), carry, None, iters)[0]

    prog = purerl.jit(jax.vmap(many)).lower(carry).compile()
    one = purerl.jit(jax.vmap(fn)).lower(carry).compile()
    jax.block_until_ready(prog(carry))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(prog(carry))
        times.append(time.perf_counter() - t0)
    best = min(times) / iters
    return {"piece": name, "seeds": seeds, "ms_per_iter": round(best * 1e3, 3), **_cost(one)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pieces", default="act,env,rollout,batch,shuffle,learn,nets,update")
    args = p.parse_args(argv)

    pair = PAIRS["ppo-purejaxrl"]
    cfg = ppo.Config.from_dict({**pair["config"], "total_timesteps": pair["steps"],
                                "eval_every": 0})
    agent = ppo.make_agent(cfg)
    env = envs.make(cfg.env)
    spec = env.spec
    nets = ppo.make_nets(cfg, spec)  # the agent's networks (same modules, same parameters)
    # the trainer's own generator (purerl.prng), for the pieces that draw from these keys
    keys = prng.unrolled(jax.random.split(jax.random.key(0), args.seeds))
    state = jax.vmap(agent.init)(keys)
    pieces = args.pieces.split(",")
    T, E = cfg.num_steps, cfg.num_envs

    def policy_of(st):
        norm = st.run.obs_norm
        return rollout.stochastic_policy(lambda obs: nets.actor.apply(st.params.actor, norm(obs)))

    def do_rollout(st):
        key, k = jax.random.split(st.run.key)
        env_state, traj = rollout.collect(env, policy_of(st), k, st.run.env_state, T)
        return env_state, traj, key

    # a trajectory and a batch to feed the later pieces
    _, traj0, _ = jax.vmap(do_rollout)(state)
    batch0 = jax.vmap(lambda st, tr: ppo.make_batch(nets, cfg, st.params, st.run.obs_norm, tr))(
        state, traj0)

    results = []
    if "act" in pieces:
        def act(c):
            st, obs, key = c
            key, k = jax.random.split(key)
            u, a = jax.vmap(policy_of(st))(obs, jax.random.split(k, T))  # T batched steps
            return st, obs + 1e-30 * a[..., None].astype(obs.dtype), key
        results.append(time_piece(f"act (x{T} steps)", act, (state, traj0.obs, keys),
                                  args.iters, args.repeats, args.seeds))
    if "env" in pieces:
        def env_only(c):
            es, key = c

            def one(es, k):
                k1, k2 = jax.random.split(k)
                a = jax.random.randint(k1, (E,), 0, spec.num_actions)
                return env.step(k2, es, a)[0], None
            key, k = jax.random.split(key)
            return jax.lax.scan(one, es, jax.random.split(k, T))[0], key
        results.append(time_piece(f"env (x{T} steps)", env_only, (state.run.env_state, keys),
                                  args.iters, args.repeats, args.seeds))
    if "rollout" in pieces:
        def roll(st):
            env_state, _, key = do_rollout(st)
            return st.replace(run=st.run.replace(env_state=env_state, key=key))
        results.append(time_piece("rollout", roll, state, args.iters, args.repeats, args.seeds))
    if "batch" in pieces:
        def batch_piece(c):
            st, tr = c
            b = ppo.make_batch(nets, cfg, st.params, st.run.obs_norm, tr)
            return st, tr._replace(obs=tr.obs + 1e-30 * b.advantage.reshape(T, E, 1))
        results.append(time_piece("batch (values + GAE)", batch_piece, (state, traj0),
                                  args.iters, args.repeats, args.seeds))
    if "shuffle" in pieces:
        n = T * E
        for label, permute in (("optim.random_permutation", optim.random_permutation),
                               ("jax.random.permutation", jax.random.permutation)):
            def shuffle_piece(key, permute=permute):
                key, k = jax.random.split(key)
                return jax.random.fold_in(key, permute(k, n)[0])
            results.append(time_piece(f"shuffle {n} ({label})", shuffle_piece, keys,
                                      args.iters, args.repeats, args.seeds))
    if "learn" in pieces:
        # each seed learns on its own batch (fixed; the values do not matter for timing)
        def learn_piece(c):
            st, key, b = c
            key, k = jax.random.split(key)
            return ppo.learn(nets, cfg, st, b, k)[0], key, b
        results.append(time_piece("learn (epochs x minibatches)", learn_piece,
                                  (state, keys, batch0), args.iters, args.repeats, args.seeds))
    if "nets" in pieces:
        steps = cfg.update_epochs * cfg.num_minibatches
        rows = T * E // cfg.num_minibatches
        obs_mb = traj0.obs.reshape((args.seeds, -1) + spec.obs_shape)[:, :rows]

        def outputs(params, obs):
            dist = nets.actor.apply(params.actor, obs)
            return sum(jnp.sum(x) for x in jax.tree.leaves(dist)) + jnp.sum(
                nets.critic.apply(params.critic, obs))

        def nets_piece(c):
            def step(params, _):
                grads = jax.grad(outputs)(params, c[1])
                return jax.tree.map(lambda p, g: p + 1e-30 * g, params, grads), None
            return jax.lax.scan(step, c[0], None, steps)[0], c[1]
        results.append(time_piece(f"nets (forward + backward x{steps})", nets_piece,
                                  (state.params, obs_mb), args.iters, args.repeats, args.seeds))
    if "update" in pieces:
        results.append(time_piece("update (whole)", lambda st: agent.update(st)[0], state,
                                  args.iters, args.repeats, args.seeds))
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
