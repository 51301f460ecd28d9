"""Latency tables: profiled per layer shape and option, read from JSON or CSV, priced into problems and plans."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mpq.cli import main
from mpq.cost import CandidateSet
from mpq.errors import DocumentError
from mpq.graph import discover
from mpq.latency import LatencyError, load_latency_table, measure_latency, option_latencies, profile, realize
from mpq.pipeline import plan_model
from mpq.schema import LatencyTable, json_schema, parse_document
from mpq.workload import Workload

from tests.helpers.models import mlp_batches, tiny_mlp

CANDS = CandidateSet(bits=(4, 8, 16), a_bits=(None, 8))


def _workload(width: int = 8) -> Workload:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    return Workload(model, mlp_batches((32, 32)), nn.functional.cross_entropy, name="latency-mlp")


def test_profile_times_every_layer_and_option_with_the_kernel_that_runs_it(one_thread):
    w = _workload()
    table = profile(w, discover(w), CANDS.specs(), repeats=3, warmup=1, threads=1)
    doc = parse_document(json.loads(table.model_dump_json(by_alias=True)), LatencyTable)
    assert doc.schema_ == "mpq.latency/v1" and doc.threads == 1
    shapes = {tuple(e.shape) for e in doc.entries}
    assert shapes == {(64, 8), (64, 64), (4, 64)}
    assert {e.option for e in doc.entries} == set(CANDS.specs())
    by = {(tuple(e.shape), e.option): e for e in doc.entries}
    assert by[((64, 64), "fp16")].kernel == "float"
    assert by[((64, 64), "int8")].kernel == "torchao.Int8WeightOnlyConfig"
    assert by[((64, 64), "int8-a8")].kernel == "torchao.Int8DynamicActivationInt8WeightConfig"
    assert all(e.ms > 0 and e.input == [32, e.shape[1]] for e in doc.entries)
    timing = doc.models["latency-mlp"]
    assert timing.float_ms > 0 and timing.fingerprint == w.fingerprint()
    assert "mpq.latency/v1" in json.dumps(json_schema("latency"))


def _csv(tmp_path, fast: str, slow_ms: float = 1.0):
    """A user-written table: ``fast`` takes 0.1 ms on every shape, everything else ``slow_ms``."""
    rows = ["shape,option,ms,spread_ms"]
    for shape in ("64x8", "64x64", "4x64"):
        for oid in CANDS.specs():
            rows.append(f"{shape},{oid},{0.1 if oid == fast else slow_ms},0.01")
    path = tmp_path / "lat.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_user_csv_table_prices_options_and_the_plan_meets_the_latency_budget(tmp_path):
    w = _workload()
    table = load_latency_table(_csv(tmp_path, fast="int4"))
    r = plan_model(w, {"max_latency_ms": 1.0}, estimator="weight-error", candidates=CANDS, latency_table=table)
    assert [l.option for l in r.plan.layers] == ["int4"] * 3  # only int4 fits 3 layers in 1 ms
    assert r.plan.totals.latency_ms == pytest.approx(0.3)
    assert r.predicted_latency_ms == pytest.approx(0.3) and r.latency_spread_ms == pytest.approx(0.03)
    loose = plan_model(w, {"max_latency_ms": 10.0}, estimator="weight-error", candidates=CANDS, latency_table=table)
    assert all(l.option == "fp16" for l in loose.plan.layers)  # time to spare: no distortion


def test_a_table_without_the_layer_shape_or_option_is_refused_by_name(tmp_path):
    w = _workload()
    path = tmp_path / "lat.csv"
    path.write_text("shape,option,ms\n64x8,int8,0.1\n")
    with pytest.raises(LatencyError, match=r"layer '0' \(shape 64x8\) at option 'fp16'; it has \['int8'\]"):
        option_latencies(load_latency_table(path), discover(w), ["fp16"])
    path.write_text("shape,option,ms\n64by8,int8,0.1\n")
    with pytest.raises(DocumentError, match="row 2: shape must be positive integers joined by x"):
        load_latency_table(path)
    with pytest.raises(DocumentError, match="max_latency_ms needs each option's latency"):
        plan_model(w, {"max_latency_ms": 1.0}, estimator="weight-error", candidates=CANDS)


def test_an_entry_timed_on_another_input_scales_by_input_elements():
    graph = discover(_workload())
    table = LatencyTable(entries=[{"shape": [64, 8], "option": "int8", "ms": 2.0, "spread_ms": 0.2, "input": [64, 8]},
                                  {"shape": [64, 64], "option": "int8", "ms": 1.0},
                                  {"shape": [4, 64], "option": "int8", "ms": 1.0, "input": [32, 64]}])
    got = option_latencies(table, graph, ["int8"], {"0": [32, 8], "2": [32, 64], "4": [32, 64]})
    assert got["0"]["int8"] == pytest.approx((1.0, 0.1))  # half the rows: half the time
    assert got["2"]["int8"] == (1.0, 0.0) and got["4"]["int8"] == (1.0, 0.0)


def test_profile_then_plan_under_latency_budget_measures_within_budget_plus_spread(tmp_path, one_thread):
    """Loose on a loaded machine: the realized plan's measured time stays within a few times X + spread."""
    w = _workload()
    out = tmp_path / "lat.json"
    out.write_text(profile(w, discover(w), CANDS.specs(), repeats=5, threads=1).model_dump_json(by_alias=True))
    table = load_latency_table(out)
    int8 = sum(ms for ms, _ in (row["int8"] for row in option_latencies(table, discover(w), ["int8"]).values()))
    x = (int8 + table.models[w.name].overhead_ms) * 1.2  # uniform int8 fits: the budget is feasible
    r = plan_model(w, {"max_latency_ms": x, "max_avg_bits": 12}, estimator="weight-error", candidates=CANDS, latency_table=table)
    assert r.predicted_latency_ms <= x + 1e-9 and r.plan.totals.avg_bits <= 12
    measured, _ = measure_latency(realize(w.model, r.plan), w, threads=1, repeats=9)
    assert measured <= 3 * (x + r.latency_spread_ms)


def test_cli_profile_then_plan_with_the_table(tmp_path, capsys, one_thread):
    lat, plan = tmp_path / "lat.json", tmp_path / "plan.json"
    assert main(["profile", "--bits", "8,16", "--repeats", "2", "--warmup", "1", "--threads", "1", "-o", str(lat)]) == 0
    table = load_latency_table(lat)
    timing = table.models["mpq.examples.digits:workload"]
    budget = timing.overhead_ms + sum(e.ms for e in table.entries if e.option == "int8") * 1.2
    assert main(["plan", "--estimator", "weight-error", "--bits", "8,16", "--latency-table", str(lat), "--no-eval", "--quiet",
                 "--budget", f"latency_ms={budget}", "--budget", "avg_bits=12", "-o", str(plan)]) == 0
    out = capsys.readouterr().out
    assert "predicted latency" in out and "rest of the model (profiled)" in out
    assert main(["schema", "latency"]) == 0
