"""The command line's hardening: valid JSON on stdout, named errors, exit codes."""
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


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(tmp_path):
    """`mpq ... | head` used to end in a BrokenPipeError traceback."""
    from tests.helpers.service import problem

    path = tmp_path / "big.json"
    path.write_text(json.dumps(problem(n_layers=1500)))  # its plan is far larger than a pipe's buffer
    r = subprocess.run(f"{sys.executable} -m mpq.cli solve {path} | head -c 100", shell=True, capture_output=True, timeout=120)
    assert r.stdout.startswith(b"{") and len(r.stdout) == 100
    assert b"Traceback" not in r.stderr and b"BrokenPipe" not in r.stderr, r.stderr.decode()[-2000:]


def test_non_utf8_and_deeply_nested_inputs_are_named(tmp_path):
    from tests.helpers.service import problem

    utf16 = tmp_path / "p.json"
    utf16.write_bytes(json.dumps(problem()).encode("utf-16"))
    r = run_mpq("solve", str(utf16))
    assert r.returncode == 2 and b"not UTF-8" in r.stderr and b"Traceback" not in r.stderr
