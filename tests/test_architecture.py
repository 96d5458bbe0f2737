"""The package's structure, read from its code: no import circle anywhere in dpo_pipeline (module-level and
function-level imports alike: an import moved into a function to dodge a circle is still one)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dpo_pipeline"


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its __init__.py)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("dpo_pipeline", *path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
            candidates = [f"{module}.{alias.name}" for alias in node.names] + [module]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:  # `from .x import name`: the module x
                candidate = candidate.rsplit(".", 1)[0] if "." in candidate else ""
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each holds an import circle."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_circles_finds_a_circle_of_three_and_none_in_a_chain():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_package_has_no_import_circle():
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    assert graph["dpo_pipeline.sweep"] and "dpo_pipeline.runs" in graph["dpo_pipeline.sweep"]  # the graph is read
    assert circles(graph) == []


# The stage that trains online RL owns its methods (rl.py chooses between TRL's RLOO, GRPO and online DPO trainers).
OWNS_ITS_METHODS = {"dpo_pipeline/stages/rl.py"}


def method_name_tests(path: Path, names: set[str]) -> list[int]:
    """The lines of `path` that compare something called `method` (a variable, an attribute, a row's "method") with
    a method's name."""
    def is_method(node) -> bool:
        return (isinstance(node, ast.Name) and node.id == "method") or \
            (isinstance(node, ast.Attribute) and node.attr == "method") or \
            (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
             and node.slice.value == "method") or \
            (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "get" and node.args
             and isinstance(node.args[0], ast.Constant) and node.args[0].value == "method")

    def strings(node) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return {element.value for element in node.elts if isinstance(element, ast.Constant)}
        return set()

    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(is_method(side) for side in sides) and any(strings(side) & names for side in sides):
                lines.append(node.lineno)
    return lines


def test_no_shared_module_tests_a_methods_name():
    """The shared code asks the method registry (its label, family, trainer, held-out margin...); only a method's own
    module (dpo_pipeline/methods/) names it, and the RL stage its two trainers."""
    from dpo_pipeline.methods import methods

    names = {method.name for method in methods()}
    assert {"dpo", "simpo", "unlikelihood", "rloo"} <= names
    found = {str(path.relative_to(PACKAGE.parent)): method_name_tests(path, names)
             for path in PACKAGE.rglob("*.py") if "methods" not in path.relative_to(PACKAGE).parts}
    assert {path: lines for path, lines in found.items() if lines and path not in OWNS_ITS_METHODS} == {}
    assert method_name_tests(PACKAGE / "stages" / "rl.py", names)  # the check sees such a test where there is one
