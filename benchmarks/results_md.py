"""Tables in benchmarks/RESULTS.md that scripts add rows to: one table per section, so a new
measurement becomes a row of the table it belongs to, not another appended section."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def add_rows(heading: str, header: str, rows: list[str], path: Path = RESULTS) -> None:
    """Append ``rows`` to the table under ``## heading`` (created at the end of the file, with
    ``header`` -- its column line and separator line -- if the section does not exist yet). A row
    the table already holds verbatim is not added again (a script re-run on saved results)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    title = f"## {heading}"
    if title not in text.splitlines():
        text = text.rstrip("\n") + f"\n\n{title}\n\n{header.rstrip()}\n"
    lines = text.splitlines()
    start = lines.index(title)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("|"))
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    table = set(lines[start:end])
    lines[end:end] = [row for i, row in enumerate(rows) if row not in table and row not in rows[:i]]
    path.write_text("\n".join(lines) + "\n")
