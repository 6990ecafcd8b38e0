"""``purerl train/resume --devices N [--data-parallel]``: checkpoints of a sharded or a
data-parallel run restore onto the devices and continue to the uninterrupted run's metrics, the
placement is kept in config.json for ``resume``, and the summary says how many devices ran.

Runs in a subprocess with two fake CPU devices (the XLA flag must be set before JAX starts)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from helpers import subprocess_xla_flags

SCRIPT = textwrap.dedent('''
    import json, shutil, sys
    from pathlib import Path
    import numpy as np
    from purerl.cli import main

    out = Path(sys.argv[1])
    small = ["--no-preset", "--seeds", "2", "--total-timesteps", "1536", "--set", "num_envs=4",
             "--set", "num_steps=32", "--set", "hidden_sizes=8", "--set", "eval_every=3",
             "--set", "eval_episodes=2", "--chunk", "3", "--checkpoint-every", "6",
             "--devices", "2", "--out", str(out)]
    for kind, extra in (("sharded", []), ("data_parallel", ["--data-parallel"])):
        assert main(["train", "ppo", *small, *extra, "--name", kind + "whole"]) == 0
        run = out / (kind + "resumed")
        shutil.copytree(out / (kind + "whole"), run)
        saved = json.loads((run / "config.json").read_text())
        assert saved["devices"] == "2" and saved["data_parallel"] == bool(extra), saved
        shutil.rmtree(run / "checkpoints" / "12")  # as if killed after update 6's checkpoint
        assert main(["resume", str(run)]) == 0
        whole = json.loads((out / (kind + "whole") / "metrics.json").read_text())
        resumed = json.loads((run / "metrics.json").read_text())
        assert whole == resumed, kind
        summary = (run / "summary.txt").read_text()
        assert "2 cpu" in summary and ("data parallel" in summary) == bool(extra), summary
    # a sweep's configurations x seeds shard like seeds: the same results as on one device
    grid = ["--grid", "lr=1e-3,1e30,3e-3"]
    assert main(["sweep", "ppo", *small, *grid, "--name", "sweep2"]) == 0
    one_device = small[:small.index("--devices")] + small[small.index("--devices") + 2:]
    assert main(["sweep", "ppo", *one_device, *grid, "--name", "sweep1"]) == 0
    sharded, single = (json.loads((out / n / "metrics.json").read_text())
                       for n in ("sweep2", "sweep1"))
    for name in ("eval_return", "value_loss"):
        a, b = (np.array(m[name], dtype=float)[[0, 2]] for m in (sharded, single))
        assert np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True), name
    summary = (out / "sweep2" / "summary.txt").read_text()
    assert "2 cpu, seeds sharded" in summary and "diverged" in summary, summary
    print("OK")
''')


def test_sharded_and_data_parallel_runs_resume_to_the_uninterrupted_metrics(tmp_path):
    # level 1 (not 0): at level 0 the resumed data-parallel run left the uninterrupted one's
    # metrics -- the resumed chunks are not the same program there
    env = {**os.environ, "XLA_FLAGS": subprocess_xla_flags(2), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
