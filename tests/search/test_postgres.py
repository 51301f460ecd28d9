"""Distributed search on a real PostgreSQL: three workers on one study, one killed with SIGKILL mid-trial.

.ci/run starts a throw-away PostgreSQL and exports MPQ_TEST_POSTGRES_URL (and MPQ_REQUIRE_POSTGRES=1,
so that a PostgreSQL that could not be started fails these tests instead of skipping them).
Locally: `eval "$(.ci/postgres start)"` before pytest, `.ci/postgres stop "$MPQ_POSTGRES_DATA"` after.
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from mpq.plan import violations
from mpq.search import StorageUnreachable, StudySearch, join_study, open_storage
from mpq.search.status import study_status

PG_URL = os.environ.get("MPQ_TEST_POSTGRES_URL")


@pytest.fixture
def pg_url() -> str:
    if not PG_URL:
        if os.environ.get("MPQ_REQUIRE_POSTGRES") == "1":
            pytest.fail("MPQ_REQUIRE_POSTGRES=1 but MPQ_TEST_POSTGRES_URL is not set: PostgreSQL could not be "
                        "installed or started (see the .ci/postgres messages above)")
        pytest.skip("no PostgreSQL: run `eval \"$(.ci/postgres start)\"` (or set MPQ_TEST_POSTGRES_URL) to run these tests")
    return PG_URL


# Each trial evaluates this workload once. The loss writes a marker named for the worker's pid, then
# sleeps: forever-ish for the worker to be killed, briefly (after a gate file appears) for the others.
# Its first call in a process is load_workload's check of batch 0, which is not a trial and passes at once.
SLOW_WORKLOAD = textwrap.dedent('''
    import os, time
    from pathlib import Path
    import torch
    from torch import nn
    from mpq.workload import Workload

    def workload():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
        x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
        markers = os.environ.get("MARKERS")
        calls = []

        def loss(out, target):
            calls.append(1)
            if markers and len(calls) > 1:
                Path(markers, str(os.getpid())).touch()
                while not Path(markers, "go").exists():
                    time.sleep(0.05)
                time.sleep(float(os.environ.get("TRIAL_SLEEP", "0")))
            return nn.functional.cross_entropy(out, target)

        return Workload(model, [(x, y)], loss, name="slowwl:workload")
''')


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_three_workers_one_killed_mid_trial_complete_the_study_with_every_trial_accounted_for(pg_url, tmp_path, monkeypatch):
    from mpq.cost import CandidateSet, build_problem
    from mpq.graph import discover
    from mpq.pipeline import sensitivities
    from mpq.search.measured import measured_objective
    from mpq.solvers import get_solver
    from mpq.model_ref import load_workload

    (tmp_path / "slowwl.py").write_text(SLOW_WORKLOAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    wl = load_workload("slowwl:workload")
    graph = discover(wl)
    problem = build_problem(graph, sensitivities(wl, "weight-error", graph=graph, use_cache=False),
                            CandidateSet(bits=(2, 3, 4, 8)), {"max_avg_bits": 5})
    name, target = f"kill-{uuid.uuid4().hex[:8]}", 12
    # create and seed the study without running a trial: the workers do all of them
    StudySearch(get_solver("evolutionary", trials=target, population=6, seed=0,
                           objective="measured", evaluate_plan=measured_objective(wl),
                           should_stop=lambda: True), pg_url, name, model="slowwl:workload").search(problem)

    # each worker's first trial is one of the seeds (exact, feasible, so measured): all three reach the gate
    study, _ = join_study(pg_url, name)
    assert len([t for t in study.get_trials(deepcopy=False) if t.state.name == "WAITING"]) >= 3

    markers = tmp_path / "markers"
    markers.mkdir()
    cmd = [sys.executable, "-c", "import sys; from mpq.cli import main; sys.exit(main())", "worker", "--storage", pg_url, "--study", name, "--heartbeat", "1", "--quiet"]
    env = {**os.environ, "MARKERS": str(markers), "PYTHONPATH": str(tmp_path)}
    workers = [subprocess.Popen(cmd, cwd=tmp_path, env={**env, "TRIAL_SLEEP": "600" if i == 0 else "0.15"},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(3)]
    victim, others = workers[0], workers[1:]
    try:
        # all three are in the middle of a trial (held at the gate), then one dies without a word
        def all_in_a_trial() -> bool:
            for w in workers:
                if w.poll() is not None:
                    raise AssertionError(f"worker {w.pid} exited with {w.returncode}:\n{w.stdout.read()}")
            return all((markers / str(w.pid)).exists() for w in workers)

        wait_for(all_in_a_trial, 60, "all three workers to start a trial")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        (markers / "go").touch()
        for w in others:
            out, _ = w.communicate(timeout=60)
            assert w.returncode == 0, out
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()

    study, spec = join_study(pg_url, name)
    trials = study.get_trials(deepcopy=False)
    by_state = {s: [t for t in trials if t.state.name == s] for s in ("COMPLETE", "FAIL", "RUNNING", "WAITING")}
    # the study reached its target; concurrent workers may each finish one trial started before it was reached,
    # and no queued trial (the retry) is left behind
    assert target <= len(by_state["COMPLETE"]) <= target + len(others)
    assert not by_state["RUNNING"] and not by_state["WAITING"]
    # the killed worker's trial was failed by the heartbeat and retried, with the same plan, by a survivor
    killed = [t for t in trials if t.user_attrs.get("mpq", {}).get("worker", "").endswith(f":{victim.pid}")]
    assert len(killed) == 1 and killed[0].state.name == "FAIL"
    assert by_state["FAIL"] == killed
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == killed[0].params
    assert retries[0].user_attrs["mpq"]["worker"].split(":")[-1] in {str(w.pid) for w in others}
    # every trial was run by one of the three workers, and counted once
    assert len({t.number for t in trials}) == len(trials)

    status = study_status(pg_url, name)
    assert status.plans
    for plan in status.plans:
        assert violations(plan.totals, problem.constraints) == []
    for a, b in itertools.permutations(status.plans, 2):
        assert not (b.solver.objective <= a.solver.objective and b.totals.bytes <= a.totals.bytes)


def test_postgres_study_continues_after_a_restart(pg_url):
    from mpq.solvers import get_solver

    from tests.helpers.problems import seeded_problem as random_problem

    name = f"resume-{uuid.uuid4().hex[:8]}"
    problem = random_problem(21)
    ran = []
    StudySearch(get_solver("evolutionary", trials=10,
                           progress=lambda f, b: ran.append(f), should_stop=lambda: len(ran) >= 4), pg_url, name).search(problem)
    result = StudySearch(get_solver("evolutionary", trials=10), pg_url, name).search(problem)
    assert result.trials == {"COMPLETE": 10}


def test_wrong_postgres_password_names_the_url_masked(pg_url):
    from sqlalchemy.engine import make_url

    url = make_url(pg_url).set(database="no_such_database_mpq", password="hunter2")
    with pytest.raises(StorageUnreachable) as e:
        open_storage(url.render_as_string(hide_password=False))
    assert "hunter2" not in str(e.value) and "***" in str(e.value) and "no_such_database_mpq" in str(e.value)
