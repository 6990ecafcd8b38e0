"""The shape of purerl's code, measured: what a maintainer wants to know before moving things.

    python benchmarks/structure.py [--top 10]

Reads the sources (no import) and prints:

- the import floors: a module's floor is 0 if it imports no purerl module at module level, else
  one more than the highest floor it imports (the depth of the import graph is the top floor);
- import cycles among module-level imports, and the cycles that only imports inside functions
  close (a function-level import is how a loop is usually dodged);
- upward edges: function-level imports of a module on the same or a higher floor;
- the number of imports of purerl modules inside functions, per module;
- the longest function and class definitions (lines, including docstrings and comments).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "purerl"


def purerl_imports(node: ast.AST, module: str) -> list[str]:
    """purerl modules named by one import statement (relative imports resolved)."""
    out = []
    if isinstance(node, ast.Import):
        out = [a.name for a in node.names if a.name.split(".")[0] == "purerl"]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            base = "purerl" + (f".{base}" if base else "")
        if base == "purerl":  # from purerl import x: x may be a module
            out = [f"purerl.{a.name}" for a in node.names]
        elif base.startswith("purerl."):
            out = [base]
    modules = {f"purerl.{p.stem}" for p in PACKAGE.glob("*.py")}
    return sorted({m.split(".")[1] for m in out if m in modules and m != f"purerl.{module}"})


def scan() -> tuple[dict[str, set[str]], dict[str, set[str]], list[tuple[int, str]]]:
    top: dict[str, set[str]] = {}
    inner: dict[str, set[str]] = {}
    lengths: list[tuple[int, str]] = []
    for path in sorted(PACKAGE.glob("*.py")):
        module = path.stem
        tree = ast.parse(path.read_text())
        top[module], inner[module] = set(), set()
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                top[module].update(purerl_imports(node, module))
            elif isinstance(node, ast.If):  # TYPE_CHECKING blocks do not run
                continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                lengths.append((node.end_lineno - node.lineno + 1, f"{module}.{node.name}"))
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        inner[module].update(purerl_imports(sub, module))
    return top, inner, lengths


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    level: dict[str, int] = {}

    def visit(m: str, path: tuple[str, ...]) -> int:
        if m in level:
            return level[m]
        if m in path:  # a cycle: count it once
            return 0
        level[m] = 1 + max((visit(d, path + (m,)) for d in graph[m]), default=-1)
        return level[m]

    for m in graph:
        visit(m, ())
    return level


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Elementary cycles, each reported once (from its smallest module)."""
    found = []

    def walk(start: str, m: str, path: list[str]) -> None:
        for d in sorted(graph[m]):
            if d == start:
                found.append(path + [start])
            elif d > start and d not in path:
                walk(start, d, path + [d])

    for m in sorted(graph):
        walk(m, m, [m])
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    top, inner, lengths = scan()
    level = floors(top)
    print(f"{len(top)} modules on {max(level.values()) + 1} floors (depth "
          f"{max(level.values())})")
    for f in range(max(level.values()) + 1):
        print(f"  floor {f:2d}: {', '.join(sorted(m for m in top if level[m] == f))}")
    print(f"cycles of module-level imports: {cycles(top) or 'none'}")
    both = {m: top[m] | inner[m] for m in top}
    closed = [c for c in cycles(both) if c not in cycles(top)]
    print(f"cycles closed by imports inside functions: {len(closed)}")
    for c in closed:
        print("  " + " -> ".join(c))
    upward = sorted((m, d) for m in inner for d in inner[m] - top[m] if level[d] >= level[m])
    print(f"upward or sideways imports inside functions: {len(upward)}")
    for m, d in upward:
        print(f"  {m} (floor {level[m]}) -> {d} (floor {level[d]})")
    counts = {m: len(inner[m] - top[m]) for m in inner if inner[m] - top[m]}
    print(f"modules imported only inside functions: {sum(counts.values())} "
          f"({', '.join(f'{m} {n}' for m, n in sorted(counts.items(), key=lambda x: -x[1]))})")
    print(f"the {args.top} longest definitions (lines):")
    for n, name in sorted(lengths, reverse=True)[:args.top]:
        print(f"  {n:4d}  {name}")


if __name__ == "__main__":
    main()
