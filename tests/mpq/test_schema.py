"""Bad documents are refused with an error that names the field."""
import json

import pytest

from mpq.errors import DocumentError
from mpq.schema import Plan, Problem, SensitivityTable, json_schema, load_document, parse_document


def problem_dict(**over):
    d = {
        "schema": "mpq.problem/v1",
        "layers": [{"name": "fc", "params": 100, "options": [
            {"id": "int4", "w_bits": 4, "bytes": 60, "distortion": 0.1},
            {"id": "int8", "w_bits": 8, "bytes": 110, "distortion": 0.01}]}],
        "constraints": {"max_bytes": 100},
    }
    d.update(over)
    return d


def test_valid_problem_parses_and_fills_bits_from_bytes():
    p = parse_document(problem_dict(), Problem)
    assert p.layers[0].options[0].bits == 480


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda d: d.update(schema="mpq.problem/v9"), "unsupported version 'mpq.problem/v9'"),
        (lambda d: d.pop("schema"), "schema: field required"),
        (lambda d: d.update(schema="mpq.plan/v1"), "that is a Plan document"),
        (lambda d: d["layers"][0]["options"][0].pop("bytes"), "layers.0.options.0.bytes: Field required"),
        (lambda d: d["layers"][0]["options"][0].update(distortion=float("nan")), "layers.0.options.0.distortion"),
        (lambda d: d["layers"][0]["options"][0].update(bytes=-1), "layers.0.options.0.bytes: Input should be greater than or equal to 0"),
        (lambda d: d.update(constraints={"max_bytes": 0}), "constraints.max_bytes: Input should be greater than 0"),
        (lambda d: d.update(constraints={}), "the problem sets no constraint"),
        (lambda d: d.update(ties=[["fc", "conv"]]), "ties[0]: unknown layer 'conv'"),
        (lambda d: d["layers"][0]["options"][1].update(id="int4"), "option id 'int4' appears twice"),
        (lambda d: d["layers"][0].update(colour="red"), "layers.0.colour: Extra inputs are not permitted"),
        (lambda d: d.update(pairs=[{"a": "fc", "option_a": "int4", "b": "fc2", "option_b": "int4", "distortion": 1}]), "unknown layer 'fc2'"),
    ],
)
def test_bad_problem_is_refused_naming_the_field(mutate, needle):
    d = problem_dict()
    mutate(d)
    with pytest.raises(DocumentError) as err:
        parse_document(d, Problem)
    assert needle in str(err.value)


def test_sensitivity_table_refuses_nan_score_and_unknown_pair_layer():
    base = {"schema": "mpq.sensitivity/v1", "estimator": "hessian-trace",
            "layers": {"fc": {"score": 1.0, "params": 10, "trace": 10.0, "stderr": 0.5}}}
    assert parse_document(base, SensitivityTable).layers["fc"].model_extra == {"trace": 10.0}
    nan = json.loads(json.dumps(base))
    nan["layers"]["fc"]["score"] = float("nan")
    with pytest.raises(DocumentError, match="layers.fc.score"):
        parse_document(nan, SensitivityTable)
    bad_extra = json.loads(json.dumps(base))
    bad_extra["layers"]["fc"]["trace"] = float("inf")
    with pytest.raises(DocumentError, match="'trace' must be a finite number"):
        parse_document(bad_extra, SensitivityTable)
    pair = {**base, "pairs": [{"a": "fc", "b": "conv", "score": 0.1}]}
    with pytest.raises(DocumentError, match=r"pairs\[0\].b: unknown layer 'conv'"):
        parse_document(pair, SensitivityTable)


def test_load_document_reports_unreadable_and_non_json_files(tmp_path):
    with pytest.raises(DocumentError, match="cannot read"):
        load_document(tmp_path / "missing.json", Plan)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DocumentError, match="not JSON"):
        load_document(bad, Plan)
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(problem_dict()).replace('"distortion": 0.1', '"distortion": NaN'))
    with pytest.raises(DocumentError, match="distortion"):
        load_document(nan, Problem)


@pytest.mark.parametrize("kind", ["plan", "problem", "sensitivity"])
def test_published_schemas_name_the_version(kind):
    schema = json_schema(kind)
    assert schema["properties"]["schema"]["const"] == f"mpq.{kind}/v1"
    assert schema["additionalProperties"] is False
