"""One settings contract: estimators and solvers declare their settings; one checker, one error format."""
from __future__ import annotations

import math

import pytest

from mpq.errors import EstimatorSettingsError, SolverSettingsError
from mpq.sensitivity.base import ESTIMATORS, available_estimators, estimator_listing, get_estimator
from mpq.settings import Count, Settings, check_settings, describe
from mpq.solvers.base import SOLVERS, available_solvers, get_solver, solver_listing


@pytest.mark.parametrize("solver, settings, message", [
    ("ilp", {"gap_rel": -1.0}, "solver 'ilp': setting gap_rel=-1.0: expected a value >= 0"),
    ("ilp", {"gap_rel": math.nan}, "solver 'ilp': setting gap_rel=nan: expected a finite number"),
    ("ilp", {"backend": "gurobi"}, "solver 'ilp': setting backend='gurobi': expected 'cbc' or 'highs'"),
    ("lagrangian", {"core_groups": 0}, "solver 'lagrangian': setting core_groups=0: expected a value >= 1"),
    ("lagrangian", {"core_groups": True}, "solver 'lagrangian': setting core_groups=True: expected an integer"),
    ("dp", {"time_limit_s": math.inf}, "solver 'dp': setting time_limit_s=inf: expected a finite number"),
    ("greedy", {"time_limit_s": 0}, "solver 'greedy': setting time_limit_s=0: expected a value > 0"),
    ("evolutionary", {"trials": 0}, "solver 'evolutionary': setting trials=0: expected a value >= 1"),
    ("evolutionary", {"population": 1}, "solver 'evolutionary': setting population=1: expected a value >= 2"),
    ("pareto", {"rule": "max_distortion"}, "solver 'pareto': rule 'max_distortion' needs max_distortion"),
    ("dp", {"beam": 3}, "solver 'dp': unknown setting 'beam'; known: time_limit_s"),
])
def test_bad_solver_settings_name_the_setting_the_value_and_what_was_expected(solver, settings, message):
    with pytest.raises(SolverSettingsError) as err:
        get_solver(solver, **settings)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("estimator, settings, message", [
    ("hessian-trace", {"tol": 0.0}, "estimator 'hessian-trace': setting tol=0.0: expected a value > 0"),
    ("hessian-trace", {"min_probes": 40, "max_probes": 10}, "estimator 'hessian-trace': max_probes (10) must be at least min_probes (40)"),
    ("hessian-eigen", {"sketch": 4}, "estimator 'hessian-eigen': unknown setting 'sketch'; known: seed, device"),
    ("fisher", {"distortion": "kl"}, "estimator 'fisher': setting distortion='kl': expected 'weighted' or 'score'"),
    ("interlayer", {"max_bits": 0}, "estimator 'interlayer': setting max_bits=0: expected a value >= 1"),
    ("measured", {"seed": -1}, "estimator 'measured': setting seed=-1: expected a value >= 0"),
])
def test_bad_estimator_settings_are_settings_errors_in_the_same_format(estimator, settings, message):
    with pytest.raises(EstimatorSettingsError) as err:
        get_estimator(estimator, **settings)
    assert str(err.value).startswith(message)


def test_settings_become_attributes_and_the_cache_key_leaves_out_what_does_not_change_results():
    est = get_estimator("hessian-trace", probes=40, quiet=True, threads=1)
    assert (est.max_probes, est.min_probes, est.quiet) == (40, 32, True)
    assert est.config() == {"seed": 0, "tol": 0.02, "min_probes": 32, "max_probes": 40, "batches": 4, "sketch": 16, "chunk": 32,
                            "embeddings": "proxy"}
    assert get_solver("ilp", backend="highs").backend == "highs"


def test_instances_never_change_class_facts_and_listings_show_the_default_settings():
    assert get_estimator("fisher", distortion="score").per_option is False
    assert ESTIMATORS["fisher"].per_option is True  # the default, weighted, measures per option
    assert get_estimator("layer-importance", metric="zd").needs_data is False
    assert ESTIMATORS["layer-importance"].needs_data is True
    with pytest.raises(AttributeError, match="follows from the estimator's settings"):
        get_estimator("fisher").per_option = False
    listed = {e["name"]: e for e in estimator_listing()}
    assert set(listed) == set(available_estimators())
    for name, entry in listed.items():
        default = get_estimator(name)
        assert (entry["per_option"], entry["needs_data"]) == (default.per_option, default.needs_data)
        assert set(entry["settings"]) == set(ESTIMATORS[name].Settings.model_fields)


def test_solver_listing_reads_the_declarations():
    listed = {s["name"]: s for s in solver_listing()}
    assert set(listed) == set(available_solvers())
    assert listed["ilp"]["settings"]["gap_rel"] == {"default": 1e-9, "minimum": 0, "type": "number",
                                                    "description": SOLVERS["ilp"].Settings.model_fields["gap_rel"].description}
    assert listed["lagrangian"]["settings"]["core_groups"]["minimum"] == 1
    assert listed["auto"]["exact"] is True


def test_the_checker_takes_any_declared_model():
    class Passes(Settings):
        passes: Count = 3

    assert check_settings("thing 'x'", Passes, {}, ValueError).passes == 3
    with pytest.raises(ValueError, match=r"^thing 'x': setting passes='3': expected an integer$"):
        check_settings("thing 'x'", Passes, {"passes": "3"}, ValueError)
    assert describe(Passes) == {"passes": {"default": 3, "minimum": 1, "type": "integer"}}
