"""Where recurrent PPO's time goes: the pieces of one update timed separately, on PureJaxRL's
``ppo_rnn.py`` CartPole config (benchmarks/peers.py's ``ppo-rnn-purejaxrl`` pairing), N vmapped
seeds, and the levers tried on each.

    python benchmarks/profile_ppo_rnn.py [--seeds 8] [--iters 20] [--levers fused,flax]
        [--repeats 2] [--memory gru]

Each piece runs ``--iters`` times inside one compiled ``lax.scan`` under ``vmap`` over seeds;
the time per iteration is reported (one JSON line per piece and lever):

* ``rollout``: ``rollout.collect_recurrent``, ``num_steps`` sequential steps of the encoder, the
  cell, the policy head and the environment;
* ``batch``: ``ppo.make_sequences``: one pass of the cell over the whole rollout (old policy and
  values) plus the one-step bootstrap values, and GAE;
* ``learn``: ``ppo.learn`` with the sequence loss: ``update_epochs x num_minibatches`` forward and
  backward passes through ``num_steps`` cell steps (backpropagation through time);
* ``update``: one whole update.

Levers (``--levers``, each measured in the same process):

* ``fused``: purerl's core (:mod:`purerl.recurrent`): input projections of every step in one
  matmul before the loop, the gates' hidden projections as one matmul per step, and the
  hand-written backward pass (``recurrent.scan_cell``);
* ``autodiff``: the same forward pass, differentiated by autodiff of the scan
  (``fused_backward=False``);
* ``flax``: flax's own ``nn.GRUCell`` / ``nn.OptimizedLSTMCell`` applied at every step inside
  the scan with the same parameters (what PureJaxRL's ``ScannedRNN`` does), autodiff;
* ``unroll4``: the fused core with the time loop unrolled 4 steps per iteration
  (``lax.scan``'s ``unroll``);
* ``ynn``: the fused core compiled with XLA:CPU's YNNPACK fusions (the feed-forward options;
  every other lever compiles as purerl compiles a recurrent program, without them:
  :func:`purerl.loop.compiler_options`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402

import purerl  # noqa: E402
from purerl import ppo, recurrent, rollout  # noqa: E402
from peers import PAIRS  # noqa: E402


def timed(fn, state, iters: int, repeats: int = 2, ynn: bool = False) -> float:
    """Seconds per iteration of ``fn`` scanned ``iters`` times (best of ``repeats``), compiled
    as purerl compiles a recurrent program (``ynn``: with XLA's YNNPACK fusions)."""
    def loop(s):
        return jax.lax.scan(lambda s, _: (fn(s), None), s, None, iters)[0]

    options = purerl.compiler_options(recurrent=not ynn)
    compiled = jax.jit(jax.vmap(loop), compiler_options=options or None).lower(state).compile()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(state))
        best = min(best, time.perf_counter() - t0)
    return best / iters


class _FlaxCellCore(recurrent.Core):
    """:class:`purerl.recurrent.Core` computed as flax's cell step by step (same parameters)."""

    def __call__(self, carry, x, start):
        ref = {"gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell}[self.cell](self.features)
        self.weights(x.shape[-1])  # creates the parameters (init)
        params = {"params": self.variables["params"]}

        def step(carry, inputs):
            x_t, start_t = inputs
            carry, _ = ref.apply(params, recurrent.reset_carry(carry, start_t), x_t)
            return carry, carry

        carries = jax.lax.scan(step, carry, (x, start))[1]
        return carries, recurrent.carry_output(self.cell, carries)


LEVERS = {"fused": {}, "autodiff": {"fused_backward": False}, "unroll4": {"unroll": 4},
          "flax": {}, "ynn": {}}


def profile(config: ppo.Config, seeds: int, iters: int, lever: str) -> dict[str, float]:
    make_network, core = recurrent.make_network, recurrent.Core
    recurrent.make_network = lambda *a, **k: dataclasses.replace(make_network(*a, **k),
                                                                 **LEVERS[lever])
    if lever == "flax":
        recurrent.Core = _FlaxCellCore
    try:
        agent = ppo.make_agent(config)
        spec = purerl.envs.make(config.env).spec
        net = recurrent.make_network(config, spec, "mlp")
    finally:
        recurrent.make_network, recurrent.Core = make_network, core
    states = jax.vmap(agent.init)(jax.random.split(jax.random.key(0), seeds))
    cfg = config

    def collect(state):
        def step(carry, obs, start):
            return recurrent.one_step(net, state.params, carry, obs, start)[:2]
        env_state, memory, _ = rollout.collect_recurrent(
            agent_env, rollout.recurrent_policy(step), state.run.key, state.run.env_state,
            state.memory, cfg.num_steps)
        return state.replace(run=state.run.replace(env_state=env_state), memory=memory)

    agent_env = purerl.envs.make(config.env)
    seq0 = jax.vmap(lambda s: rollout.collect_recurrent(
        agent_env, rollout.recurrent_policy(
            lambda c, o, st: recurrent.one_step(net, s.params, c, o, st)[:2]),
        s.run.key, s.run.env_state, s.memory, cfg.num_steps)[2])(states)

    def batch(carry):
        state, seq = carry
        b = ppo.make_sequences(net, cfg, state.params, state.run.obs_norm, seq)
        traj = seq.traj._replace(obs=seq.traj.obs + 1e-6 * b.batch.advantage.T[..., None])
        return state, seq._replace(traj=traj)

    batch0 = jax.vmap(lambda s, q: ppo.make_sequences(net, cfg, s.params, s.run.obs_norm, q))(
        states, seq0)

    def learn(carry):
        state, b = carry

        def policy(params, seqs):
            tm, start = seqs.time_major()
            return tm.old_dist, net.apply(params, seqs.carry, tm.obs, start).dist

        new, _ = ppo.learn(net, cfg, state, b, state.run.key, loss=ppo.sequence_loss_fn,
                           policy=policy)
        return new, b

    ynn = lever == "ynn"
    return {
        "rollout": timed(collect, states, iters, ynn=ynn),
        "batch": timed(batch, (states, seq0), iters, ynn=ynn),
        "learn": timed(learn, (states, batch0), iters, ynn=ynn),
        "update": timed(lambda s: agent.update(s)[0], states, iters, ynn=ynn),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--levers", default="fused,ynn,autodiff,flax,unroll4")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the levers")
    parser.add_argument("--memory", default="gru", choices=recurrent.CELLS)
    args = parser.parse_args()
    config = ppo.Config.from_dict({**PAIRS["ppo-rnn-purejaxrl"]["config"],
                                   "memory": args.memory, "total_timesteps": 500_000})
    for _ in range(args.repeats):
        for lever in args.levers.split(","):
            times = profile(config, args.seeds, args.iters, lever)
            print(json.dumps({"memory": args.memory, "lever": lever, "seeds": args.seeds,
                              "machine": f"{jax.devices()[0].platform}",
                              **{k: round(v * 1e3, 3) for k, v in times.items()},
                              "unit": "ms per update"}), flush=True)


if __name__ == "__main__":
    main()
