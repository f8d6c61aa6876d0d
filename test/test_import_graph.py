"""The layering of the packages, read from the source (a static AST walk of every module, imports inside
functions included): no import cycle between modules (that gausstr_core never imports ROS is
test_core_without_ros.py, with the same walk)."""

from __future__ import annotations

import subprocess
import sys

from gausstr_testing.imports import ROOT, cycles, import_graph, package_modules


def test_no_import_cycle_between_modules():
    graph = import_graph(package_modules())
    assert len(graph) > 100  # the walk found the packages
    found = cycles(graph)
    assert not found, "modules that import each other (directly or through others): " + "; ".join(
        " <-> ".join(c) for c in found
    )


def test_the_node_never_reaches_the_bag_tools():
    # The bag tools replay into the node's code (parameters, input rules, pipeline), not the reverse.
    graph = import_graph(package_modules())
    for start in (m for m in graph if m.startswith("gausstr_ros.node")):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        bag = sorted(m for m in seen if m.startswith("gausstr_ros.bag"))
        assert not bag, f"{start} imports (through others) {bag}"


def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("from . import a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    modules = package_modules(("pkg",), tmp_path)
    graph = import_graph(modules)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_config_modules_import_no_network_library():
    # Reading a config (a checkpoint's header, a YAML file, the presets) must not pull in open_clip,
    # timm or gsplat.
    code = (
        "import sys\n"
        "import gausstr_core.text.config, gausstr_core.config, gausstr_core.presets\n"
        "print(sorted(m for m in ('open_clip', 'timm', 'gsplat') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
