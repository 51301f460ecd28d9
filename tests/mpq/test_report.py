"""mpq report: per-layer table, measured errors and metrics with a model, the frontier plot with the plan marked."""
from __future__ import annotations

import pytest

from mpq.cli import main
from mpq.model_ref import load_workload
from mpq.pipeline import plan_model
from mpq.report import build_report, layer_output_errors
from mpq.schema import save_document


@pytest.fixture(scope="module")
def planned(tmp_path_factory, one_thread):
    from mpq.cost import CandidateSet

    wl = load_workload(None, calib_batches=1)
    result = plan_model(wl, {"max_avg_bits": 3.5}, estimator="weight-error", candidates=CandidateSet(bits=(2, 4, 8, 16)), use_cache=False)
    d = tmp_path_factory.mktemp("report")
    save_document(result.plan, d / "plan.json")
    save_document(result.problem, d / "problem.json")
    return wl, result, d


def test_report_table_names_every_layer_with_its_option_bits_bytes_and_distortion(planned, capsys):
    _, result, d = planned
    assert main(["report", str(d / "plan.json")]) == 0
    out = capsys.readouterr().out
    for l in result.plan.layers:
        assert l.name in out and l.option in out and f"{l.bytes:,}" in out


def test_measured_layer_errors_are_zero_in_float_and_grow_as_bits_shrink(planned):
    from mpq.evaluate import uniform_plan

    wl, result, _ = planned
    errors = layer_output_errors(wl, result.plan)
    assert set(errors) == {l.name for l in result.plan.layers}
    first = result.plan.layers[0].name
    float16 = layer_output_errors(wl, uniform_plan(result.problem, "fp16"))
    int8, int2 = (layer_output_errors(wl, uniform_plan(result.problem, o))[first] for o in ("int8", "int2"))
    assert max(float16.values()) < 1e-5
    assert 0 < int8 < int2


def test_report_with_model_and_problem_compares_uniform_plans_and_plots_the_plan(planned, tmp_path):
    pytest.importorskip("matplotlib")
    _, result, d = planned
    out = tmp_path / "report.md"
    assert main(["report", str(d / "plan.json"), "--model", "mpq.examples.digits:workload",
                 "--problem", str(d / "problem.json"), "-o", str(out)]) == 0
    text = out.read_text()
    assert "measured output error" in text and "full precision" in text and "uniform" in text and "accuracy" in text
    png = tmp_path / "report.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html_out = tmp_path / "report.html"
    assert main(["report", str(d / "plan.json"), "--problem", str(d / "problem.json"), "-o", str(html_out)]) == 0
    assert "<table>" in html_out.read_text() and "report.png" in html_out.read_text()


def test_report_axis_follows_the_budget_and_the_plan_is_on_the_frontier(planned):
    _, result, _ = planned
    report = build_report(result.plan, None, result.problem)
    assert report.axis == "bits" and report.frontier.axis == "bits"  # an avg_bits budget: the frontier over weight bits
    best_at_size = min(p.distortion for p in report.frontier.points if p.avg_bits <= result.plan.totals.avg_bits + 1e-12)
    assert result.plan.totals.distortion == pytest.approx(best_at_size, rel=1e-9, abs=1e-12)


def test_report_refuses_an_unknown_output_format(planned, capsys):
    _, _, d = planned
    assert main(["report", str(d / "plan.json"), "-o", str(d / "r.pdf")]) == 2
    assert "a report is .md or .html" in capsys.readouterr().err
