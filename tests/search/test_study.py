"""Search studies on one machine (SQLite, journal file): continuation, the clear errors, the CLI, the measured objective."""
from __future__ import annotations

import json
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest

from mpq.cli import main
from mpq.plan import violations
from mpq.schema import Plan, parse_document
from mpq.search import (
    SearchSpec, StorageUnreachable, StudyMismatch, StudySearch, join_study, mask_url, open_storage, open_study,
)
from mpq.search.study import problem_fingerprint
from mpq.solvers import get_solver

from tests.helpers.problems import seeded_problem as random_problem


@pytest.fixture
def db_dir():
    """A scratch directory, in memory when the machine has /dev/shm (SQLite commits are fsync-bound)."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="mpq-search-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sqlite_url(db_dir: Path) -> str:
    return f"sqlite:///{db_dir / 'search.db'}"


def states(url: str, name: str) -> dict[str, int]:
    study, _ = join_study(url, name)
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


@pytest.mark.parametrize("scheme", ["sqlite", "journal"])
def test_a_study_continues_after_a_restart_without_repeating_or_losing_trials(db_dir, scheme):
    url = sqlite_url(db_dir) if scheme == "sqlite" else f"journal:///{db_dir / 'search.log'}"
    problem = random_problem(11)
    ran = []
    first = StudySearch(get_solver("evolutionary", trials=16, seed=0,
                                   progress=lambda f, b: ran.append(f), should_stop=lambda: len(ran) >= 6), url, "s")
    interrupted = first.search(problem)  # the process "dies" after 6 trials
    assert interrupted.trials.get("COMPLETE") == 6
    study, spec = join_study(url, "s")
    before = {t.number: t.params for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"}

    resumed = StudySearch(get_solver("evolutionary", trials=16, seed=1), url, "s").search(problem)
    assert resumed.trials == {"COMPLETE": 16}  # the 6 kept, 10 more, no seed enqueued twice
    after = {t.number: t.params for t in study.get_trials(deepcopy=False)}
    assert all(after[n] == p for n, p in before.items())
    assert resumed.best.solver.gap == pytest.approx(0.0, abs=1e-12)  # the seeded DP optimum is kept

    grown = StudySearch(get_solver("evolutionary", trials=20), url, "s").search(problem)
    assert grown.trials == {"COMPLETE": 20}
    assert join_study(url, "s")[1].trials == 20


def test_joining_a_study_of_another_problem_names_both_fingerprints(db_dir):
    url = sqlite_url(db_dir)
    first, other = random_problem(12), random_problem(13)
    StudySearch(get_solver("evolutionary", trials=3), url, "s").search(first)
    with pytest.raises(StudyMismatch) as e:
        StudySearch(get_solver("evolutionary", trials=3), url, "s").search(other)
    assert problem_fingerprint(first) in str(e.value) and problem_fingerprint(other) in str(e.value)
    with pytest.raises(StudyMismatch) as e:
        join_study(url, "s", problem=other)
    assert problem_fingerprint(first) in str(e.value) and problem_fingerprint(other) in str(e.value)


def test_a_study_name_that_exists_with_other_settings_is_refused(db_dir):
    url = sqlite_url(db_dir)
    problem = random_problem(14)
    StudySearch(get_solver("evolutionary", trials=3, population=8), url, "s").search(problem)
    with pytest.raises(StudyMismatch, match=r"other settings: population 8 \(this run: 10\)"):
        StudySearch(get_solver("evolutionary", trials=3, population=10), url, "s").search(problem)
    with pytest.raises(StudyMismatch, match=r"objective 'additive' \(this run: 'measured'\)"):
        StudySearch(get_solver("evolutionary", trials=3, population=8,
                               objective="measured", evaluate_plan=lambda plan: 0.0), url, "s").search(problem)
    # a study some other tool created holds no mpq settings
    import optuna

    optuna.create_study(study_name="foreign", storage=open_storage(url, heartbeat_s=None), directions=["minimize", "minimize"])
    with pytest.raises(StudyMismatch, match="holds no mpq search settings"):
        StudySearch(get_solver("evolutionary", trials=3), url, "foreign").search(problem)


def test_an_unreachable_storage_names_the_url_with_the_password_masked():
    url = "postgresql://alice:s3cret-pw@127.0.0.1:1/mpq"
    with pytest.raises(StorageUnreachable) as e:
        open_storage(url)
    assert "postgresql://alice:***@127.0.0.1:1/mpq" in str(e.value)
    assert "s3cret-pw" not in str(e.value)
    assert mask_url(url) == "postgresql://alice:***@127.0.0.1:1/mpq"
    with pytest.raises(StorageUnreachable, match="not a URL"):
        open_storage("search.db")


def test_joining_a_study_that_does_not_exist_says_how_to_create_it(db_dir):
    with pytest.raises(StudyMismatch, match="no study named 'nope'.*mpq solve problem.json --solver evolutionary"):
        join_study(sqlite_url(db_dir), "nope")


def test_cli_solve_creates_and_continues_a_study_and_status_prints_design_plans(db_dir, tmp_path, capsys):
    url = sqlite_url(db_dir)
    problem = random_problem(15)
    path = tmp_path / "problem.json"
    path.write_text(problem.model_dump_json(by_alias=True))
    base = ["solve", str(path), "--solver", "evolutionary", "--storage", url, "--study", "cli", "--quiet"]
    assert main(base + ["--trials", "8", "-o", str(tmp_path / "plan.json")]) == 0
    assert main(base + ["--trials", "12", "-o", str(tmp_path / "plan.json")]) == 0
    plan = parse_document(json.loads((tmp_path / "plan.json").read_text()), Plan)
    assert plan.solver.name == "evolutionary" and violations(plan.totals, problem.constraints) == []
    capsys.readouterr()

    assert main(["search", "status", "--storage", url, "--study", "cli", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["trials"]["COMPLETE"] == 12 and status["target"] == 12
    assert status["fingerprint"] == problem_fingerprint(problem)
    plans = [parse_document(p, Plan) for p in status["plans"]]
    assert plans and all(violations(p.totals, problem.constraints) == [] for p in plans)

    assert main(["search", "status", "--storage", url, "--study", "cli"]) == 0
    out = capsys.readouterr().out
    assert "12/12 complete" in out and "non-dominated feasible plans" in out

    assert main(base + ["--population", "9"]) == 2  # other settings: refused with an error line, not a traceback
    assert "already exists with other settings" in capsys.readouterr().err


def test_cli_worker_joins_a_study_and_completes_its_trials(db_dir):
    url = sqlite_url(db_dir)
    problem = random_problem(16)
    StudySearch(get_solver("evolutionary", trials=10, should_stop=lambda: True), url, "w").search(problem)
    assert states(url, "w").get("COMPLETE", 0) == 0  # created and seeded, nothing run yet
    assert main(["worker", "--storage", url, "--study", "w", "--trials", "4", "--quiet"]) == 0
    assert states(url, "w")["COMPLETE"] == 4
    assert main(["worker", "--storage", url, "--study", "w", "--quiet"]) == 0
    assert states(url, "w")["COMPLETE"] == 10


# ----------------------------------------------------------------------------------------------
# the measured objective (model-facing)

TINY_WORKLOAD = textwrap.dedent('''
    import torch
    from torch import nn
    from mpq.workload import Workload

    def workload():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
        x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
        return Workload(model, [(x, y)], nn.functional.cross_entropy, name="tinywl:workload")
''')


@pytest.fixture
def tiny_problem(tmp_path, monkeypatch):
    from mpq.cost import CandidateSet, build_problem
    from mpq.graph import discover
    from mpq.pipeline import sensitivities
    from mpq.model_ref import load_workload

    (tmp_path / "tinywl.py").write_text(TINY_WORKLOAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    wl = load_workload("tinywl:workload")
    graph = discover(wl)
    table = sensitivities(wl, "weight-error", graph=graph, use_cache=False)
    return wl, build_problem(graph, table, CandidateSet(bits=(2, 4, 8)), {"max_avg_bits": 5})


def test_measured_objective_evaluates_the_quantized_model_and_restores_its_weights(tiny_problem):
    from mpq.apply import apply_plan
    from mpq.search.measured import measured_objective

    wl, problem = tiny_problem
    before = {k: v.clone() for k, v in wl.model.state_dict().items()}
    plan = get_solver("dp").solve(problem)
    value = measured_objective(wl)(plan)
    assert all((wl.model.state_dict()[k] == v).all() for k, v in before.items())
    assert value == pytest.approx(wl.calibration_loss(apply_plan(wl.model, plan, inplace=False)))
    assert value != pytest.approx(wl.calibration_loss())


def test_a_worker_refuses_a_model_whose_weights_differ_from_the_problems(tiny_problem):
    from mpq.errors import WorkloadError
    from mpq.search.measured import load_measured_objective

    _, problem = tiny_problem
    other = problem.model_copy(update={"model": problem.model.model_copy(update={"fingerprint": "sha256:" + "0" * 64})})
    with pytest.raises(WorkloadError, match="sha256:0000.*every worker must load the same weights"):
        load_measured_objective("tinywl:workload", other)


def test_cli_solve_with_the_measured_objective_reports_measured_losses(tiny_problem, db_dir, tmp_path, capsys):
    _, problem = tiny_problem
    path = tmp_path / "problem.json"
    path.write_text(problem.model_dump_json(by_alias=True))
    url = sqlite_url(db_dir)
    assert main(["solve", str(path), "--solver", "evolutionary", "--storage", url, "--study", "m", "--trials", "10",
                 "--objective", "measured", "--model", "tinywl:workload", "--quiet", "-o", str(tmp_path / "plan.json")]) == 0
    plan = parse_document(json.loads((tmp_path / "plan.json").read_text()), Plan)
    assert plan.solver.gap is None and plan.solver.objective != pytest.approx(plan.totals.distortion)
    spec = join_study(url, "m")[1]
    assert spec.objective == "measured" and spec.model == "tinywl:workload"


def test_an_interrupted_trial_is_enqueued_again_and_completed_by_the_next_run(db_dir):
    url = sqlite_url(db_dir)
    problem = random_problem(17)
    calls = []

    def evaluate_plan(plan):
        calls.append(plan)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return plan.totals.distortion

    with pytest.raises(KeyboardInterrupt):
        StudySearch(get_solver("evolutionary", trials=8, objective="measured",
                               evaluate_plan=evaluate_plan), url, "ctrl-c").search(problem)
    study, _ = join_study(url, "ctrl-c")
    failed = [t for t in study.get_trials() if t.state.name == "FAIL"]
    assert len(failed) == 1
    result = StudySearch(get_solver("evolutionary", trials=8, objective="measured",
                                    evaluate_plan=lambda plan: plan.totals.distortion), url, "ctrl-c").search(problem)
    assert result.trials == {"COMPLETE": 8, "FAIL": 1}
    retry = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == failed[0].params


def test_no_plan_is_measured_twice_across_processes_sharing_a_study(db_dir):
    url = sqlite_url(db_dir)
    problem = random_problem(18, n=3)  # few distinct plans: NSGA-II proposes many repeats
    measured: list[list[tuple]] = [[], []]

    def counting(i):
        def evaluate_plan(plan):
            measured[i].append(tuple(l.option for l in plan.layers))
            return plan.totals.distortion
        return evaluate_plan

    for i, trials in enumerate((15, 30)):  # the second "worker" continues the first one's study
        StudySearch(get_solver("evolutionary", trials=trials, seed=i, objective="measured",
                               evaluate_plan=counting(i)), url, "once").search(problem)
    everything = measured[0] + measured[1]
    assert len(everything) == len(set(everything))
