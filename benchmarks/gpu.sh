#!/usr/bin/env bash
# Side-by-side speed on one accelerator (issue 14): purerl beside PureJaxRL and rejax, both on
# the same GPU in one invocation, through benchmarks/peers.py (which appends the rows, with the
# device's name as the machine, to benchmarks/RESULTS.md).
#
#   bash benchmarks/gpu.sh                   # the full set (about an hour on one GPU)
#   SMOKE=1 bash benchmarks/gpu.sh           # tiny settings, no rows recorded: checks the commands
#
# Runs
#   * PPO CartPole-v1, PureJaxRL's hyperparameters, 1, 64, 512, 2048 seeds x 500k env steps;
#   * SAC Pendulum-v1 (rejax's tuned config, 10k steps) and DQN CartPole-v1 (rejax's tuned
#     config, 100k steps) at 64 seeds;
#   * MinAtar: does the conv torso earn its place on a GPU? benchmarks/torso.py for the PPO
#     preset of each game (MLP vs conv at equal env steps and at equal wall time), 8 seeds x
#     MINATAR_STEPS (default the presets' 1M).
# Both venvs need a CUDA jaxlib: purerl's (pip install 'jax[cuda12]==' its jax version) and the peer
# venv that ../shared/peers/setup.sh builds ("$PEER_PY" -m pip install 'jax[cuda12]==' the
# version it has). The script stops unless both report a GPU backend (SMOKE=1 skips the check).
# Environment: REPEATS (default 3), PPO_SEEDS (default 1,64,512,2048), OFF_SEEDS (default 64),
# PPO_STEPS / SAC_STEPS / DQN_STEPS (default: the pairing's), PEERS_SETUP (path of setup.sh).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/.."
# shellcheck disable=SC1090
source "${PEERS_SETUP:-$HERE/../../shared/peers/setup.sh}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's purerl, and the peer stubs

SMOKE=${SMOKE:-0}
REPEATS=${REPEATS:-3}
PPO_SEEDS=${PPO_SEEDS:-1,64,512,2048}
OFF_SEEDS=${OFF_SEEDS:-64}
EXTRA=()
if [ "$SMOKE" = 1 ]; then
  REPEATS=1 PPO_SEEDS=1,2 OFF_SEEDS=2
  PPO_STEPS=${PPO_STEPS:-2048} SAC_STEPS=${SAC_STEPS:-600} DQN_STEPS=${DQN_STEPS:-6000}
  MINATAR_STEPS=${MINATAR_STEPS:-65536} MINATAR_SEEDS=${MINATAR_SEEDS:-2}
  EXTRA=(--no-record)
else
  for py in python "$PEER_PY"; do
    backend=$("$py" -c 'import jax; print(jax.default_backend())')
    if [ "$backend" != gpu ]; then
      echo "gpu.sh: $py runs JAX on '$backend', not a GPU; install a CUDA jaxlib (see the header)" >&2
      exit 1
    fi
  done
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

steps() { if [ -n "${1:-}" ]; then echo --steps "$1"; fi; }
# shellcheck disable=SC2046
python benchmarks/peers.py ppo-purejaxrl --seeds "$PPO_SEEDS" --repeats "$REPEATS" \
  $(steps "${PPO_STEPS:-}") "${EXTRA[@]}"
# shellcheck disable=SC2046
python benchmarks/peers.py sac-rejax --seeds "$OFF_SEEDS" --repeats "$REPEATS" \
  $(steps "${SAC_STEPS:-}") "${EXTRA[@]}"
# shellcheck disable=SC2046
python benchmarks/peers.py dqn-rejax --seeds "$OFF_SEEDS" --repeats "$REPEATS" \
  $(steps "${DQN_STEPS:-}") "${EXTRA[@]}"
for game in Breakout SpaceInvaders Asterix Freeway; do
  # shellcheck disable=SC2046
  python benchmarks/torso.py ppo "$game-MinAtar" --seeds "${MINATAR_SEEDS:-8}" \
    $(steps "${MINATAR_STEPS:-}") "${EXTRA[@]}"
done
