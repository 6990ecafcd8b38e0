"""Execute the tutorial notebooks' code cells with a small training budget."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, capsys):
    monkeypatch.setenv("PURERL_NOTEBOOK_BUDGET", "8192")
    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {}
    for cell in cells:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "final deterministic return over 8 seeds" in out
    assert out.count("lr=") == 4


def test_there_is_a_notebook():
    assert NOTEBOOKS
