"""Side-by-side speed of purerl and a peer on the same hyperparameters, same machine, one
invocation: the only kind of speed claim purerl makes.

    source ../shared/peers/setup.sh        # once: PEER_PY (rejax 0.1.3, gymnax 0.0.9), PEERS_DIR
    python benchmarks/peers.py ppo-purejaxrl [--seeds 8 | --seeds 1,64,512] [--repeats 3] \
        [--no-record]
    python benchmarks/peers.py sac-rejax dqn-rejax td3-rejax
    python benchmarks/peers.py dqn-rejax-minatar --env Breakout-MinAtar --seeds 2 [--preset]
    python benchmarks/peers.py ppo-purejaxrl-minatar --env SpaceInvaders-MinAtar --seeds 4 \
        --steps 2000000 [--preset]     # --preset: purerl's preset vs the peer's example config

Each repeat runs purerl, then the peer, each in a fresh process (``--worker`` below for purerl,
``../shared/peers/*_run.py`` for the peer), alternating so that drifts of the machine's speed
hit both sides alike. Timed: the run after compilation (``block_until_ready``), N vmapped seeds
in one compiled program on both sides, evaluation as light on both sides (PureJaxRL and the
rejax runner evaluate at the end only; purerl runs with ``eval_every=0``: once, after the last
update). Prints min / median run and compile times of both, the speed-up peer / purerl (of the
medians) and the final returns -- for PPO also purerl's mean return of the training episodes of
its last 10 updates, which is what PureJaxRL reports -- and appends one row per pairing to
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = Path(os.environ.get("PEERS_DIR") or HERE.parent.parent / "shared" / "peers")

# purerl's fields for each peer config, field by field (rejax: polyak p is tau = 1 - p,
# num_epochs is gradient steps per iteration of num_envs env steps, fill_buffer is
# learning_starts; rejax's MLPs are 64x64; rejax's DQN moves its target once per iteration,
# after its num_epochs gradient steps, so target_update_every = num_gradient_steps)
PAIRS: dict[str, dict] = {
    "ppo-purejaxrl": dict(
        algo="ppo", peer=["purejaxrl_run.py", "{peers}/purejaxrl"], steps=500_000,
        peer_final="training",
        config=dict(env="CartPole-v1", num_envs=4, num_steps=128, update_epochs=4,
                    num_minibatches=4, lr=2.5e-4, anneal_lr=True, gamma=0.99, gae_lambda=0.95,
                    clip_eps=0.2, clip_value=True, ent_coef=0.01, vf_coef=0.5,
                    max_grad_norm=0.5, activation="tanh", hidden_sizes=(64, 64))),
    # PureJaxRL's recurrent PPO (ppo_rnn.py) on its own CartPole config: Dense 128 (relu) ->
    # GRU 128 -> actor and critic heads of one 128-unit layer; 4 envs x 128 steps, 4 epochs x 4
    # minibatches of whole sequences (one environment each); run through purejaxrl_gru_run.py, which
    # initialises flax's GRUCell without the LAPACK QR that can hang the peer's process
    "ppo-rnn-purejaxrl": dict(
        algo="ppo", peer=["{here}/purejaxrl_gru_run.py", "{peers}/purejaxrl", "--script",
                          "ppo_rnn"],
        steps=500_000, peer_final="training",
        config=dict(env="CartPole-v1", memory="gru", memory_size=128, hidden_sizes=(128,),
                    activation="relu", num_envs=4, num_steps=128, update_epochs=4,
                    num_minibatches=4, lr=2.5e-4, anneal_lr=True, gamma=0.99, gae_lambda=0.95,
                    clip_eps=0.2, clip_value=True, ent_coef=0.01, vf_coef=0.5,
                    max_grad_norm=0.5)),
    # PureJaxRL's MinAtar example (its walkthrough notebook): an MLP 64x64 (relu) on the
    # flattened observation, lr 5e-3 annealed, 64 envs x 128 steps, 4 epochs x 8 minibatches;
    # --env picks the game
    "ppo-purejaxrl-minatar": dict(
        algo="ppo", peer=["purejaxrl_run.py", "{peers}/purejaxrl", "--env", "{env}", "--set",
                          "LR=5e-3", "--set", "NUM_ENVS=64", "--set", "NUM_STEPS=128", "--set",
                          "NUM_MINIBATCHES=8", "--set", "ACTIVATION=relu"],
        steps=1_000_000, peer_final="training",
        config=dict(env="Breakout-MinAtar", num_envs=64, num_steps=128, update_epochs=4,
                    num_minibatches=8, lr=5e-3, anneal_lr=True, gamma=0.99, gae_lambda=0.95,
                    clip_eps=0.2, clip_value=True, ent_coef=0.01, vf_coef=0.5,
                    max_grad_norm=0.5, activation="relu", hidden_sizes=(64, 64),
                    torso="mlp")),
    "sac-rejax": dict(
        algo="sac", peer=["rejax_run.py", "{peers}/rejax-configs/pendulum.yaml", "sac"],
        steps=10_000,
        config=dict(env="Pendulum-v1", num_envs=1, buffer_size=10_000, learning_starts=256,
                    batch_size=256, actor_lr=0.01, critic_lr=0.01, alpha_lr=0.01,
                    num_gradient_steps=1, gamma=0.99, tau=0.02, activation="swish",
                    hidden_sizes=(64, 64), normalize_obs=True)),
    "td3-rejax": dict(
        algo="td3", peer=["rejax_run.py", "{peers}/rejax-configs/pendulum.yaml", "td3"],
        steps=10_000,
        config=dict(env="Pendulum-v1", num_envs=1, buffer_size=10_000, learning_starts=1000,
                    batch_size=100, actor_lr=1e-3, critic_lr=1e-3, num_gradient_steps=1,
                    gamma=0.99, tau=0.05, exploration_noise=0.3, policy_noise=0.2,
                    noise_clip=0.5, policy_delay=2, activation="swish", hidden_sizes=(64, 64),
                    normalize_obs=True)),
    "dqn-rejax": dict(
        algo="dqn", peer=["rejax_run.py", "{peers}/rejax-configs/cartpole.yaml", "dqn"],
        steps=100_000,
        config=dict(env="CartPole-v1", num_envs=10, buffer_size=50_000, learning_starts=5000,
                    batch_size=100, max_grad_norm=10.0, lr=1e-3, anneal_lr=False,
                    num_gradient_steps=5, tau=0.02, target_update_every=5, epsilon_start=1.0,
                    epsilon_end=0.05, exploration_fraction=0.5, gamma=0.99, double_dqn=True,
                    dueling=True, activation="swish", hidden_sizes=(64, 64),
                    normalize_obs=False)),
    # rejax's PQN config (CartPole's). Two differences that are not fields: rejax clips each
    # gradient element at max_grad_norm (optax.clip) where purerl clips the global norm, and
    # rejax treats time-outs as terminations (purerl bootstraps through them)
    "pqn-rejax": dict(
        algo="pqn", peer=["rejax_run.py", "{peers}/rejax-configs/cartpole.yaml", "pqn"],
        steps=524_288,
        config=dict(env="CartPole-v1", num_envs=16, num_steps=128, num_minibatches=16,
                    update_epochs=5, max_grad_norm=10.0, lr=3e-4, anneal_lr=False,
                    epsilon_start=1.0, epsilon_end=0.05, exploration_fraction=0.5, gamma=0.99,
                    q_lambda=0.9, layer_norm=True, activation="relu", hidden_sizes=(64, 64),
                    loss="mse", normalize_obs=False)),
    # rejax ships no MinAtar config: its one tuned DQN config (CartPole's, above) with --env
    # swapped in, which is what a rejax user starts from; its networks flatten the observation
    "dqn-rejax-minatar": dict(
        algo="dqn", peer=["rejax_run.py", "{config}", "dqn"], steps=1_000_000,
        peer_config=dict(env="{env}", agent="DuelingQNetwork", agent_kwargs=dict(
            activation="swish"), num_envs=10, buffer_size=50_000, fill_buffer=5_000,
            batch_size=100, max_grad_norm=10, learning_rate=0.001, num_epochs=5,
            total_timesteps=1_000_000, eval_freq=100_000, polyak=0.98, eps_start=1,
            eps_end=0.05, exploration_fraction=0.5, gamma=0.99, ddqn=True,
            normalize_observations=False),
        config=dict(env="Breakout-MinAtar", num_envs=10, buffer_size=50_000,
                    learning_starts=5000, batch_size=100, max_grad_norm=10.0, lr=1e-3,
                    anneal_lr=False, num_gradient_steps=5, tau=0.02, target_update_every=5,
                    epsilon_start=1.0, epsilon_end=0.05, exploration_fraction=0.5, gamma=0.99,
                    double_dqn=True, dueling=True, activation="swish", hidden_sizes=(64, 64),
                    torso="mlp", normalize_obs=False)),
}

HEADER = ("| date | machine | pairing | seeds | env steps / seed | purerl run s (min / median) "
          "| peer run s (min / median) | speed-up peer / purerl | purerl compile s | peer "
          "compile s | purerl final | peer final |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|\n")


def worker(algo: str, config: dict, seeds: int) -> dict:
    """purerl's side, in this (fresh) process: the same JSON line as the peers' runners."""
    import jax
    import numpy as np

    import purerl

    module = purerl.get_algorithm(algo)
    cfg = module.Config.from_dict({**config, "eval_every": 0})
    train = purerl.jit(jax.vmap(module.make_train(cfg)))
    keys = jax.random.split(jax.random.key(0), seeds)
    t0 = time.perf_counter()
    compiled = train.lower(keys).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, metrics = jax.block_until_ready(compiled(keys))
    run_s = time.perf_counter() - t0
    finals = np.asarray(metrics["eval_return"])[:, -1]
    # PureJaxRL's figure, computed the same way: the mean return of the training episodes that
    # ended in the last 10 updates (episode_return is NaN for an update where none ended)
    count = np.asarray(metrics["episode_count"])[:, -10:]
    total = np.nansum(np.asarray(metrics["episode_return"])[:, -10:] * count, axis=1)
    training = total / np.maximum(count.sum(axis=1), 1)
    return {"peer": "purerl", "algo": algo, "env": cfg.env, "seeds": seeds,
            "steps": cfg.total_timesteps, "compile_s": round(compile_s, 2),
            "run_s": round(run_s, 2), "final_return_mean": float(finals.mean()),
            "finals": [round(float(x), 1) for x in finals],
            "training_return_mean": float(training.mean())}


def _last_json(out: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON result in the output:\n{out[-2000:]}")


def run_purerl(pair: dict, seeds: int, steps: int, env: str | None = None,
               preset: bool = False) -> dict:
    """purerl's side: the pairing's config (the peer's hyperparameters), or with ``preset``
    purerl's own preset for the environment at the same budget."""
    config = {**pair["config"], "total_timesteps": steps}
    if env is not None:
        config["env"] = env
    if preset:
        from purerl import presets

        found = presets.lookup(pair["algo"], config["env"])
        if found is None:
            raise SystemExit(f"no {pair['algo']} preset for {config['env']}")
        config = {**found.overrides, "env": config["env"], "total_timesteps": steps}
    out = subprocess.run([sys.executable, __file__, "--worker", pair["algo"], json.dumps(config),
                          str(seeds)], capture_output=True, text=True, check=True).stdout
    return _last_json(out)


def run_peer(pair: dict, seeds: int, steps: int, env: str | None = None) -> dict:
    python = os.environ.get("PEER_PY")
    if not python:
        raise SystemExit("PEER_PY is not set: source ../shared/peers/setup.sh first")
    env = env or pair["config"]["env"]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        if "peer_config" in pair:  # JSON is YAML: the runner reads it as its config file
            body = {k: v.format(env=env) if isinstance(v, str) else v
                    for k, v in pair["peer_config"].items()}
            config.write_text(json.dumps({pair["peer"][2]: body}))
        script, *args = [a.format(peers=PEERS, env=env, config=config, here=HERE)
                         for a in pair["peer"]]
        out = subprocess.run([python, str(PEERS / script), *args, str(seeds), str(steps)],
                             capture_output=True, text=True, check=True).stdout
    return _last_json(out)


def _seed_counts(text: str) -> list[int]:
    """``--seeds``: one positive count or a comma-separated list of them."""
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of seeds or a list like "
                                         f"1,64,512, got {text!r}")
    return counts


