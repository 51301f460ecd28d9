"""A search in a shared study (mpq.search.shared): continued after a restart, refused with other settings, an
interrupted trial queued again, no plan measured twice."""
from __future__ import annotations

import pytest

from mpq.search import StudyMismatch, StudySearch, join_study, open_storage
from mpq.solvers import get_solver

from tests.helpers.problems import seeded_problem as random_problem


@pytest.mark.parametrize("scheme", ["sqlite", "journal"])
def test_a_study_continues_after_a_restart_without_repeating_or_losing_trials(db_dir, sqlite_url, scheme):
    url = sqlite_url if scheme == "sqlite" else f"journal:///{db_dir / 'search.log'}"
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


def test_a_study_name_that_exists_with_other_settings_is_refused(sqlite_url):
    url = sqlite_url
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


def test_an_interrupted_trial_is_enqueued_again_and_completed_by_the_next_run(sqlite_url):
    url = sqlite_url
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


def test_no_plan_is_measured_twice_across_processes_sharing_a_study(sqlite_url):
    url = sqlite_url
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
