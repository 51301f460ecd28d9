"""The module graph: no import cycle (imports inside functions included), and the layering rules hold."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[2]
#: package name -> source folder (the repository maps solvers/ and sensitivity/ into mpq)
PACKAGES = {"mpq": ROOT / "mpq", "mpq.solvers": ROOT / "solvers", "mpq.sensitivity": ROOT / "sensitivity"}


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def import_graph() -> nx.DiGraph:
    """Module -> the mpq modules it imports anywhere in its text (top level, functions, conditionals)."""
    mods = modules()

    def owner(name: str):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = nx.DiGraph()
    for name, path in mods.items():
        graph.add_node(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                if target == "mpq" or target.startswith("mpq."):
                    found = owner(target)
                    # ``from mpq import x`` names the package only when x is not a module of it
                    if found and found != name and (found != "mpq" or target == "mpq"):
                        graph.add_edge(name, found)
    return graph


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert len(graph) > 80
    cycles = sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1)
    assert cycles == [], f"import cycles: {cycles}"


def registered_solvers() -> set[str]:
    """Modules of mpq.solvers that register a solver."""
    return {name for name, path in modules().items()
            if name.startswith("mpq.solvers.") and "@register_solver" in path.read_text()}


def test_the_layering_rules_hold():
    graph = import_graph()
    assert "mpq.cost" not in graph.successors("mpq.sensitivity._runtime")
    assert not nx.has_path(graph, "mpq.workload", "mpq.hf") and not nx.has_path(graph, "mpq.hf", "mpq.model_ref")
    assert not any(m.startswith("mpq.search") for m in nx.descendants(graph, "mpq.solvers.evolutionary"))


def test_no_registered_solver_imports_another_shared_algorithms_live_in_private_helpers():
    graph = import_graph()
    registered = registered_solvers()
    assert {"mpq.solvers.greedy", "mpq.solvers.lagrangian", "mpq.solvers.ilp", "mpq.solvers.dp", "mpq.solvers.pareto",
            "mpq.solvers.bisection", "mpq.solvers.evolutionary"} <= registered
    shared = {"mpq.solvers.base", "mpq.solvers.compiled", "mpq.solvers.frontier"}
    for solver in registered:
        siblings = {m for m in graph.successors(solver) if m.startswith("mpq.solvers.")}
        public = {m for m in siblings - shared if not m.rpartition(".")[2].startswith("_")}
        assert public == set(), (solver, public)


def test_solvers_schema_and_the_frontier_cli_load_without_torch():
    code = ("import sys; from mpq.solvers.base import available_solvers; available_solvers(); "
            "import mpq.frontier, mpq.frontier_cli, mpq.schema, mpq.columnar, mpq.plan; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
