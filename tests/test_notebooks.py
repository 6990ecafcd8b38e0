"""Execute the tutorial notebooks' code cells with a small training budget."""

import pytest
from helpers import NOTEBOOK_EXPECTED, NOTEBOOKS, NOTEBOOKS_SPLIT_OFF, run_notebook


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name not in NOTEBOOKS_SPLIT_OFF],
                         ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, capsys):
    run_notebook(path, monkeypatch, capsys)


def test_every_notebook_is_checked():
    assert NOTEBOOKS and {p.name for p in NOTEBOOKS} == set(NOTEBOOK_EXPECTED)
