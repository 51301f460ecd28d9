"""Regression tests for issue 13's command-line findings: valid JSON on stdout, named errors, exit codes."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from tests.helpers.problems import random_problem


def run_mpq(*args: str, cwd=None, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mpq.cli", *args], capture_output=True, cwd=cwd, input=input, timeout=120)


def test_highs_banner_never_reaches_stdout(tmp_path):
    problem = random_problem(np.random.default_rng(1), n_layers=8, constraints=("max_avg_bits", "max_bytes"))
    path = tmp_path / "problem.json"
    path.write_text(problem.model_dump_json(by_alias=True))
    r = run_mpq("solve", str(path), "--solver", "ilp", "--param", "backend=highs")  # the plan goes to stdout
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["solver"]["name"] == "ilp"
    assert b"HiGHS" not in r.stdout
