"""Packaging: the core install plans the digits example; the extras hold only what some users need."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mpq.extras import EXTRAS, MissingExtra, require

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

#: Importable modules of the extras and of the test-only libraries: none may be needed by the core.
BLOCKED = sorted(set(EXTRAS) | {"sklearn", "scipy", "torchao", "compressed_tensors", "auto_round", "hqq", "gguf", "tokenizers"})

#: Installs a meta-path finder that refuses the blocked modules, as if the extras were not installed.
BLOCK_IMPORTS = f"""
import sys
from importlib.abc import MetaPathFinder

BLOCKED = {BLOCKED!r}

class BlockExtras(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not in the core install)", name=name)
        return None

sys.meta_path.insert(0, BlockExtras())
"""


def run_without_extras(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPQ_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", BLOCK_IMPORTS + code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def dep_names(specs: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0].lower() for s in specs}


def test_core_dependencies_are_what_planning_needs_and_extras_hold_the_rest():
    core = dep_names(PYPROJECT["dependencies"])
    assert {"torch", "pyhessian", "pulp", "optuna", "networkx", "numpy", "pydantic", "highspy", "tqdm", "safetensors"} <= core
    extras = PYPROJECT["optional-dependencies"]
    for name in ("hf", "serve", "plot", "lrp", "postgres", "all", "test"):
        assert name in extras, f"extra [{name}] is missing"
    assert not core & {"fastapi", "uvicorn", "httpx", "matplotlib", "captum", "transformers", "scikit-learn", "scipy", "psycopg2-binary"}
    package_of = {"psycopg2": "psycopg2-binary"}
    for module, extra in EXTRAS.items():
        assert package_of.get(module, module) in dep_names(extras[extra]), f"{module} is not in the [{extra}] extra"
    assert extras["all"] == ["mpq-planner[hf,serve,plot,lrp,postgres]"]
    assert any(s.startswith("mpq-planner[all") for s in extras["test"])
    assert "torch>=2.3" in PYPROJECT["dependencies"]  # captum 0.9 needs torch 2.3


def test_package_is_typed_and_ships_the_digits_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["mpq"] and (ROOT / "mpq" / "py.typed").is_file()
    assert "*.npz" in data["mpq.examples.digits"] and (ROOT / "examples" / "digits" / "digits.npz").is_file()


def test_make_run_installs_the_core_and_make_test_the_test_extra():
    makefile = (ROOT / "Makefile").read_text()
    run_install = [l for l in makefile.splitlines() if "pip install" in l and "-e ." in l and "[test]" not in l]
    assert run_install, "make run must install the core without the test extra"
    assert "-e '.[test]'" in makefile


def test_the_core_without_extras_plans_the_digits_example_from_python(tmp_path):
    code = """
import json
import torch
from torch.utils.data import DataLoader, TensorDataset
import mpq
from mpq.examples.digits import load_data, load_model

data = load_data()
plan = mpq.plan(load_model(), DataLoader(TensorDataset(*data.calib), batch_size=32), budget={"avg_bits": 4},
                loss=torch.nn.functional.cross_entropy)
from mpq.cli import build_parser
commands = sorted(build_parser()._subparsers._group_actions[0].choices)
blocked_loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"avg_bits": plan.totals.avg_bits, "status": plan.solver.status, "solver": plan.solver.name,
                  "layers": len(plan.layers), "commands": commands, "loaded": blocked_loaded}))
"""
    proc = run_without_extras(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # the exact additive optimum, or its measured refinement (mpq/refine.py), which is feasible by construction
    assert out["status"] == "optimal" or (out["status"] == "feasible" and out["solver"].endswith("+refine")), out
    assert out["avg_bits"] <= 4 and out["layers"] == 5
    assert out["loaded"] == []
    assert {"plan", "serve", "export", "frontier", "worker"} <= set(out["commands"])  # listed even without their extras


def test_a_feature_behind_a_missing_extra_names_the_extra_to_install(tmp_path):
    code = """
from mpq.cli import main
code = main(["serve", "--port", "8123"])
print("exit", code)
"""
    proc = run_without_extras(code, tmp_path)
    assert "exit 2" in proc.stdout or proc.returncode != 0
    assert "pip install 'mpq-planner[serve]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_require_names_the_extra_and_passes_through_installed_modules():
    assert require("json", "anything") is json
    saved = sys.modules.get("matplotlib")
    sys.modules["matplotlib"] = None  # as if not installed
    try:
        with pytest.raises(MissingExtra, match=r"pip install 'mpq-planner\[plot\]'"):
            require("matplotlib", "plotting")
    finally:
        if saved is None:
            del sys.modules["matplotlib"]
        else:
            sys.modules["matplotlib"] = saved


def test_docs_and_schema_descriptions_refer_to_nothing_outside_the_repository():
    """Comments, docstrings and field descriptions (which the JSON Schemas publish) state the fact or name a file here."""
    import re

    outside = re.compile(r"DESIGN\.md|DESIGN's|FINDINGS|research\.md|\.\./shared|shared/bench|\bissue #?\d+", re.IGNORECASE)
    folders = ("mpq", "solvers", "sensitivity", "benchmarks", "examples", "tests")
    files = [p for d in folders if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*.py")
             if p != Path(__file__).resolve()] + [ROOT / "README.md"]
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if outside.search(line)]
    assert hits == []
