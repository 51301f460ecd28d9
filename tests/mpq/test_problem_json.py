"""The JSON problem reader that builds columns (mpq.problem_json) agrees with the JSON models: on every
generated document, valid or broken, it either gives the models' problem as columns or steps aside,
so a bad document always gets the models' error (which layer, which field, what was expected)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpq.cli import main
from mpq.columnar import ProblemColumns
from mpq.problem_files import load_problem
from mpq.errors import DocumentError
from mpq.problem_json import KNOWS_THE_MODELS, read_columns
from mpq.schema import MAX_SIZE, Problem, load_document

from tests.helpers.problems import HAND

#: JSON values a broken field may hold: each kind the models treat differently
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.sampled_from([0, 1, 2**53, 2**53 + 1, 2**63, 2**70, -1]),
    st.sampled_from([0.0, 0.5, 1.0, 4.0, -0.5, 1e300, 1e-320]), st.text(max_size=3),
    st.sampled_from(["int", "fp8_e4m3", "float", "nvfp4", "2:4", "unstructured", "4", ""]),
    st.lists(st.integers(-1, 3), max_size=3), st.just({}),
)


@st.composite
def option(draw, k: int) -> dict:
    fmt = draw(st.sampled_from(["int", "int", "float", "fp8_e4m3", "fp4_e2m1"]))
    w_bits = {"float": 16, "fp8_e4m3": 8, "fp4_e2m1": 4}.get(fmt) or draw(st.integers(2, 8))
    bits = draw(st.integers(0, 10**6))
    o = {"id": f"o{k}", "w_bits": w_bits, "format": fmt, "bytes": -(-bits // 8), "distortion": draw(st.floats(-1, 10))}
    if draw(st.booleans()):
        o["bits"] = bits
    else:
        o["bytes"] = bits  # bits default to 8 * bytes
    optional = {
        "group_size": st.one_of(st.none(), st.sampled_from([32, 128])), "symmetric": st.booleans(),
        "prune_ratio": st.sampled_from([0.0, 0.25, 0.5]), "a_bits": st.one_of(st.none(), st.sampled_from([8, 16])),
        "bitops": st.one_of(st.none(), st.integers(0, 10**9)),
        "latency_ms": st.one_of(st.none(), st.floats(0, 5), st.integers(0, 3)),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            o[name] = draw(values)
    if o.get("prune_ratio") == 0.5 and draw(st.booleans()):
        o["prune_structure"] = "2:4"
    return o


@st.composite
def problem_doc(draw) -> dict:
    layers = []
    for i in range(draw(st.integers(1, 4))):
        layer = {"name": f"l{i}", "params": draw(st.integers(0, 10**6)),
                 "options": [draw(option(k)) for k in draw(st.lists(st.integers(0, 5), min_size=1, max_size=4, unique=True))]}
        if draw(st.booleans()):
            layer["shape"] = draw(st.lists(st.integers(1, 64), min_size=1, max_size=3))
        if draw(st.booleans()):
            layer["macs"] = draw(st.integers(0, 10**6))
        if draw(st.booleans()):
            start = draw(st.integers(0, 8))
            layer.update(module=f"m{i}", channels=[start, start + draw(st.integers(1, 8))])
        layers.append(layer)
    doc = {"schema": "mpq.problem/v1", "layers": layers,
           "constraints": {draw(st.sampled_from(["max_bytes", "max_avg_bits", "max_bitops", "max_latency_ms"])): draw(st.floats(0.5, 1e9))}}
    if draw(st.booleans()):
        doc["model"] = {"name": "m", "fingerprint": draw(st.one_of(st.none(), st.just("sha256:0")))}
    if draw(st.booleans()):
        doc["estimator"] = draw(st.one_of(st.none(), st.just("hessian-trace")))
    return doc


@st.composite
def broken(draw, doc: dict) -> dict:
    """``doc`` with one object changed: a field set to an odd value, removed, or an unknown one added."""
    layer = draw(st.sampled_from(doc["layers"]))
    if draw(st.integers(0, 9)) == 0:  # a name or an option id twice
        if len(doc["layers"]) > 1:
            doc["layers"][1]["name"] = doc["layers"][0]["name"]
        elif len(layer["options"]) > 1:
            layer["options"][1]["id"] = layer["options"][0]["id"]
    target = draw(st.sampled_from([doc, doc["constraints"], layer, draw(st.sampled_from(layer["options"]))]))
    action = draw(st.sampled_from(["set", "set", "set", "remove", "add"]))
    keys = sorted(target) or ["x"]
    if action == "remove":
        target.pop(draw(st.sampled_from(keys)), None)
    elif action == "add":
        target[draw(st.sampled_from(["colour", "ties", "pairs", "bits", "module"]))] = draw(ODD_VALUES)
    else:
        target[draw(st.sampled_from(keys))] = draw(ODD_VALUES)
    return doc


def models_read(text: str, tmp_path) -> Problem | str:
    """What the JSON models make of the document: the problem, or the error message."""
    path = tmp_path / "p.json"
    path.write_text(text)
    try:
        return load_document(path, Problem)
    except DocumentError as e:
        return str(e)


def assert_same_columns(fast: ProblemColumns, problem: Problem) -> None:
    want = ProblemColumns.from_problem(problem)
    assert fast.arrays.keys() == want.arrays.keys()
    for name, a in want.arrays.items():
        b = fast.arrays[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name
    assert (fast.constraints, fast.model, fast.estimator, fast.ties, fast.pairs) == (
        want.constraints, want.model, want.estimator, want.ties, want.pairs)


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])


def test_the_reader_knows_every_field_of_the_models():
    assert KNOWS_THE_MODELS  # a field added to a model must be taught to mpq/problem_json.py


@SETTINGS
@given(doc=problem_doc())
def test_a_valid_document_reads_as_the_models_read_it(doc, tmp_path):
    text = json.dumps(doc)
    problem = models_read(text, tmp_path)
    fast = read_columns(text)
    if isinstance(problem, str):  # a generated budget that names a null column, a size sum too large
        assert fast is None, problem
        return
    nulls = {"max_bitops": "bitops", "max_latency_ms": "latency_ms"}
    constrained_null = any(o.get(nulls.get(c, "-"), 0) is None or (nulls.get(c) and nulls[c] not in o)
                           for c in doc["constraints"] for l in doc["layers"] for o in l["options"])
    zero_params = "max_avg_bits" in doc["constraints"] and not sum(l["params"] for l in doc["layers"])
    if constrained_null or zero_params:
        assert fast is None  # the models' path names what is missing when the problem is compiled
        return
    assert fast is not None, "the reader stepped aside from a valid document it should take"
    assert_same_columns(fast, problem)


@SETTINGS
@given(data=st.data())
def test_a_broken_document_gets_the_models_error(data, tmp_path):
    doc = data.draw(broken(data.draw(problem_doc())))
    text = json.dumps(doc)
    problem = models_read(text, tmp_path)
    fast = read_columns(text)
    if isinstance(problem, str):
        assert fast is None, f"the reader took a document the models refuse: {problem}"
    elif fast is not None:
        assert_same_columns(fast, problem)


@pytest.mark.parametrize("text", [
    '{"schema": "mpq.problem/v1", "layers": [], "constraints": {"max_bytes": 1}}',
    '{"schema": "mpq.problem/v1", "layers": [{"name": "a", "params": 1, "options": [{"id": "x", "w_bits": 4, '
    '"bytes": 1, "distortion": NaN}]}], "constraints": {"max_bytes": 1}}',
    '{"schema": "mpq.problem/v1", "layers": [{"name": "a", "params": 1, "options": [{"id": "x", "w_bits": 4, '
    '"bytes": 1, "distortion": 1e400}]}], "constraints": {"max_bytes": 1}}',
    '{"schema": "mpq.problem/v1", "layers": [{"name": "a", "params": 1, "options": [{"id": "x", "w_bits": 4.0, '
    '"bytes": 1, "distortion": 1}]}], "constraints": {"max_bytes": 1}}',
    f'{{"schema": "mpq.problem/v1", "layers": [{{"name": "a", "params": {MAX_SIZE}, "options": [{{"id": "x", "w_bits": 4, '
    f'"bytes": 1, "distortion": 1}}]}}, {{"name": "b", "params": {MAX_SIZE}, "options": [{{"id": "x", "w_bits": 4, '
    '"bytes": 1, "distortion": 1}]}], "constraints": {"max_bytes": 1}}',
    '{"schema": "mpq.problem/v1", "layers": [{"name": "a", "params": 1, "options": [{"id": "x", "w_bits": 4, '
    '"bytes": 1, "distortion": 1}]}], "ties": [["a", "b"]], "constraints": {"max_bytes": 1}}',
    '[1, 2', '"a string"', '{"schema": "mpq.problem/v1"}',
])
def test_documents_the_reader_leaves_to_the_models(text):
    assert read_columns(text) is None


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["layers"][0]["options"][0].pop("bytes"), "layers.0.options.0.bytes: Field required"),
    (lambda d: d["layers"][1]["options"][0].update(w_bits=40), "layers.1.options.0.w_bits: Input should be less than or equal to 32"),
    (lambda d: d["layers"][2].update(colour="red"), "layers.2.colour: Extra inputs are not permitted"),
    (lambda d: d["layers"][0]["options"][1].update(id=d["layers"][0]["options"][0]["id"]), "appears twice"),
    (lambda d: d["layers"][0]["options"][0].update(bytes=-1), "layers.0.options.0.bytes: Input should be greater than or equal to 0"),
    (lambda d: (d["layers"][1]["options"][2].pop("bitops"), d.update(constraints={"max_bitops": 10**9})),
     "layer 'features.3', option 'int8': bitops is null, but the problem constrains max_bitops"),
])
def test_mpq_solve_names_the_layer_and_field_of_a_bad_json_problem(tmp_path, capsys, mutate, message):
    doc = json.loads(json.dumps(HAND))
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    assert main(["solve", str(path), "-o", str(tmp_path / "plan.json")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "plan.json").exists()


def test_a_budget_given_on_the_command_line_that_names_a_null_column_is_refused(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(HAND))
    assert isinstance(load_problem(path, columns=True), ProblemColumns)
    assert main(["solve", str(path), "--budget", "latency_ms=5"]) == 2
    assert "layer 'features.0', option 'int2': latency_ms is null, but the problem constrains max_latency_ms" in capsys.readouterr().err


def test_a_problem_from_a_pipe_is_read_once_even_when_the_models_read_it(tmp_path, capsys):
    import os
    import threading

    doc = json.loads(json.dumps(HAND))
    doc["layers"][0]["options"][0].pop("bytes")
    fifo = tmp_path / "problem.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(json.dumps(doc)), daemon=True)
    writer.start()
    codes = []
    solver = threading.Thread(target=lambda: codes.append(main(["solve", str(fifo)])), daemon=True)
    solver.start()
    solver.join(timeout=60)  # reading the pipe a second time would wait for a writer forever
    assert codes == [2] and "layers.0.options.0.bytes: Field required" in capsys.readouterr().err
