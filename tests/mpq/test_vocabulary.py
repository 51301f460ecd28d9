"""The option vocabulary is defined once (mpq.schema): every document that stores a layer agrees on it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mpq import quant, schema
from mpq.columnar import ProblemColumns, validate_columns
from mpq.errors import DocumentError
from mpq.plan import build_plan
from mpq.quant import QuantSpec, fake_quantize, register_quantizer
from mpq.registry import RegistryError
from mpq.schema import NumberFormat, Option, PlanLayer, Problem, SolverInfo, register_number_format
from mpq.sizes import weight_bits

storage = st.fixed_dictionaries({
    "w_bits": st.integers(1, 32),
    "group_size": st.one_of(st.none(), st.integers(1, 256)),
    "format": st.sampled_from(list(schema.NUMBER_FORMATS)),
    "symmetric": st.booleans(),
    "prune_ratio": st.one_of(st.sampled_from([0.0, 0.1, 0.5, 0.75]), st.floats(0.0, 0.999)),
    "prune_structure": st.sampled_from(list(schema.PRUNE_STRUCTURES)),
    "a_bits": st.one_of(st.none(), st.integers(1, 32)),
})


def _accepts(model, **fields) -> bool:
    try:
        model(**fields)
        return True
    except ValidationError:
        return False


@settings(max_examples=400, deadline=None)
@given(storage)
def test_plan_layer_option_and_quant_spec_refuse_the_same_combinations(fields):
    as_option = _accepts(Option, id="o", bits=8, bytes=1, distortion=0.0, **fields)
    as_layer = _accepts(PlanLayer, name="l", params=8, option="o", bits=8, bytes=1, distortion=0.0, **fields)
    as_spec = _accepts(QuantSpec, **fields)
    assert as_option == as_layer == as_spec
    fixed = schema.NUMBER_FORMATS[fields["format"]].bits
    implied = schema.PRUNE_STRUCTURES[fields["prune_structure"]]
    assert as_option == ((fixed is None or fixed == fields["w_bits"]) and (implied is None or implied == fields["prune_ratio"]))


@pytest.mark.parametrize("fields, message", [
    ({"w_bits": 4, "format": "fp8_e4m3"}, "format 'fp8_e4m3' stores 8 bits, but w_bits is 4"),
    ({"w_bits": 4, "prune_ratio": 0.1, "prune_structure": "2:4"}, "prune_structure '2:4' means prune_ratio 0.5, got 0.1"),
    ({"w_bits": 4, "format": "fp9"}, "unknown format 'fp9'"),
])
def test_plan_layer_refuses_what_option_refuses_naming_the_layer(fields, message):
    with pytest.raises(ValidationError, match=message) as err:
        PlanLayer(name="fc", params=8, option="o", bytes=1, distortion=0.0, **fields)
    with pytest.raises(ValidationError, match=message):
        Option(id="o", bytes=1, distortion=0.0, **fields)
    if "unknown" not in message:
        assert "layer 'fc' (option 'o')" in str(err.value)


def test_columnar_problem_refuses_a_2_4_prune_with_another_ratio():
    problem = Problem.model_validate({
        "layers": [{"name": "fc", "params": 8, "options": [
            {"id": "p", "w_bits": 4, "prune_ratio": 0.5, "prune_structure": "2:4", "bits": 24, "bytes": 3, "distortion": 0.0}]}],
        "constraints": {"max_bytes": 10},
    })
    cols = ProblemColumns.from_problem(problem)
    data = {"header": np.array(__import__("json").dumps(cols.header())), **cols.arrays}
    data["prune_ratio"] = np.array([0.1])
    with pytest.raises(DocumentError, match="prune_ratio: does not match the prune structure"):
        validate_columns(data)


@pytest.fixture
def fp6_format():
    """A new number format added the way a user would: one vocabulary entry plus its quantizer."""
    register_number_format(NumberFormat("fp6_e3m2", bits=6, scale_bits=8, default_block=32))
    grid = quant.FloatGrid(mantissa_bits=2, min_exponent=-2, max_value=28.0)

    @register_quantizer("fp6_e3m2")
    def quantize_fp6(w, spec):
        return quant._grouped(w.detach().float(), quant.fp_block(spec), lambda rows: quant._fp_rows(rows, grid)).to(w.dtype)

    try:
        yield "fp6_e3m2"
    finally:
        del schema.NUMBER_FORMATS["fp6_e3m2"], quant.QUANTIZERS["fp6_e3m2"]


def test_a_registered_format_works_in_documents_sizes_columns_and_quantizers(fp6_format):
    assert fp6_format in schema.json_schema("problem")["$defs"]["Option"]["properties"]["format"]["enum"]
    bits = weight_bits([4, 64], 6, None, fp6_format)
    assert bits == 4 * 64 * 6 + 4 * 2 * 8  # two 8-bit block scales of 32 per row
    problem = Problem.model_validate({
        "layers": [{"name": "fc", "params": 256, "shape": [4, 64], "options": [
            {"id": "fp6", "w_bits": 6, "format": fp6_format, "bits": bits, "bytes": -(-bits // 8), "distortion": 1.0},
            {"id": "int8", "w_bits": 8, "bits": 2112, "bytes": 264, "distortion": 0.5}]}],
        "constraints": {"max_bytes": 250},
    })
    cols = ProblemColumns.from_problem(problem)
    assert cols.to_problem() == problem
    plan = build_plan(problem, {"fc": "fp6"}, SolverInfo(name="t", status="feasible", objective=1.0))
    assert plan.layers[0].format == fp6_format
    w = torch.randn(4, 64)
    q = fake_quantize(w, QuantSpec.of(plan.layers[0]))
    assert q.shape == w.shape and 0 < float((q - w).pow(2).sum()) < float(w.pow(2).sum())
    with pytest.raises(ValidationError, match="format 'fp6_e3m2' stores 6 bits, but w_bits is 4"):
        PlanLayer(name="fc", params=256, option="x", w_bits=4, format=fp6_format, bytes=1, distortion=0.0)


def test_a_format_registers_once_and_needs_its_vocabulary_entry_before_a_quantizer():
    with pytest.raises(RegistryError, match="number format 'int' is already registered"):
        register_number_format(NumberFormat("int", 8, 16))
    with pytest.raises(RegistryError, match="add the format to mpq.schema.NUMBER_FORMATS first"):
        register_quantizer("fp5_never")(lambda w, spec: w)
    register_number_format(schema.NUMBER_FORMATS["int"])  # the same entry again is a no-op


def test_a_target_size_registers_once_like_every_registry():
    from mpq.sizes import TARGET_SIZES, target_size

    with pytest.raises(RegistryError, match="target size 'mpq' is already registered"):
        target_size("mpq")(lambda *args, **kwargs: 0)
    assert target_size("mpq")(TARGET_SIZES["mpq"]) is TARGET_SIZES["mpq"]  # the same function again is a no-op
