"""A static view of the packages' imports (AST only: nothing is imported), for the layering tests."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gausstr_core", "gausstr_ros")
ROS_MODULES = frozenset(
    {
        "rclpy",
        "rosidl_runtime_py",
        "std_msgs",
        "sensor_msgs",
        "geometry_msgs",
        "visualization_msgs",
        "tf2_ros",
        "tf2_msgs",
        "message_filters",
        "cv_bridge",
        "gausstr_ros",
        "builtin_interfaces",
        "rcl_interfaces",
        "launch",
        "launch_ros",
        "rosbags",
    }
)
"""Top-level modules that are ROS (or this package's ROS side): gausstr_core imports none of them."""


def module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted module name of a source file below ``root`` (a package is its ``__init__``)."""
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def package_modules(packages: tuple[str, ...] = PACKAGES, root: Path = ROOT) -> dict[str, Path]:
    """Every module of the packages: dotted name -> file."""
    return {module_name(p, root): p for name in packages for p in sorted((root / name).rglob("*.py"))}


def imported_names(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every import in a file, at any depth (functions, methods, branches).

    ``from a.b import c`` yields ``a.b.c`` (a module or a name in ``a.b``: the caller decides);
    relative imports are resolved against ``module``.
    """
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base = parts[: len(parts) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                yield node.lineno, f"{source}.{alias.name}" if alias.name != "*" else source


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``modules`` it imports (``from a import b`` counts as importing the
    module ``a.b`` when there is one, else ``a``)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for _, imported in imported_names(path, name):
            target = imported if imported in modules else imported.rpartition(".")[0]
            if target in modules and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found
