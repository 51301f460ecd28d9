"""A study's settings (mpq.search.study): the problem it searches, and joining one that is not there."""
from __future__ import annotations

import pytest

from mpq.search import StudyMismatch, StudySearch, join_study
from mpq.search.study import problem_fingerprint
from mpq.solvers import get_solver

from tests.helpers.problems import seeded_problem as random_problem


def test_joining_a_study_of_another_problem_names_both_fingerprints(sqlite_url):
    url = sqlite_url
    first, other = random_problem(12), random_problem(13)
    StudySearch(get_solver("evolutionary", trials=3), url, "s").search(first)
    with pytest.raises(StudyMismatch) as e:
        StudySearch(get_solver("evolutionary", trials=3), url, "s").search(other)
    assert problem_fingerprint(first) in str(e.value) and problem_fingerprint(other) in str(e.value)
    with pytest.raises(StudyMismatch) as e:
        join_study(url, "s", problem=other)
    assert problem_fingerprint(first) in str(e.value) and problem_fingerprint(other) in str(e.value)


def test_joining_a_study_that_does_not_exist_says_how_to_create_it(sqlite_url):
    with pytest.raises(StudyMismatch, match="no study named 'nope'.*mpq solve problem.json --solver evolutionary"):
        join_study(sqlite_url, "nope")
