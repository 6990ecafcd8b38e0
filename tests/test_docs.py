"""The documentation's links resolve: every markdown link ``[text](target)`` (and image
``![alt](target)``) of README.md and docs/*.md that points into the repository names a file or
directory that exists, relative to the linking file, and its ``#anchor``, if any, names a
heading of the target file by GitHub's rule. External http(s) and mailto links are not fetched.
Also: docs/README.md lists every page, and the README stays a front door."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
# [text](target) or ![alt](target), target optionally in <...> and followed by a "title"
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def prose(text: str, inline_code: bool = False) -> str:
    """``text`` without fenced code blocks and (unless ``inline_code``) inline code spans:
    links and headings inside code are not links and headings."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else line)
    text = "\n".join(lines)
    return text if inline_code else INLINE_CODE.sub(lambda m: " " * len(m.group(0)), text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text lowercased, punctuation other than '-'
    and '_' removed, spaces turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of ``path``: its headings' slugs (repeated ones get GitHub's -1, -2, ...
    suffixes) and explicit ``<a name=...>`` anchors."""
    text = path.read_text(encoding="utf-8")
    seen: dict[str, int] = {}
    found = set(HTML_ANCHOR.findall(text))
    for line in prose(text, inline_code=True).splitlines():
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """``(line number, target)`` of every link in ``path``'s prose."""
    text = prose(path.read_text(encoding="utf-8"))
    out = []
    for m in LINK.finditer(text):
        target = m.group(2).strip("<>")
        out.append((text.count("\n", 0, m.start()) + 1, target))
    return out


def is_external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) is not None


def test_pages_exist():
    assert (ROOT / "README.md").is_file()
    assert (DOCS / "README.md").is_file()
    for name in ("architecture", "contract", "presets", "checkpoints", "devices", "benchmarks",
                 "errors"):
        assert (DOCS / f"{name}.md").is_file(), f"docs/{name}.md is missing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page: Path):
    broken = []
    for line, target in links(page):
        if is_external(target):
            continue
        file_part, _, fragment = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        where = f"{page.relative_to(ROOT)}:{line}: {target}"
        if not dest.exists():
            broken.append(f"{where} (no such file)")
            continue
        if ROOT not in dest.parents and dest != ROOT:
            broken.append(f"{where} (outside the repository)")
            continue
        if fragment:
            if dest.is_dir() or dest.suffix.lower() != ".md":
                broken.append(f"{where} (an anchor into a file that is not markdown)")
            elif fragment not in anchors(dest):
                broken.append(f"{where} (no heading with the anchor #{fragment} in "
                              f"{dest.relative_to(ROOT)})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_index_lists_every_page():
    listed = {(DOCS / t.partition("#")[0]).resolve() for _, t in links(DOCS / "README.md")
              if not is_external(t)}
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and p not in listed]
    assert not missing, f"docs/README.md does not link {missing}"


def test_readme_links_the_docs_and_stays_short():
    targets = {t.partition("#")[0] for _, t in links(ROOT / "README.md")}
    assert "docs/README.md" in targets
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; it is the front door (at most {README_MAX_LINES}): "
        "move details to a page under docs/")


def test_the_checker_itself(tmp_path: Path):
    """GitHub's anchor rule and the parsing of links, on known cases."""
    assert slug("Several devices") == "several-devices"
    assert slug("What `purerl train` checks before compiling") == \
        "what-purerl-train-checks-before-compiling"
    assert slug("Off-policy: replay buffer, DQN, DDPG, TD3, SAC") == \
        "off-policy-replay-buffer-dqn-ddpg-td3-sac"
    assert slug("Data parallel: one run's environments split over devices") == \
        "data-parallel-one-runs-environments-split-over-devices"
    assert slug("Tuning grids (benchmarks/grid.py)") == "tuning-grids-benchmarksgridpy"
    text = "a [x](a.md#b) `[no](c.md)` ![i](d.png \"t\")\n```\n[no](e.md)\n```\n[y](<f g.md>)"
    with_code = "# A `b` c\n```\n# not a heading\n```\n## A `b` c\n"
    found = [m.group(2).strip("<>") for m in LINK.finditer(prose(text))]
    assert found == ["a.md#b", "d.png", "f g.md"]
    page = tmp_path / "sample.md"
    page.write_text(with_code, encoding="utf-8")
    assert anchors(page) == {"a-b-c", "a-b-c-1"}
