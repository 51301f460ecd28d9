"""output-gn: its sampled quadratic form matches the exact Gauss-Newton damage it estimates, on a tiny model."""
import pytest
import torch
from torch import nn

from mpq.cost import CandidateSet
from mpq.graph import discover
from mpq.pipeline import sensitivities
from mpq.quant import fake_quantize, set_weight_matrix, weight_matrix
from mpq.workload import Workload
from tests.helpers.models import mlp_batches, tiny_mlp


def test_output_gn_agrees_with_the_exact_gauss_newton_of_cross_entropy(one_thread):
    wl = Workload(model=tiny_mlp(), batches=mlp_batches(), loss_fn=nn.functional.cross_entropy, name="tiny-mlp")
    cands = CandidateSet(bits=(3, 8))
    table = sensitivities(wl, "output-gn", candidates=cands, use_cache=False, samples=256, seed=1)
    graph = discover(wl)
    spec = cands.specs()["int3"]
    for name in graph.names:
        module = graph.module(name)
        w = weight_matrix(module).clone()
        # exact: 0.5 * dz^T H dz, dz by a forward difference of the linearized output (small perturbation)
        total = 0.0
        for x, _ in wl.batches:
            with torch.no_grad():
                z0 = wl.model(x)
                eps = 1e-3
                set_weight_matrix(module, w + eps * (fake_quantize(w, spec) - w))
                dz = (wl.model(x) - z0) / eps
                set_weight_matrix(module, w)
                p = torch.softmax(z0, -1)
                h = (dz**2 * p).sum(-1) - (dz * p).sum(-1) ** 2  # dz^T (diag p - p p^T) dz per sample
                total += 0.5 * float(h.sum()) / len(x)
        exact = total / len(wl.batches)
        assert table.layers[name].options["int3"] == pytest.approx(exact, rel=0.35)
        assert table.layers[name].options["int8"] < table.layers[name].options["int3"]


def test_output_gn_is_deterministic_for_a_seed(one_thread):
    wl = Workload(model=tiny_mlp(), batches=mlp_batches(), loss_fn=nn.functional.cross_entropy, name="tiny-mlp")
    a = sensitivities(wl, "output-gn", candidates=CandidateSet(bits=(2, 4)), use_cache=False, seed=3)
    b = sensitivities(wl, "output-gn", candidates=CandidateSet(bits=(2, 4)), use_cache=False, seed=3)
    assert a.layers == b.layers


def test_output_gn_refuses_a_bad_sample_count():
    from mpq.errors import EstimatorSettingsError, WorkloadError

    with pytest.raises((WorkloadError, EstimatorSettingsError), match="samples"):
        from mpq.sensitivity.base import get_estimator

        get_estimator("output-gn", samples=0)
