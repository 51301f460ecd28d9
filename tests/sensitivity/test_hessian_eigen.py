"""hessian-eigen: per-layer top eigenvalues of the weight-block Hessian against exact ones, and the contract."""
import json
import math
import sys
import textwrap

import pytest
import torch
from torch import nn

from mpq.cli import main
from mpq.errors import WorkloadError
from mpq.graph import discover
from mpq.sensitivity.base import get_estimator
from mpq.errors import EstimatorSettingsError
from mpq.sensitivity.hessian_eigen import HessianEigenEstimator
from mpq.workload import Workload

from tests.helpers.models import TinyCNN, cnn_batches, mlp_batches, tiny_mlp

ce = nn.functional.cross_entropy


pytestmark = pytest.mark.usefixtures("one_thread")


def exact_block_hessians(model, batches, names):
    """H_ll of the sample-weighted mean loss, one double-backprop HVP per weight coordinate, in float64."""
    weights = [model.get_submodule(n).weight for n in names]
    total = sum(x.shape[0] for x, _ in batches)
    out = {n: torch.zeros(w.numel(), w.numel(), dtype=torch.float64) for n, w in zip(names, weights)}
    for x, y in batches:
        grads = torch.autograd.grad(ce(model(x), y), weights, create_graph=True)
        for n, w, g in zip(names, weights, grads):
            d = w.numel()
            (hv,) = torch.autograd.grad(g, w, torch.eye(d).view(d, *w.shape), retain_graph=True, is_grads_batched=True)
            out[n] += x.shape[0] / total * hv.reshape(d, d).double()
    return {n: (h + h.T) / 2 for n, h in out.items()}


def run(model, data, loss_fn=ce, **kw):
    wl = Workload(model, data, loss_fn, name="tiny")
    kw.setdefault("quiet", True)
    return HessianEigenEstimator(**kw).estimate(wl, discover(wl))


def check_top_eigenvalues(table, hessians, rel=1e-3):
    for name, h in hessians.items():
        spectrum = torch.linalg.eigvalsh(h)
        want, layer = float(spectrum[-1]), table.layers[name]
        err = abs(layer.eigenvalue - want)
        assert err <= rel * abs(want), f"{name}: {layer.eigenvalue} vs exact {want} ({err / abs(want):.2e})"
        assert err <= layer.residual + 1e-5 * abs(want)  # the residual bounds the distance to the spectrum
        assert layer.params == h.shape[0] and layer.score == pytest.approx(layer.eigenvalue / layer.params)
        assert layer.eigenvalue >= float(h.trace()) / h.shape[0]  # top eigenvalue >= mean eigenvalue


def test_exact_block_hessian_matches_autograd_functional_hessian():
    model, batches = tiny_mlp(), mlp_batches((16, 8))
    w = model[2].weight
    total = sum(x.shape[0] for x, _ in batches)

    def loss_of(weight):
        out = 0.0
        for x, y in batches:
            h = torch.tanh(nn.functional.linear(torch.tanh(model[0](x)), weight, model[2].bias))
            out = out + x.shape[0] / total * ce(model[4](h), y)
        return out

    want = torch.autograd.functional.hessian(loss_of, w.detach().clone()).reshape(w.numel(), w.numel())
    got = exact_block_hessians(model, batches, ["2"])["2"]
    assert torch.allclose(got, want.double(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("block", [1, 4])
def test_mlp_top_eigenvalues_match_exact_even_where_negative_curvature_dominates(block):
    model, batches = tiny_mlp(), mlp_batches((32, 32, 16))
    hessians = exact_block_hessians(model, batches, ["0", "2", "4"])
    spectrum = torch.linalg.eigvalsh(hessians["0"])
    assert -spectrum[0] > spectrum[-1] > 0  # plain power iteration would return the negative eigenvalue here
    table = run(model, batches, block=block)
    check_top_eigenvalues(table, hessians)
    assert table.meta["layers_not_converged"] == [] and table.meta["batches"] == 3
    assert table.meta["hvps"] == sum(layer.hvps for layer in table.layers.values())
    for layer in table.layers.values():
        assert layer.hvps == layer.iterations * layer.block * 3


def test_cnn_top_eigenvalues_match_exact():
    batches = cnn_batches()
    torch.manual_seed(3)
    model = TinyCNN().eval()
    table = run(model, batches)
    check_top_eigenvalues(table, exact_block_hessians(model, batches, ["conv1", "conv2", "fc"]))


def test_block_no_larger_than_the_iteration_block_is_solved_exactly_in_one_iteration():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 3)).eval()  # 6 weights each
    batches = [(torch.randn(16, 3), torch.randint(0, 3, (16,)))]
    table = run(model, batches, block=6)
    check_top_eigenvalues(table, exact_block_hessians(model, batches, ["0", "2"]), rel=1e-5)
    assert all(layer.iterations == 1 and layer.block == 6 for layer in table.layers.values())


