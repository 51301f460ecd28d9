"""``mpq frontier``: the frontier document as JSON and a PNG plot with the uniform baselines."""
from __future__ import annotations

import json

import numpy as np
from tests.helpers.problems import random_problem


def test_frontier_cli_writes_json_and_a_png_with_uniform_points(tmp_path):
    from mpq.cli import main
    from mpq.schema import save_document

    problem = random_problem(np.random.default_rng(2), n_layers=5, n_options=6, ragged=False)
    save_document(problem, tmp_path / "p.json")
    assert main(["frontier", str(tmp_path / "p.json"), "-o", str(tmp_path / "f.json"), "--plot", str(tmp_path / "f.png")]) == 0
    doc = json.loads((tmp_path / "f.json").read_text())
    assert doc["schema"] == "mpq.frontier/v1" and len(doc["points"]) >= 5 and len(doc["uniform"]) == 6
    assert set(doc["points"][0]["choice"]) == {l.name for l in problem.layers}
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
