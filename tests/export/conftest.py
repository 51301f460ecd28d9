"""Fixtures of the export tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def workload(tiny_hf):
    """The tiny Llama and its calibration text, loaded as a workload."""
    from mpq.model_ref import load_workload

    return load_workload(str(tiny_hf["llama"]), calib=str(tiny_hf["calib"]))
