"""Malformed files and arguments for every ``mpq`` subcommand, shared by the CLI fuzz test and
``benchmarks/hardening_fuzz.py``.

Each case is run in-process through ``mpq.cli.main``; a case passes when it ends with a documented exit
code (2 usage or bad input, 3 infeasible, 4 time limit, 5 load failure), an ``error:`` line on stderr,
no traceback, and every file that existed before it unchanged (no data lost to a failed command).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .service import problem

DOCUMENTED = {2, 3, 4, 5}

MODELS = '''
import torch
from torch import nn
import torch.nn.functional as F
from mpq import Workload

def tiny():
    torch.manual_seed(0)
    return Workload(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)),
                    [(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))], F.cross_entropy)

def raises():
    raise RuntimeError("the user's loader failed")

def wrong_batches():
    return Workload(nn.Sequential(nn.Linear(4, 3)), [(torch.randn(2, 7), torch.tensor([0, 1]))], F.cross_entropy)

def vector_loss():
    return Workload(nn.Sequential(nn.Linear(4, 3)), [(torch.randn(2, 4), torch.tensor([0, 1]))],
                    lambda o, t: F.cross_entropy(o, t, reduction="none"))

def not_a_workload():
    return "a string"

NOT_CALLABLE = 5
'''


@dataclass
class Case:
    argv: list[str]
    codes: set[int] = field(default_factory=lambda: set(DOCUMENTED))


@dataclass
class Outcome:
    case: Case
    code: Optional[int]
    stderr: str
    traceback: bool
    data_lost: list[str]

    @property
    def ok(self) -> bool:
        named = any(line.startswith(("error:", "mpq: error:")) or ": error: " in line for line in self.stderr.splitlines())
        return self.code in self.case.codes and named and not self.traceback and not self.data_lost


def write_files(tmp: Path) -> dict[str, str]:
    """The files the cases name: good ones to start from and malformed ones to feed."""
    f: dict[str, str] = {}

    def put(name: str, content) -> str:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        f[name] = str(path)
        return str(path)

    (tmp / "fuzzmodels_mpq.py").write_text(MODELS)
    (tmp / "fuzzbroken_mpq.py").write_text("raise RuntimeError('broken at import')\n")
    good = problem(n_layers=4)
    put("problem.json", json.dumps(good))
    put("utf16.json", json.dumps(good).encode("utf-16"))
    put("latin1.json", b'{"schema": "mpq.problem/v1", "layers": [{"name": "caf\xe9"}]}')
    put("empty.json", "")
    put("truncated.json", json.dumps(good)[:50])
    put("list.json", "[]")
    put("null.json", "null")
    put("noschema.json", json.dumps({k: v for k, v in good.items() if k != "schema"}))
    put("plan_schema.json", json.dumps({**good, "schema": "mpq.plan/v1"}))
    over = json.loads(json.dumps(good))
    for l in over["layers"][:2]:
        for o in l["options"]:
            o["bytes"] = 2**62
    put("overflow.json", json.dumps(over))
    strint = json.loads(json.dumps(good))
    strint["layers"][0]["params"] = "144"
    put("strint.json", json.dumps(strint))
    zero = json.loads(json.dumps(good))
    for l in zero["layers"]:
        l["params"] = 0
    put("zero_params.json", json.dumps(zero))
    nan = json.dumps(good).replace('"distortion": ', '"distortion": NaN, "x": ', 1)
    put("nan.json", nan)
    deep = "[" * 100_000 + "]" * 100_000
    put("deep.json", deep)
    put("garbage.npz", os.urandom(256))
    put("text.npz", json.dumps(good))
    from mpq.columnar import ProblemColumns
    from mpq.schema import Problem

    cols = ProblemColumns.from_problem(Problem.model_validate(good))
    for name, header in (("ties5.npz", {**cols.header(), "ties": 5}), ("schema_wrong.npz", {**cols.header(), "schema": "x"}),
                         ("pairs_str.npz", {**cols.header(), "pairs": "x"})):
        np.savez(tmp / name, header=np.array(json.dumps(header)), **cols.arrays)
        f[name] = str(tmp / name)
    arrays = {k: v.copy() for k, v in cols.arrays.items()}
    arrays["bytes"] = arrays["bytes"].astype(np.uint64)
    arrays["bits"] = arrays["bits"].astype(np.uint64)
    arrays["bytes"][::2] = 2**60
    arrays["bits"][::2] = 2**63
    np.savez(tmp / "overflow.npz", header=np.array(json.dumps(cols.header())), **arrays)
    f["overflow.npz"] = str(tmp / "overflow.npz")
    from mpq.solvers import solve

    plan = json.loads(solve(Problem.model_validate(good)).model_dump_json(by_alias=True))
    put("plan.json", json.dumps(plan))
    fp8 = json.loads(json.dumps(plan))
    fp8["layers"][0].update(format="fp8_e4m3", w_bits=4)
    put("plan_fp8w4.json", json.dumps(fp8))
    unknown = json.loads(json.dumps(plan))
    unknown["layers"][0]["name"] = "no.such.layer"
    put("plan_unknown_layer.json", json.dumps(unknown))
    put("plan_utf16.json", json.dumps(plan).encode("utf-16"))
    put("token_empty", "\n")
    (tmp / "adir").mkdir(exist_ok=True)
    f["adir"] = str(tmp / "adir")
    put("keep.json", '{"keep": "this file must survive every failed command"}')
    return f


def cases(tmp: Path) -> list[Case]:
    """Every subcommand with malformed files and arguments (paths under ``tmp``, which must be the cwd)."""
    f = write_files(tmp)
    missing = str(tmp / "no" / "such" / "dir" / "out.json")
    keep = f["keep.json"]
    tiny = "fuzzmodels_mpq:tiny"
    bad_models = ["nosuchmodule_mpq:fn", "fuzzmodels_mpq:nosuchfn", "fuzzmodels_mpq:raises", "fuzzmodels_mpq:wrong_batches",
                  "fuzzmodels_mpq:vector_loss", "fuzzmodels_mpq:not_a_workload", "fuzzmodels_mpq:NOT_CALLABLE",
                  "fuzzbroken_mpq:fn", "no_colon_and_no_dir", str(tmp / "adir")]
    bad_problems = ["utf16.json", "latin1.json", "empty.json", "truncated.json", "list.json", "null.json", "noschema.json",
                    "plan_schema.json", "overflow.json", "strint.json", "zero_params.json", "nan.json", "deep.json",
                    "garbage.npz", "text.npz", "ties5.npz", "schema_wrong.npz", "pairs_str.npz", "overflow.npz", "adir"]
    bad_plans = ["plan_fp8w4.json", "utf16.json", "empty.json", "truncated.json", "problem.json", "plan_utf16.json",
                 "garbage.npz", "adir"]
    P = f["problem.json"]
    out: list[Case] = []
    add = lambda *argv, codes=None: out.append(Case(list(argv), codes or set(DOCUMENTED)))  # noqa: E731

    for m in bad_models:
        add("layers", m)
        add("layers", "--json", m)
        add("sensitivity", m, "--estimator", "weight-error", "--quiet", "--no-cache", "-o", keep)
        add("plan", m, "--budget", "avg_bits=4", "--estimator", "weight-error", "--quiet", "--no-cache", "--no-eval", "-o", keep)
        add("apply", m, f["plan.json"])
    add("layers", "--nosuchflag")
    add("schema", "nosuchkind")
    add("nosuchcommand")
    for name in bad_problems:
        add("solve", f[name], "-o", keep)
        add("solve", f[name], "--solver", "greedy")
        add("frontier", f[name], "-o", keep)
    for name in bad_plans:
        add("export", f[name], "--to", "hawq", "-o", keep)
        add("apply", tiny, f[name])
    common = ["--estimator", "weight-error", "--quiet", "--no-cache", "--no-eval"]
    for args in (["--budget", "avg_bits=abc"], ["--budget", "mb=-1"], ["--budget", "speed=3"], ["--budget", "avg_bits"],
                 ["--budget", "avg_bits=0.5"], ["--time-limit", "nan"], ["--time-limit", "-1"], ["--time-limit", "0"],
                 ["--budget", "avg_bits=4", "-o", "."], ["--budget", "avg_bits=4", "-o", missing],
                 ["--budget", "avg_bits=4", "--problem-out", missing], ["--budget", "avg_bits=4", "-o", f["adir"]],
                 ["--budget", "avg_bits=4", "--sensitivity", f["utf16.json"]], ["--budget", "avg_bits=4", "--sensitivity", f["problem.json"]],
                 ["--budget", "avg_bits=4", "--solver", "nope"], ["--budget", "avg_bits=4", "--channel-groups", "0"],
                 ["--budget", "avg_bits=4", "--solver", "ilp", "--solver-param", "gap_rel=-1"],
                 ["--budget", "avg_bits=4", "--solver", "pareto", "--solver-param", "max_distortion=abc"],
                 ["--budget", "avg_bits=4", "--solver-param", "noequals"], ["--budget", "avg_bits=4", "--bits", "2,x"],
                 ["--budget", "avg_bits=4", "--bits", "40"], ["--budget", "avg_bits=4", "--prune", "2"],
                 ["--budget", "avg_bits=4", "--formats", "zz"], ["--budget", "avg_bits=4", "--estimator", "nope"],
                 ["--budget", "avg_bits=4", "--max-drop", "0.1"]):
        add("plan", tiny, *common, *args)  # a repeated option: the last one counts
    for args in (["--estimator", "nope"], ["-o", "."], ["-o", missing], ["--probes", "-3"], ["--param", "foo=1"],
                 ["--param", "noequals"], ["--bits", "2,x"], ["--prune", "2"], ["--formats", "zz"]):
        base = ["sensitivity", tiny, "--quiet", "--no-cache"]
        add(*base, *(args if "--estimator" in args else ["--estimator", "weight-error", *args]))
    for args in (["--budget", "avg_bits=1"], ["--budget", "avg_bits=abc"], ["--param", "max_distortion=abc", "--solver", "pareto"],
                 ["--param", "gap_rel=nan", "--solver", "ilp"], ["--param", "gap_rel=-1", "--solver", "ilp"],
                 ["--param", "core_groups=-5", "--solver", "lagrangian"], ["--param", "trials=0", "--solver", "evolutionary"],
                 ["--param", "storage=x", "--solver", "evolutionary"], ["--param", "nope=1"], ["--param", "noequals"],
                 ["--time-limit", "-1"], ["--time-limit", "nan"], ["--time-limit", "0"], ["--solver", "nope"],
                 ["-o", "."], ["-o", missing], ["-o", f["adir"]], ["--problem-out", "."], ["--problem-out", missing],
                 ["--server", "http://127.0.0.1:1"], ["--server", "not a url"]):
        add("solve", P, *args)
    for args in (["-o", "."], ["-o", missing], ["--plot", missing.replace(".json", ".png")], ["--plot", "."],
                 ["--max-points", "-1"], ["--axis", "zz"], ["--server", "http://127.0.0.1:1"]):
        add("frontier", P, *args)
    for args in (["--save", "."], ["--save", missing]):
        add("apply", tiny, f["plan.json"], *args)
    add("apply", tiny, f["plan_unknown_layer.json"])
    for args in (["--to", "nope"], ["--to", "hawq", "-o", "."], ["--to", "hawq", "-o", missing], ["--to", "hawq", "--merge", "min"],
                 ["--to", "gptqmodel", "--keep-float", "no.such.layer"]):
        add("export", f["plan.json"], *args)
    for args in (["--db", "x.db"], ["--db", "postgresql://u:pw@127.0.0.1:1/db"], ["--port", "0"], ["--port", "x"],
                 ["--host", "0.0.0.0"], ["--token-file", missing], ["--token-file", f["token_empty"], "--host", "0.0.0.0"],
                 ["--search-storage", "zz"], ["--token", "s3cret"], ["--workers", "x"]):
        add("serve", *args)
    for args in (["--storage", "zz", "--study", "s"], ["--storage", "sqlite:///" + missing.replace(".json", ".db"), "--study", "s"],
                 ["--study", "s"], ["--storage", "journal:///" + missing.replace(".json", ".log"), "--study", "s"]):
        add("worker", *args, "--quiet")
        add("search", "status", *args)
    return out


def snapshot(tmp: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def run_case(case: Case, tmp: Path) -> Outcome:
    """Run one case in-process (cwd must be ``tmp``); never raises."""
    from mpq.cli import main

    before = snapshot(tmp)
    err, out = io.StringIO(), io.StringIO()
    tb = False
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(case.argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 2
        except BaseException:  # noqa: BLE001 - an escaped exception is exactly what the fuzzing looks for
            code, tb = None, True
            err.write(traceback.format_exc())
    text = err.getvalue()
    tb = tb or "Traceback (most recent call last)" in text or "internal error" in text
    after = snapshot(tmp)
    lost = [p for p, h in before.items() if after.get(p) != h]
    return Outcome(case, code, text, tb, lost)
