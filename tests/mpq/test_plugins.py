"""Out-of-tree plugins: a solver, an estimator and an exporter, one file each, found through entry points."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from tests.helpers.models import tiny_mlp
from tests.helpers.problems import random_problem
from torch import nn

from mpq import registry
from mpq.cli import main
from mpq.export import EXPORTERS
from mpq.registry import RegistryError
from mpq.sensitivity.base import ESTIMATORS, get_estimator
from mpq.solvers.base import SOLVERS, get_solver

PLUGIN = {
    "solver.py": '''
        """Every layer at its smallest option: a plugin solver."""
        import numpy as np

        from mpq.settings import Count
        from mpq.solvers.base import Solution, Solver


        class SmallestSolver(Solver):
            """Plugin: every layer at its smallest option."""

            name = "plug-smallest"

            class Settings(Solver.Settings):
                passes: Count = 1

            def _solve(self, cp):
                name = next(iter(cp.caps))
                return Solution(np.array([int(np.argmin(r)) for r in cp.resources[name]]), "feasible")
    ''',
    "estimator.py": '''
        """Parameter counts as sensitivities: a plugin estimator."""
        from mpq.schema import LayerSensitivity
        from mpq.sensitivity.base import Estimator


        class ParamCountEstimator(Estimator):
            """Plugin: each layer's parameter count."""

            name = "plug-params"
            needs_data = False

            def estimate(self, workload, graph, options=None):
                return self.table(workload, {l.name: LayerSensitivity(score=float(l.params), params=l.params) for l in graph})
    ''',
    "exporter.py": '''
        """Layer name -> bits as JSON: a plugin exporter."""
        import json

        from mpq.export.base import Export, ExportFile, Exporter, Support


        class BitsExporter(Exporter):
            """Plugin: layer name -> weight bits."""

            name = "plug-bits"
            support = Support(bits=frozenset(range(1, 17)), formats=frozenset({"int", "float"}))

            def build(self, plan):
                data = {l.name: l.w_bits for l in plan.layers}
                return Export(self.name, [ExportFile(".json", json.dumps(data))], data, [])
    ''',
}
ENTRY_POINTS = """
[mpq.solvers]
plug-smallest = mpqplug.solver:SmallestSolver

[mpq.estimators]
plug-params = mpqplug.estimator:ParamCountEstimator

[mpq.exporters]
plug-bits = mpqplug.exporter:BitsExporter
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """``mpqplug`` installed in ``tmp_path``: its modules and a dist-info with the entry points, on sys.path."""
    pkg = tmp_path / "mpqplug"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, text in PLUGIN.items():
        (pkg / name).write_text(textwrap.dedent(text))
    info = tmp_path / "mpqplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mpqplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", set())  # this process loads plugins again, now that one is installed
    yield tmp_path
    for table in (SOLVERS, ESTIMATORS, EXPORTERS):
        for name in [n for n in table if n.startswith("plug-")]:
            del table[name]


def test_plugins_appear_in_the_cli_and_the_service_and_run(plugin, tmp_path, capsys):
    from mpq.service.app import create_app
    from mpq.service.limits import ServiceConfig

    assert main(["solvers"]) == 0 and "plug-smallest  Plugin: every layer at its smallest option." in capsys.readouterr().out
    assert main(["estimators"]) == 0 and "plug-params" in capsys.readouterr().out
    config = ServiceConfig(db_url=f"sqlite:///{tmp_path / 'svc.db'}", solve_workers=0)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
        listed = {s["name"]: s for s in client.get("/v1/solvers").json()["solvers"]}
        assert listed["plug-smallest"]["settings"]["passes"] == {"default": 1, "minimum": 1, "type": "integer"}
        assert "plug-params" in {e["name"] for e in client.get("/v1/estimators").json()["estimators"]}

    problem = random_problem(np.random.default_rng(4), n_layers=4, constraints=("max_bytes",), slack=0.9)
    path = tmp_path / "problem.json"
    path.write_text(problem.model_dump_json(by_alias=True))
    assert main(["solve", str(path), "--solver", "plug-smallest", "--param", "passes=2", "-o", str(tmp_path / "plan.json")]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    smallest = {l.name: min(l.options, key=lambda o: o.bytes).id for l in problem.layers}
    assert {l["name"]: l["option"] for l in plan["layers"]} == smallest and plan["solver"]["name"] == "plug-smallest"
    assert main(["solve", str(path), "--solver", "plug-smallest", "--param", "passes=0"]) == 2
    assert "solver 'plug-smallest': setting passes=0: expected a value >= 1" in capsys.readouterr().err

    assert main(["export", str(tmp_path / "plan.json"), "--to", "plug-bits", "-o", str(tmp_path / "bits.json")]) == 0
    assert json.loads((tmp_path / "bits.json").read_text()) == {l["name"]: l["w_bits"] for l in plan["layers"]}

    from mpq.graph import discover
    from mpq.workload import Workload

    model = tiny_mlp()
    workload = Workload(model, [(torch.randn(2, model[0].in_features), torch.randn(2, 4))], nn.functional.mse_loss)
    table = get_estimator("plug-params").estimate(workload, discover(workload))
    assert {n: l.score for n, l in table.layers.items()} == {l.name: float(l.params) for l in discover(workload)}


def test_a_plugin_cannot_take_a_built_in_name(plugin):
    (plugin / "mpqplug-0.1.dist-info" / "entry_points.txt").write_text("[mpq.solvers]\nilp = mpqplug.solver:SmallestSolver\n")
    with pytest.raises(RegistryError, match="entry point 'ilp' .* registers as 'plug-smallest'"):
        get_solver("dp")
