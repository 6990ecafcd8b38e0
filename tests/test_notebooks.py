"""Execute the tutorial notebooks' code cells with a small training budget."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))

# what each notebook must print when it has run to the end
EXPECTED = {
    "ppo.ipynb": ["final deterministic return over 8 seeds", "greedy actions:", "V(s):"]
    + ["lr="] * 4,
    "policy_gradient.ipynb": ["final return"] * 10 + ["A3C staleness per update"],
    "off_policy.ipynb": ["final return"] * 5 + ["greedy actions:", "deterministic actions:"]
    + ["tau="] * 3,
}


# The off-policy notebook runs from its own file (test_notebook_off_policy.py): pytest-xdist
# hands out whole files, and the three notebooks in one file were the suite's longest tail.
SPLIT_OFF = {"off_policy.ipynb"}


def run_notebook(path: Path, monkeypatch, capsys) -> None:
    """Execute ``path``'s code cells at the test budget; check the lines it must print."""
    monkeypatch.setenv("PURERL_NOTEBOOK_BUDGET", "8192")
    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {}
    for cell in cells:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)
    out = capsys.readouterr().out
    for marker in set(EXPECTED[path.name]):
        assert out.count(marker) == EXPECTED[path.name].count(marker), (marker, out)


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name not in SPLIT_OFF],
                         ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, capsys):
    run_notebook(path, monkeypatch, capsys)


def test_every_notebook_is_checked():
    assert NOTEBOOKS and {p.name for p in NOTEBOOKS} == set(EXPECTED)
