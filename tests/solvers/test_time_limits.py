"""Every solver honours its time limit: dp returns a feasible plan with a bound, settings are checked."""
from __future__ import annotations

import time

import numpy as np
import pytest

from mpq.errors import SolverSettingsError, TimeLimitReached
from mpq.schema import Constraints, Option, Problem, ProblemLayer
from mpq.solvers import get_solver


def wide(n_layers: int = 400, n_options: int = 20, seed: int = 0) -> Problem:
    """Many layers with many options of distinct sizes: the exact DP frontier grows large."""
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(n_layers):
        params = int(rng.integers(1000, 5000))
        opts = []
        for k in range(n_options):
            bits = params * (k + 1) + int(rng.integers(0, 50))
            opts.append(Option(id=f"o{k}", w_bits=min(k + 1, 32), bits=bits, bytes=-(-bits // 8),
                               distortion=float(rng.uniform(0.5, 1.5) * 2.0 ** -k)))
        layers.append(ProblemLayer(name=f"l{i}", params=params, options=opts))
    total = sum(l.options[-1].bytes for l in layers)
    return Problem(layers=layers, constraints=Constraints(max_bytes=total * 0.4))


def test_dp_past_its_time_limit_returns_a_feasible_plan_with_a_bound():
    problem = wide()
    t0 = time.perf_counter()
    plan = get_solver("dp", time_limit_s=0.3).solve(problem)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, elapsed  # without the check inside the DP this runs for minutes
    assert plan.solver.status == "feasible" and plan.solver.bound is not None and plan.solver.gap is not None
    assert plan.totals.bytes <= problem.constraints.max_bytes
    assert plan.solver.bound <= plan.solver.objective


def test_pareto_past_its_time_limit_is_a_named_error():
    with pytest.raises(TimeLimitReached) as e:
        get_solver("pareto", time_limit_s=0.2).solve(wide())
    assert "time_limit_s=0.2" in str(e.value) and e.value.exit_code == 4


@pytest.mark.parametrize("solver, setting, value", [
    ("ilp", "gap_rel", float("nan")), ("ilp", "gap_rel", -1), ("lagrangian", "core_groups", -5),
    ("dp", "time_limit_s", -1), ("dp", "time_limit_s", 0), ("auto", "time_limit_s", float("nan")),
    ("pareto", "max_distortion", "abc"), ("evolutionary", "trials", "3"), ("ilp", "time_limit_s", True),
])
def test_nonsense_settings_are_refused_naming_them(solver, setting, value):
    with pytest.raises(SolverSettingsError) as e:
        get_solver(solver, **{setting: value})
    assert setting in str(e.value)


@pytest.mark.parametrize("argv", [["--time-limit", "-1"], ["--time-limit", "0"], ["--time-limit", "nan"],
                                  ["--param", "max_distortion=abc", "--solver", "pareto"], ["--param", "gap_rel=-1", "--solver", "ilp"]])
def test_nonsense_settings_on_the_command_line_exit_2(tmp_path, capsys, argv):
    from tests.helpers.service import problem
    import json

    from mpq.cli import main

    path = tmp_path / "p.json"
    path.write_text(json.dumps(problem()))
    try:
        code = main(["solve", str(path), *argv])
    except SystemExit as e:  # argparse refuses the value itself
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
