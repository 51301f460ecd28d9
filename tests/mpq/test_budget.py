"""Budgets: one vocabulary for the CLI and the Python API, and the mistakes each refuses by name."""
from __future__ import annotations

import pytest

from mpq.budget import BUDGET_KEYS, budget_constraints, parse_budgets
from mpq.errors import DocumentError
from mpq.schema import RESOURCES


def test_every_budget_key_names_a_constraint_of_the_schema():
    assert {name for name, _ in BUDGET_KEYS.values()} == set(RESOURCES)


def test_a_dict_a_string_and_cli_flags_give_the_same_constraints():
    want = {"max_avg_bits": 4.0, "max_bytes": 12e6}
    assert budget_constraints({"avg_bits": 4, "MB": "12"}) == want
    assert budget_constraints("avg_bits=4, mb=12") == want
    assert parse_budgets(["avg_bits=4", "mb=12"]) == want
    assert budget_constraints(["bytes=100,bitops=5", "latency_ms=0.5"]) == {"max_bytes": 100.0, "max_bitops": 5.0,
                                                                            "max_latency_ms": 0.5}


@pytest.mark.parametrize("budget, message", [
    ({"max_avg_bits": 4}, "unknown key 'max_avg_bits' (the document field 'max_avg_bits' is the budget key 'avg_bits')"),
    ({"avg_bits": True}, "avg_bits must be a number, got True"),
    ({"avg_bits": "four"}, "avg_bits must be a number, got 'four'"),
    ({"avg_bits": 0}, "avg_bits must be a positive finite number, got 0"),
    ({"avg_bits": float("inf")}, "avg_bits must be a positive finite number"),
    ("mb=1,bytes=5", "max_bytes is given twice"),
    ("avg_bits", "expected KEY=VALUE"),
    ([3], "expected a dict like"),
    ("", "give at least one of avg_bits, mb, bytes, bitops, latency_ms"),
])
def test_bad_budgets_are_refused_naming_the_key(budget, message):
    with pytest.raises(DocumentError, match="^budget") as err:
        budget_constraints(budget)
    assert message in str(err.value)
