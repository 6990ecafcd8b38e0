"""Execute notebooks/off_policy.ipynb at a small budget (see test_notebooks.py)."""

from test_notebooks import NOTEBOOKS, SPLIT_OFF, run_notebook


def test_off_policy_notebook_runs(monkeypatch, capsys):
    (path,) = [p for p in NOTEBOOKS if p.name in SPLIT_OFF]
    run_notebook(path, monkeypatch, capsys)
