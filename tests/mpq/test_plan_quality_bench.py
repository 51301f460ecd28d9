"""The plan-quality benchmark's own mechanics: random plans fit, peers' formats and sizes are mpq's accounting."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from mpq.plan import build_plan, violations
from mpq.schema import SolverInfo
from tests.helpers.problems import random_problem

BENCH = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def pq():
    sys.path.insert(0, str(BENCH))  # plan_quality imports peers_env from benchmarks/ and its peers' helpers
    try:
        spec = importlib.util.spec_from_file_location("plan_quality", BENCH / "plan_quality.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def test_random_allocations_fit_the_cap_and_repeat_for_a_seed(pq):
    for seed in range(5):
        problem = random_problem(np.random.default_rng(seed), n_layers=8, slack=0.3)
        choice = pq.random_choice(problem, seed)
        assert choice == pq.random_choice(problem, seed)
        plan = build_plan(problem, choice, SolverInfo(name="random", status="feasible", objective=0.0))
        assert not violations(plan.totals, problem.constraints)


def test_peer_formats_cost_each_format_at_its_average_bits_in_mpq_accounting(pq):
    problem = random_problem(np.random.default_rng(0), n_layers=6, ragged=False, n_options=4)
    formats, sizes = pq.peer_formats(problem)
    assert formats and "fp16" not in {f["id"] for f in formats}
    for f in formats:
        plan = build_plan(problem, {l.name: f["id"] for l in problem.layers}, SolverInfo(name="u", status="feasible", objective=0.0))
        assert f["effective_bits"] == pytest.approx(8 * plan.totals.bytes / problem.total_params)
        assert pq.shared.plan_bytes({l.name: f["id"] for l in problem.layers}, sizes) == plan.totals.bytes


def test_a_peer_plan_missing_a_layer_is_refused_by_name(pq):
    sizes = {"a": {"int4": 10.0}, "b": {"int4": 10.0}}
    with pytest.raises(SystemExit, match="'b'"):
        pq.shared.plan_bytes({"a": "int4"}, sizes)
    with pytest.raises(SystemExit, match="int3"):
        pq.shared.plan_bytes({"a": "int4", "b": "int3"}, sizes)


def test_paired_comparison_rests_on_per_text_differences(pq):
    import torch

    ref = torch.nn.functional.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    base = pq.task_metrics(ref, torch.nn.functional.normalize(ref + 0.30 * torch.randn(40, 8), dim=1))
    # a plan uniformly a little better on every text: its own SE hides the gain, the paired SE does not
    better = {"per_text": {m: [v + 0.002 for v in base["per_text"][m]] for m in ("cosine", "recall10")}}
    diff, se = pq.paired(better, base, "cosine")
    assert diff == pytest.approx(0.002) and se < 1e-9 < base["cosine_se"]
    assert pq.verdict(diff, se) == "win" and pq.verdict(-diff, se) == "loss" and pq.verdict(0.0, 0.01) == "tie"
    rows = [{"model": "m", "granularity": "channel", "budget": 4.0, "method": m, **metrics}
            for m, metrics in (("mpq default (mpq plan)", better), ("uniform int4", base), ("random (seed 0)", base),
                               ("random (seed 1)", better))]
    rows.append({**rows[1], "method": "NNCF int4-g128/int8", "over_budget": True})
    lines = []
    pq.comparisons(rows, lines.append)
    assert any("against uniform int4: 2 wins, 0 ties, 0 losses" in l for l in lines)
    assert any("against random: 2 wins, 2 ties, 0 losses" in l for l in lines)
    assert not any("against NNCF" in l for l in lines)  # over budget: shown, not counted
    assert any("NNCF int4-g128/int8" in l and "not counted" in l for l in lines)
    assert sum("mpq default" in l for l in lines) == 0  # the default is never compared with itself


def test_evaluation_text_from_packages_is_prose_and_never_calibration(pq):
    texts = pq.shared.texts("eval", 40, source="packages")
    assert len(set(texts)) == 40 and texts == pq.shared.texts("eval", 40, source="packages")
    assert not set(texts) & set(pq.shared.texts("calib", 200))
    assert not any(pq.shared._reference_like(t) for t in texts)
    assert pq.shared._reference_like("Parameters ---------- G : graph") and pq.shared._reference_like("weight : str, optional")
    with pytest.raises(ValueError, match="evaluation only"):
        pq.shared.texts("calib", 4, source="packages")
    with pytest.raises(ValueError, match="source must be one of"):
        pq.shared.texts("eval", 4, source="web")


def test_replay_measures_saved_plans_again_and_compares_them(pq, tmp_path, monkeypatch):
    import json
    import torch

    problem = random_problem(np.random.default_rng(1), n_layers=4, slack=0.5)
    measured, seeds = [], []

    class Bench:  # records which plans it measures
        def __init__(self, name, args):
            self.name = name
            seeds.append(args.calib_seed)  # the saved run's calibration texts, not this run's default

        def problem(self, candidates, max_bytes):
            return problem

        def evaluate(self, plan):
            measured.append({l.name: l.option for l in plan.layers})
            ref = torch.nn.functional.normalize(torch.randn(30, 4, generator=torch.Generator().manual_seed(0)), dim=1)
            return pq.task_metrics(ref, torch.nn.functional.normalize(ref + 0.2 * torch.ones(4), dim=1))

    monkeypatch.setattr(pq, "Bench", Bench)
    choices = [pq.random_choice(problem, s) for s in (0, 1)]
    rows = [{"model": "m", "granularity": "channel", "budget": 4.0, "method": m, "MB": 1.0, "avg_bits": 4.0, "plan_s": 1.0,
             "calib_objective": 0.1, "over_budget": False, "note": "", "calib_texts": 8, "calib_seed": 3, "eval_texts": 4, "plan": c,
             "cosine": 0.0, "cosine_se": 0.0, "recall10": 0.0, "recall10_se": 0.0}
            for m, c in (("mpq default (mpq plan)", choices[0]), ("ModelOpt auto_quantize gradient", choices[1]))]
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(rows))
    out = tmp_path / "replayed.json"
    assert pq.main(["--replay", str(saved), "--eval", "30", "--eval-text", "packages", "--json", str(out)]) == 0
    assert measured == choices and seeds == [3]
    replayed = json.loads(out.read_text())
    assert [r["eval_text"] for r in replayed] == ["packages"] * 2 and all(r["cosine"] > 0.9 for r in replayed)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit, match="list of rows"):
        pq.main(["--replay", str(bad)])


def test_calibration_seed_draws_other_calibration_texts_never_evaluation_ones(pq):
    calib0, calib1 = pq.shared.texts("calib", 32), pq.shared.texts("calib", 32, seed=1)
    assert calib0 != calib1 and len(set(calib0) & set(calib1)) < 32
    assert not (set(calib0) | set(calib1)) & set(pq.shared.texts("eval", 256))
