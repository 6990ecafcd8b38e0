"""Execute notebooks/off_policy.ipynb at a small budget (see test_notebooks.py; a file of its
own so that pytest-xdist can run it beside the other notebooks)."""

from helpers import NOTEBOOKS, NOTEBOOKS_SPLIT_OFF, run_notebook


def test_off_policy_notebook_runs(monkeypatch, capsys):
    (path,) = [p for p in NOTEBOOKS if p.name in NOTEBOOKS_SPLIT_OFF]
    run_notebook(path, monkeypatch, capsys)