def _machine() -> str:
    import platform

    import jax

    if jax.default_backend() != "cpu":  # the accelerator both sides ran on (benchmarks/gpu.sh)
        return f"{jax.devices()[0].device_kind} ({jax.default_backend()})"
    return f"CPU {os.cpu_count()} cores ({platform.machine()})"


def compare(name: str, seeds: int, repeats: int, steps: int | None, env: str | None = None,
            preset: bool = False) -> tuple[str, dict]:
    pair = PAIRS[name]
    steps = steps or pair["steps"]
    ours, theirs = [], []
    for i in range(repeats):
        ours.append(run_purerl(pair, seeds, steps, env, preset))
        # printed before the peer runs: a peer that hangs or fails does not lose purerl's side
        print(f"{name} repeat {i + 1}/{repeats}: purerl {json.dumps(ours[-1])}", file=sys.stderr,
              flush=True)
        theirs.append(run_peer(pair, seeds, steps, env))
        print(f"{name} repeat {i + 1}/{repeats}: purerl {ours[-1]['run_s']} s, peer "
              f"{theirs[-1]['run_s']} s", file=sys.stderr)

    def times(runs, key):
        xs = [r[key] for r in runs]
        return min(xs), statistics.median(xs)

    (o_min, o_med), (p_min, p_med) = times(ours, "run_s"), times(theirs, "run_s")
    o_c, p_c = times(ours, "compile_s")[1], times(theirs, "compile_s")[1]
    o_ret = f'{statistics.mean(r["final_return_mean"] for r in ours):.1f}'
    p_ret = statistics.mean(r["final_return_mean"] for r in theirs)
    if pair.get("peer_final") == "training":  # PureJaxRL reports training episodes only
        o_ret += f' (training {statistics.mean(r["training_return_mean"] for r in ours):.1f})'
    label = name + (f" {env}" if env else "") + (" (purerl: its preset)" if preset else "")
    row = (f"| {datetime.date.today()} | {_machine()} | {label} | {seeds} | {steps} | "
           f"{o_min:.2f} / {o_med:.2f} | {p_min:.2f} / {p_med:.2f} | **{p_med / o_med:.2f}x** | "
           f"{o_c:.1f} | {p_c:.1f} | {o_ret} | {p_ret:.1f} |")
    return row, {"purerl": ours, "peer": theirs}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        algo, config, seeds = argv[1], json.loads(argv[2]), int(argv[3])
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        print(json.dumps(worker(algo, config, seeds)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", choices=sorted(PAIRS))
    parser.add_argument("--seeds", default=[8], type=_seed_counts,
                        help="vmapped seeds, or a comma-separated list run one after another "
                             "(e.g. 1,64,512,2048)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, help="env steps per seed (default: the pairing's)")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--env", help="the environment (both sides; e.g. a MinAtar game for "
                                      "ppo-purejaxrl-minatar)")
    parser.add_argument("--preset", action="store_true",
                        help="purerl runs its own preset for the environment (same budget and "
                             "seeds) instead of the peer's hyperparameters: returns compared")
    args = parser.parse_args(argv)
    rows = []
    for name in args.pairs:
        for seeds in args.seeds:
            row, _ = compare(name, seeds, args.repeats, args.steps, args.env, args.preset)
            print(row, flush=True)
            rows.append(row)
    if not args.no_record:
        sys.path.insert(0, str(HERE))
        from results_md import add_rows

        add_rows("Side by side with a peer (benchmarks/peers.py)", HEADER, rows)


if __name__ == "__main__":
    main()