def test_deterministic_for_a_seed():
    model, batches = tiny_mlp(), mlp_batches((32,))
    a, b, c = run(model, batches, seed=3), run(model, batches, seed=3), run(model, batches, seed=4)
    for name in a.layers:
        assert a.layers[name].model_dump() == b.layers[name].model_dump()
    assert any(a.layers[n].eigenvalue != c.layers[n].eigenvalue for n in a.layers)
    assert a.meta["seed"] == 3


def test_model_state_is_left_as_it_was():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 4)).train()
    model[0].weight.requires_grad_(False)
    wl = Workload(model, mlp_batches((16, 16)), ce, name="tiny")
    graph = discover(wl)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = HessianEigenEstimator(quiet=True).estimate(wl, graph)
    assert all(math.isfinite(layer.eigenvalue) for layer in table.layers.values())
    assert model.training and model[0].weight.requires_grad is False and model[3].weight.requires_grad is True
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_unused_layer_gets_zero_and_iteration_budget_is_reported():
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(8, 4)
            self.spare = nn.Linear(8, 8)

        def forward(self, x):
            return self.used(x)

    torch.manual_seed(0)
    table = run(WithSpare().eval(), mlp_batches((16,)), probes=1, tol=1e-12)
    spare, used = table.layers["spare"], table.layers["used"]
    assert (spare.eigenvalue, spare.residual, spare.iterations, spare.score) == (0.0, 0.0, 0, 0.0)
    assert used.eigenvalue > 0 and used.iterations == 1
    assert table.meta["layers_not_converged"] == ["used"]


def test_bad_settings_and_bad_losses_name_the_problem():
    with pytest.raises(EstimatorSettingsError, match="tol"):
        HessianEigenEstimator(tol=-1)
    with pytest.raises(EstimatorSettingsError, match="block"):
        HessianEigenEstimator(block=0)
    with pytest.raises(EstimatorSettingsError, match="probes"):
        HessianEigenEstimator(probes=0)
    with pytest.raises(EstimatorSettingsError, match="unknown setting.*sketch"):
        HessianEigenEstimator(sketch=4)
    est = get_estimator("hessian-eigen", probes=7)
    assert isinstance(est, HessianEigenEstimator) and est.max_iter == 7
    model, batches = tiny_mlp(), mlp_batches((16,))
    with pytest.raises(WorkloadError, match="hessian-eigen: calibration batch 0.*scalar"):
        run(model, batches, loss_fn=lambda out, y: ce(out, y, reduction="none"))
    with pytest.raises(WorkloadError, match="hessian-eigen: calibration batch 0.*autograd graph"):
        run(model, batches, loss_fn=lambda out, y: ce(out, y).detach())


MLP_MODULE = '''
import torch, torch.nn as nn, torch.nn.functional as F
from mpq.workload import Workload

def workload():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.GELU(), nn.Linear(12, 3))
    batches = [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(2)]
    return Workload(model, batches, F.cross_entropy)
'''


def test_cli_writes_finite_eigenvalues_for_every_layer(tmp_path, monkeypatch):
    (tmp_path / "eigen_mlp.py").write_text(textwrap.dedent(MLP_MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MPQ_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "s.json"
    try:
        assert main(["sensitivity", "eigen_mlp:workload", "--estimator", "hessian-eigen", "--quiet", "-o", str(out)]) == 0
    finally:
        sys.modules.pop("eigen_mlp", None)
    doc = json.loads(out.read_text())
    assert doc["estimator"] == "hessian-eigen" and set(doc["layers"]) == {"0", "2", "4"}
    for layer in doc["layers"].values():
        assert math.isfinite(layer["eigenvalue"]) and layer["score"] == pytest.approx(layer["eigenvalue"] / layer["params"])
        assert layer["iterations"] >= 1 and layer["residual"] >= 0


def test_unknown_device_is_named():
    with pytest.raises(EstimatorSettingsError, match="setting device='tpu': expected 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        run(tiny_mlp(), mlp_batches((16,)), device="tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_eigenvalues_and_the_model_back_on_the_cpu():
    model, batches = tiny_mlp(), mlp_batches((32, 16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cpu, gpu = run(model, batches), run(model, batches, device="cuda")
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    hessians = exact_block_hessians(model, batches, ["0", "2", "4"])
    check_top_eigenvalues(gpu, hessians)
    for name in cpu.layers:
        assert gpu.layers[name].eigenvalue == pytest.approx(cpu.layers[name].eigenvalue, rel=1e-4)
