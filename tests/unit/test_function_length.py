"""No function in megamerge/ is longer than 80 lines (issue 13), and a report of the longest:

    python -m tests.unit.test_function_length        # the longest functions in megamerge/, longest first
    python -m tests.unit.test_function_length 40     # ... the 40 longest

A function's length runs from its first decorator (or `def`) to its last line, docstring,
comments and blank lines included: what a reader has to scroll through. A nested function counts
inside its parent and is also listed on its own.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_LINES = 80
PACKAGE = Path(__file__).resolve().parents[2] / "megamerge"


@dataclass(frozen=True)
class FunctionLength:
    lines: int
    path: Path
    line: int  # of the `def`
    name: str  # qualified: Class.method, outer.<locals>.inner

    def __str__(self) -> str:
        return f"{self.lines:4d}  {self.path}:{self.line}  {self.name}"


class _Collector(ast.NodeVisitor):
    def __init__(self, path: Path):
        self.path, self.scope, self.found = path, [], []

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        self.found.append(FunctionLength(node.end_lineno - first + 1, self.path, node.lineno,
                                         ".".join([*self.scope, node.name])))
        self.scope += [node.name, "<locals>"]
        self.generic_visit(node)
        del self.scope[-2:]

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()


def function_lengths(root: Path = PACKAGE) -> list[FunctionLength]:
    """Every function and method in the .py files under `root`, longest first."""
    found = []
    for path in sorted(root.rglob("*.py")):
        collector = _Collector(path.relative_to(root.parent))
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        found += collector.found
    return sorted(found, key=lambda f: (-f.lines, str(f.path), f.line))


def test_no_function_in_megamerge_is_longer_than_80_lines():
    lengths = function_lengths()
    assert len(lengths) > 100  # the walk found the package
    too_long = [f for f in lengths if f.lines > MAX_LINES]
    assert not too_long, f"functions over {MAX_LINES} lines (split them):\n" + "\n".join(map(str, too_long))


def test_the_measure_counts_decorators_docstrings_and_nested_functions(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text(
        "import functools\n"
        "\n"
        "\n"
        "class Model:\n"
        "    @functools.cache\n"  # line 5: the method starts at its decorator
        "    def forward(self):\n"
        '        """Doc."""\n'
        "\n"
        "        def inner():\n"
        "            return 1\n"
        "\n"
        "        return inner()\n"  # line 12
        "\n"
        "\n"
        "async def fetch():\n"
        "    pass\n"
    )
    measured = [(f.name, f.lines, f.line) for f in function_lengths(package)]  # longest first
    assert measured == [("Model.forward", 8, 6), ("Model.forward.<locals>.inner", 2, 9), ("fetch", 2, 15)]


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    lengths = function_lengths()
    print(f"the {count} longest of {len(lengths)} functions in megamerge/ (limit {MAX_LINES} lines):")
    print("\n".join(map(str, lengths[:count])))
    sys.exit(1 if lengths and lengths[0].lines > MAX_LINES else 0)
