"""Hardening counts: malformed inputs tried against the service and the command line, and how many
gave a 5xx, a traceback, or lost data.

Service: seeded random mutations of a valid request (fields dropped, types swapped, sizes past int64,
NaN, strings for integers, unknown solvers and settings), plus the security cases (storage and path
options, text/plain and form bodies, foreign Host and Origin headers), through the real app in
process. "Data lost" counts files outside the server's own database that a request created or
changed (a victim file offered as journal:// and sqlite:// storage, and the working directory).
CLI: every case of ``tests/helpers/cli_fuzz.py`` (each subcommand with malformed files and
arguments); "data lost" counts existing files a failed command changed.
Run: ``python benchmarks/hardening_fuzz.py [--service N]`` (about a minute).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.cli_fuzz import cases, run_case  # noqa: E402
from tests.helpers.service import problem  # noqa: E402

VALUES = [None, True, "144", "", "x" * 300, -1, 0, 2**62, 2**64, 1e308, -1e-9, [], {}, [1, 2], {"a": 1}, "NaN", 3.5]


def mutate(body: dict, rng: random.Random) -> dict:
    """One to three random edits anywhere in the request: drop a key, replace a value, add an unknown key."""
    body = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        node, path = body, []
        while isinstance(node, (dict, list)) and node and rng.random() < 0.75:
            key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            if not isinstance(node[key], (dict, list)) or not node[key]:
                break
            node, path = node[key], path + [key]
        if isinstance(node, dict) and node:
            key = rng.choice(list(node))
            action = rng.random()
            if action < 0.3:
                del node[key]
            elif action < 0.9:
                node[key] = copy.deepcopy(rng.choice(VALUES))
            else:
                node["surprise_" + str(rng.randint(0, 9))] = 1
        elif isinstance(node, list) and node:
            node[rng.randrange(len(node))] = copy.deepcopy(rng.choice(VALUES))
    return body


def service_cases(rng: random.Random, n: int, victim: Path, tmp: Path) -> list[tuple[str, dict, dict]]:
    """(route, request kwargs, expectation) triples; expectation may name the exact status."""
    base = {"problem": problem(n_layers=5), "solver": "auto", "options": {"time_limit_s": 5}}
    out = []
    routes = ["/v1/plans", "/v1/frontiers", "/v1/searches"]
    for i in range(n):
        route = routes[i % 3]
        body = mutate(base if route != "/v1/frontiers" else {"problem": base["problem"], "max_points": 5}, rng)
        out.append((route, {"content": json.dumps(body, allow_nan=True), "headers": {"content-type": "application/json"}}, {}))
    storages = [f"journal:///{victim}", f"sqlite:///{tmp / 'created.db'}", f"journal:///{tmp / 'new.log'}", "postgresql://x@127.0.0.1:1/db"]
    studies = ["$(touch PWNED)", "../../etc/passwd", "ok", "a/b", "x" * 65]
    for route in ("/v1/plans", "/v1/searches"):
        for storage in storages:
            for study in studies:
                body = {"problem": base["problem"], "solver": "evolutionary", "options": {"storage": storage, "study": study, "trials": 2}}
                out.append((route, {"json": body}, {"status": 422}))
                out.append((route, {"content": json.dumps(body), "headers": {"content-type": "text/plain"}}, {"status": 415}))
        for study in studies:
            body = {"problem": base["problem"], "solver": "evolutionary", "options": {"study": study, "trials": 2}}
            out.append((route, {"json": body}, {"status": 422}))
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "application/xml"):
        for route in routes:
            out.append((route, {"content": json.dumps(base), "headers": {"content-type": ctype}}, {"status": 415}))
    for host in ("evil.example", "127.0.0.1.nip.io", "localhost:1", "10.0.0.1:8000"):
        for route in routes:
            out.append((route, {"json": base, "headers": {"host": host}}, {"status": 400}))
    for origin in ("https://evil.example", "null", "http://192.168.1.1:8000"):
        for route in routes:
            out.append((route, {"json": {**base, "solver": "evolutionary", "options": {"storage": f"journal:///{victim}", "study": "x"}},
                                "headers": {"origin": origin}}, {"status": 403}))
    return out


class Tracebacks(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.count = 0
        self.seen: list[str] = []

    def emit(self, record):
        if record.exc_info:
            self.count += 1
            self.seen.append(f"{record.getMessage()}: {record.exc_info[0].__name__}: {record.exc_info[1]}"[:300])


def run_service(n: int) -> dict:
    from fastapi.testclient import TestClient

    from mpq.service.app import create_app
    from mpq.service.limits import ServiceConfig

    rng = random.Random(13)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        victim = tmp / "victim.sh"
        victim.write_text("echo hello\n")
        db = tmp / "svc" / "mpq.db"
        db.parent.mkdir()
        cwd = os.getcwd()
        os.chdir(tmp)  # a relative path a request might smuggle would land here
        handler = Tracebacks()
        logging.getLogger().addHandler(handler)
        statuses: list[int] = []
        unexpected, internal = [], []
        try:
            config = ServiceConfig(db_url=f"sqlite:///{db}", solve_workers=0, port=8000)
            before = sorted(p.name for p in tmp.iterdir())
            with TestClient(create_app(config), base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as c:
                for route, kwargs, expect in service_cases(rng, n, victim, tmp):
                    r = c.post(route, **kwargs)
                    statuses.append(r.status_code)
                    if "the solver failed on this problem" in r.text or "Traceback" in r.text:
                        internal.append((route, r.status_code, r.text[:200]))
                    if r.status_code >= 500 or ("status" in expect and r.status_code != expect["status"]):
                        unexpected.append((route, r.status_code, r.text[:200]))
        finally:
            os.chdir(cwd)
            logging.getLogger().removeHandler(handler)
        after = sorted(p.name for p in tmp.iterdir())
        lost = int(victim.read_text() != "echo hello\n") + len(set(after) - set(before)) + len(set(before) - set(after))
        svc_files = sorted(p.name for p in (tmp / "svc").iterdir() if not p.name.startswith("mpq.db"))
        lost += len(svc_files)
    return {"inputs": len(statuses), "5xx": sum(s >= 500 for s in statuses), "tracebacks": handler.count, "lost": lost,
            "unexpected": unexpected, "internal": internal, "logged": handler.seen, "by_status": {s: statuses.count(s) for s in sorted(set(statuses))}}


def run_cli() -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cwd = os.getcwd()
        os.chdir(tmp)
        os.environ["MPQ_CACHE_DIR"] = str(tmp / ".cache")
        os.environ.pop("MPQ_TOKEN", None)
        try:
            outcomes = [run_case(case, tmp) for case in cases(tmp)]
        finally:
            os.chdir(cwd)
    codes: dict = {}
    for o in outcomes:
        codes[o.code] = codes.get(o.code, 0) + 1
    return {"inputs": len(outcomes), "tracebacks": sum(o.traceback for o in outcomes), "lost": sum(bool(o.data_lost) for o in outcomes),
            "undocumented": [" ".join(o.case.argv) for o in outcomes if not o.ok], "by_code": codes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--service", type=int, default=300, help="random malformed service requests (plus the fixed security cases)")
    args = ap.parse_args()
    svc = run_service(args.service)
    cli = run_cli()
    print(f"service: {svc['inputs']} inputs, {svc['5xx']} 5xx, {svc['tracebacks']} tracebacks logged, {svc['lost']} files created "
          f"or changed outside the server's database; statuses {svc['by_status']}")
    print(f"  answers carrying internal exception text instead of a field: {len(svc['internal'])}")
    for u in svc["internal"][:5]:
        print(f"    {u}")
    for u in svc["unexpected"]:
        print(f"  unexpected status: {u}")
    for t in svc["logged"]:
        print(f"  traceback logged: {t}")
    print(f"cli: {cli['inputs']} commands, {cli['tracebacks']} tracebacks, {cli['lost']} with data lost, "
          f"{len(cli['undocumented'])} without a named error and documented exit code; exit codes {cli['by_code']}")
    for u in cli["undocumented"]:
        print(f"  not named: mpq {u}")
    total = svc["inputs"] + cli["inputs"]
    print(f"total: {total} inputs tried, {svc['5xx']} 5xx, {svc['tracebacks'] + cli['tracebacks']} tracebacks, "
          f"{svc['lost'] + cli['lost']} data lost")


if __name__ == "__main__":
    main()
