"""Train presets for N seeds and record what they reach.

    python benchmarks/suite.py --family "classic control" [--seeds 8]
    python benchmarks/suite.py --preset ppo/Acrobot-v1 --preset dqn/Acrobot-v1
    python benchmarks/suite.py --report-only          # rebuild tables and figures

Each preset runs as one ``purerl.jit(jax.vmap(train))`` call over ``--seeds`` seeds (wall time
includes compilation). The final deterministic evaluation per seed becomes the preset's record
in ``purerl/presets.json`` (with the full config, so a later change of the preset marks the
record stale), its curve is kept in ``benchmarks/curves/`` and then, from every recorded
preset, the script rewrites the per-family tables between the markers in
``benchmarks/RESULTS.md`` (and a summary between the same markers in ``docs/presets.md``) and one
learning-curve figure per environment in
``benchmarks/figures/`` (mean ± std over seeds of the deterministic evaluation).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import time
from pathlib import Path

import jax
import numpy as np
from throughput import machine

import purerl
from purerl import presets, stats

HERE = Path(__file__).parent
CURVES = HERE / "curves"
FIGURES = HERE / "figures"
RESULTS = HERE / "RESULTS.md"
RANDOM = HERE / "random_returns.json"
PRESETS_PAGE = HERE.parent / "docs" / "presets.md"
BEGIN, END = "<!-- presets:begin -->", "<!-- presets:end -->"


def curve_path(preset: presets.Preset) -> Path:
    return CURVES / f"{preset.algo}__{preset.env.replace('/', '_')}.npz"


def measure(preset: presets.Preset, seeds: int, command: str) -> presets.Measured:
    config = preset.config()
    train = purerl.get_algorithm(preset.algo).make_train(config)
    keys = jax.random.split(jax.random.key(0), seeds)
    start = time.perf_counter()
    _, metrics = jax.block_until_ready(purerl.jit(jax.vmap(train))(keys))
    wall_s = time.perf_counter() - start
    evals = np.asarray(metrics["eval_return"], np.float64)
    steps = np.asarray(metrics["env_steps"])
    evaluated = ~np.isnan(evals).all(axis=0)
    CURVES.mkdir(exist_ok=True)
    np.savez_compressed(curve_path(preset), env_steps=steps.mean(axis=0)[evaluated],
                        eval_return=evals[:, evaluated])
    final = evals[:, -1]
    return presets.Measured(
        steps=int(steps[:, -1].mean()), seeds=seeds, mean=float(final.mean()),
        std=float(final.std()), wall_s=round(wall_s, 1), machine=machine(),
        date=str(datetime.date.today()), command=command, config=config.to_dict())


def final_returns(preset: presets.Preset) -> np.ndarray | None:
    """Each seed's final deterministic evaluation, from the preset's recorded curve."""
    path = curve_path(preset)
    return np.load(path)["eval_return"][:, -1].astype(np.float64) if path.exists() else None


def random_returns(env_ids: list[str]) -> dict[str, float]:
    """Mean return of a uniformly random policy over 256 episodes per environment (measured
    once, then read from ``benchmarks/random_returns.json``): the 0 of normalised scores."""
    from purerl import envs, rollout, spaces

    known = json.loads(RANDOM.read_text()) if RANDOM.exists() else {}
    for env_id in env_ids:
        if env_id in known:
            continue
        env = envs.make(env_id)
        act = lambda obs, key, env=env: spaces.random_action(env.spec, key, obs.shape[0])  # noqa: E731
        returns = jax.jit(lambda key, env=env, act=act: rollout.episode_returns(
            env, act, key, 256, stochastic=True))(jax.random.key(0))
        known[env_id] = round(float(np.mean(returns)), 3)
        RANDOM.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")
    return {e: known[e] for e in env_ids}


def normalised(family: str) -> dict[str, dict[str, np.ndarray]]:
    """``{algo: {env: normalised final returns per seed}}`` of a family's measured presets:
    0 is the random policy's return, 1 the best preset mean on that environment (so 1 means
    "as good as purerl's best preset there")."""
    measured = [p for p in presets.all_presets() if presets.family_of(p.env) == family
                and p.measured is not None and final_returns(p) is not None]
    envs_ = sorted({p.env for p in measured})
    low = random_returns(envs_)
    high = {e: max(p.measured.mean for p in measured if p.env == e) for e in envs_}
    out: dict[str, dict[str, np.ndarray]] = {}
    for p in measured:
        if high[p.env] - low[p.env] <= 0:
            continue  # no preset beats random here: nothing to normalise by
        out.setdefault(p.algo, {})[p.env] = stats.normalize(final_returns(p), low[p.env],
                                                            high[p.env])
    return out


def results_tables() -> str:
    """Markdown: one table per family of every recorded preset result, mean ± std and the IQM
    with its 95% bootstrap interval over seeds (purerl.stats)."""
    records = presets.load_results()
    out = []
    for family in [*presets.FAMILIES, "continuous control (MuJoCo Playground)", "other"]:
        rows = []
        for p in presets.all_presets():
            m = records.get(p.name)
            if presets.family_of(p.env) != family or m is None:
                continue
            status = "" if p.measured else " (stale)"
            finals = final_returns(p)
            iqm = "" if finals is None or not np.isfinite(finals).all() else \
                str(stats.bootstrap_interval(finals, stats.iqm))
            rows.append(f"| {p.algo} | {p.env} | {m.steps:,} | {m.seeds} | "
                        f"{m.mean:.1f} ± {m.std:.1f}{status} | {iqm} | {m.wall_s:.0f} s | "
                        f"{m.machine} | {m.date} | {p.note} |")
        if rows:
            profile = FIGURES / f"profile_{_slug(family)}.png"
            shown = f"\n\n![{family}: performance profiles](figures/{profile.name})" \
                if profile.exists() else ""
            out.append(f"### {family}\n\n| algorithm | environment | env steps / seed | seeds | "
                       "final eval (mean ± std over seeds) | IQM [95% bootstrap CI] | wall "
                       "(incl. compile) | machine | date | note |\n"
                       "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + shown)
    return "\n\n".join(out)


def _slug(family: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in family).strip("_")


def write_profiles() -> list[Path]:
    """Per family: performance profiles of the normalised final returns (Agarwal et al. 2021,
    section 4.2) and each algorithm's aggregate IQM over the family's tasks with its 95%
    stratified-bootstrap interval (runs resampled within each task)."""
    import matplotlib
    from matplotlib.figure import Figure

    written = []
    for family in presets.FAMILIES:
        scores = normalised(family)
        if not scores:
            continue
        fig = Figure(figsize=(11, 4.2), layout="constrained")
        left, right = fig.subplots(1, 2)
        taus = np.linspace(-0.25, 1.25, 121)
        ranked = sorted(scores, key=lambda a: stats.iqm(list(scores[a].values())))
        colors = dict(zip(ranked, matplotlib.colormaps["tab20"].colors))
        for algo in ranked[::-1]:
            tasks = list(scores[algo].values())
            left.plot(taus, stats.performance_profile(tasks, taus), color=colors[algo],
                      label=f"{algo} ({len(tasks)} task(s))")
        left.set(title=f"{family}: performance profiles", xlabel="normalised final return tau "
                 "(0 random, 1 best preset)", ylabel="fraction of runs > tau")
        left.grid(alpha=0.3)
        left.legend(fontsize=7)
        for y, algo in enumerate(ranked):
            ci = stats.bootstrap_interval(list(scores[algo].values()), stats.iqm)
            right.errorbar([ci.value], [y], xerr=[[ci.value - ci.low], [ci.high - ci.value]],
                           fmt="o", capsize=3, color=colors[algo])
        right.set_yticks(range(len(ranked)),
                         [f"{a} ({len(scores[a])})" for a in ranked])
        right.set(title="aggregate IQM over its tasks, 95% stratified bootstrap",
                  xlabel="IQM of normalised final returns (0 random, 1 best preset)")
        right.grid(alpha=0.3)
        path = FIGURES / f"profile_{_slug(family)}.png"
        fig.savefig(path, dpi=100)
        written.append(path)
    return written


def summary_table() -> str:
    """Markdown for docs/presets.md: one row per environment with every measured preset on it, the
    presets not measured yet, and the learning-curve figures."""
    by_env: dict[str, list[str]] = {}
    seeds = set()
    for p in presets.all_presets():
        if (m := p.measured) is not None:
            seeds.add(m.seeds)
            by_env.setdefault(p.env, []).append(
                f"{p.algo} {m.mean:.1f} ± {m.std:.1f} ({presets._steps(m.steps)})")
    over = f"{seeds.pop()} seeds" if len(seeds) == 1 else "seeds"
    missing = [p.name for p in presets.all_presets() if p.measured is None]
    rows = "\n".join(f"| {env} | {', '.join(cells)} |" for env, cells in by_env.items())
    figures = "\n".join(f"![{env}](../benchmarks/figures/{env.replace('/', '_')}.png)"
                        for env in by_env
                        if (FIGURES / f"{env.replace('/', '_')}.png").exists())
    return (f"| environment | final deterministic eval, mean ± std over {over} (env steps per "
            f"seed) |\n|---|---|\n{rows}\n\n"
            + (f"Registered, not measured yet: {', '.join(missing)}.\n\n" if missing else "")
            + figures)


def replace_block(path: Path, block: str) -> None:
    """Put ``block`` between the preset markers of ``path`` (before its first section if the
    markers are missing)."""
    text = path.read_text()
    block = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        head, sep, rest = text.partition("\n## ")
        text = f"{head}\n{block}\n{sep}{rest}"
    path.write_text(text)


def write_results() -> None:
    replace_block(PRESETS_PAGE, summary_table())
    replace_block(RESULTS,
        "## Presets (written by benchmarks/suite.py from purerl/presets.json)\n\n"
        "What each preset reaches. The wall times say how long a measurement took on a shared "
        "machine; they are not speed figures (those are ratios against a peer run side by side: "
        "throughput.py, rejax_sac.py).\n\n" + results_tables())


def write_figures() -> list[Path]:
    """One figure per environment with a recorded curve: every algorithm's mean ± std band."""
    from matplotlib.figure import Figure

    FIGURES.mkdir(exist_ok=True)
    by_env: dict[str, list[presets.Preset]] = {}
    for p in presets.all_presets():
        if curve_path(p).exists() and p.measured is not None:
            by_env.setdefault(p.env, []).append(p)
    written = []
    for env, group in by_env.items():
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.add_subplot()
        for p in group:
            data = np.load(curve_path(p))
            x, y = data["env_steps"], data["eval_return"]
            mean, std = y.mean(axis=0), y.std(axis=0)
            line, = ax.plot(x, mean, marker=".", label=f"{p.algo} ({y.shape[0]} seeds)")
            ax.fill_between(x, mean - std, mean + std, alpha=0.2, color=line.get_color(),
                            linewidth=0)
        ax.set(title=f"{env}: deterministic eval, mean ± std over seeds",
               xlabel="environment steps per seed", ylabel="return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = FIGURES / f"{env.replace('/', '_')}.png"
        fig.savefig(path, dpi=100)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", action="append", default=[],
                        choices=list(presets.FAMILIES) + ["continuous control (MuJoCo Playground)"])
    parser.add_argument("--preset", action="append", default=[], metavar="ALGO/ENV")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    chosen = [p for p in presets.all_presets()
              if presets.family_of(p.env) in args.family or p.name in args.preset]
    unknown = set(args.preset) - {p.name for p in presets.all_presets()}
    if unknown:
        parser.error(f"no such preset(s): {', '.join(sorted(unknown))}")
    if not args.report_only and not chosen:
        parser.error("choose presets with --family or --preset (or pass --report-only)")
    for p in [] if args.report_only else chosen:
        command = f"python benchmarks/suite.py --preset {shlex.quote(p.name)} --seeds {args.seeds}"
        m = measure(p, args.seeds, command)
        presets.record(p, m)
        print(f"{p.name:40s} {m.summary()}  ({m.wall_s:.0f} s)", flush=True)
    for path in write_figures() + write_profiles():
        print("wrote", path)
    write_results()


if __name__ == "__main__":
    main()
