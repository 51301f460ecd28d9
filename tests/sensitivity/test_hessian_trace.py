"""hessian-trace: per-layer weight-block Hessian traces against exact ones, pyhessian, and the workload contract."""
import math

import pytest
import torch
from torch import nn

from mpq.errors import WorkloadError
from mpq.graph import discover
from mpq.schema import SensitivityTable, dump_document, parse_document
from mpq.sensitivity.base import get_estimator
from mpq.errors import EstimatorSettingsError
from mpq.sensitivity.hessian import HessianTraceEstimator
from mpq.workload import Workload

from tests.helpers.models import TinyCNN, cnn_batches, exact_block_traces, mlp_batches, tiny_mlp

ce = nn.functional.cross_entropy

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------
# tiny models and exact traces


def check_against_exact(table, exact, model, rel=0.05, sigmas=4.0):
    for name, want in exact.items():
        layer = table.layers[name]
        err = abs(layer.trace - want)
        assert err <= rel * abs(want), f"{name}: estimate {layer.trace} vs exact {want} (error {err / abs(want):.2%})"
        # exact blocks report stderr 0; allow float32 rounding of the HVPs
        assert err <= sigmas * layer.stderr + 1e-4 * abs(want), f"{name}: error {err} > {sigmas} x stderr {layer.stderr}"
        assert layer.score == pytest.approx(layer.trace / layer.params)
        assert layer.params == model.get_submodule(name).weight.numel()  # weight only, bias excluded


def run(model, data, loss_fn=ce, **kw):
    wl = Workload(model, data, loss_fn, name="tiny")
    kw.setdefault("quiet", True)
    return HessianTraceEstimator(**kw).estimate(wl, discover(wl))


# ------------------------------------------------------------------------------------------------
# accuracy


def test_exact_helper_matches_autograd_functional_hessian():
    model, batches = tiny_mlp(), mlp_batches()
    w = model[0].weight
    total = sum(x.shape[0] for x, _ in batches)

    def loss_of(weight):
        out = 0.0
        for x, y in batches:
            h = torch.tanh(nn.functional.linear(x, weight, model[0].bias))
            out = out + x.shape[0] / total * ce(model[2:](h), y)
        return out

    H = torch.autograd.functional.hessian(loss_of, w.detach().clone())
    want = float(H.reshape(w.numel(), w.numel()).diagonal().sum())
    assert exact_block_traces(model, batches, ce, ["0"])["0"] == pytest.approx(want, rel=1e-4)


def test_mlp_traces_match_exact_with_unequal_batches():
    model, batches = tiny_mlp(), mlp_batches((32, 32, 16))
    table = run(model, batches)
    exact = exact_block_traces(model, batches, ce, ["0", "2", "4"])
    check_against_exact(table, exact, model)
    assert table.meta["batches"] == 3 and table.meta["batch_sizes"] == [32, 32, 16]
    assert table.meta["scheme"] == "block-hutch++"
    assert table.meta["hvps"] == sum(l.hvps for l in table.layers.values())
    assert table.meta["probes"] == sum(l.probes for l in table.layers.values())
    for layer in table.layers.values():
        assert layer.probes >= 32 and layer.stderr > 0


def test_cnn_traces_match_exact():
    batches = cnn_batches()
    torch.manual_seed(3)
    model = TinyCNN().eval()
    table = run(model, batches)
    exact = exact_block_traces(model, batches, ce, ["conv1", "conv2", "fc"])
    check_against_exact(table, exact, model)
    # conv1 has 27 <= 2 * sketch weights: computed exactly, no random probes
    assert table.layers["conv1"].stderr == 0 and table.layers["conv1"].probes == 0
    assert table.layers["conv1"].sketch == 27 and table.layers["conv1"].hvps == 27 * 2


def test_plain_block_hutchinson_matches_exact():
    model, batches = tiny_mlp(), mlp_batches((32, 32))
    table = run(model, batches, sketch=0)
    assert table.meta["scheme"] == "block-hutchinson"
    check_against_exact(table, exact_block_traces(model, batches, ce, ["0", "2", "4"]), model)
    for layer in table.layers.values():
        assert layer.sketch == 0
        assert layer.stderr <= 0.02 * abs(layer.trace) or layer.probes == 2000


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")
def test_sum_of_block_traces_matches_pyhessian():
    """Bias-free model, so pyhessian's whole-model trace and the sum of weight blocks are the same quantity."""
    from pyhessian import hessian

    (x, y), = cnn_batches((48,))
    torch.manual_seed(5)
    model = TinyCNN(bias=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):  # near a minimum the Hessian is close to PSD: a positive trace, few negative samples
        opt.zero_grad()
        ce(model(x), y).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    names = ["conv1", "conv2", "fc"]
    exact = sum(exact_block_traces(model, [(x, y)], ce, names).values())
    assert exact > 0  # pyhessian's PyPI stopping test misbehaves on a negative running trace

    table = run(model, [(x, y)], batches=1)
    ours = sum(table.layers[n].trace for n in names)
    ours_se = math.sqrt(sum(table.layers[n].stderr ** 2 for n in names))

    torch.manual_seed(0)  # pyhessian draws its probes from the global generator
    try:
        # tol=-inf: its relative-change test can never fire, so it runs all maxIter probes (no early stop,
        # whatever the sign of the running trace); it returns the list of per-probe samples v^T H v
        samples = hessian(model, ce, data=(x, y), cuda=False).trace(maxIter=400, tol=-math.inf)
    finally:
        for p in model.parameters():  # pyhessian leaves create_graph gradients on the parameters
            p.grad = None
    samples = torch.tensor(samples, dtype=torch.float64)
    assert len(samples) == 400
    py_mean, py_se = float(samples.mean()), float(samples.std() / math.sqrt(len(samples)))
    assert abs(py_mean - exact) <= 4 * py_se  # pyhessian itself agrees with the exact trace, within its noise
    assert abs(ours - exact) <= 0.05 * exact and abs(ours - exact) <= 4 * ours_se + 1e-4 * exact
    assert abs(ours - py_mean) <= 4 * math.sqrt(py_se**2 + ours_se**2)
    assert ours_se < py_se  # block probes, deflated, beat whole-model Hutchinson at a fraction of the HVPs
    assert table.meta["hvps"] < 400


def test_tied_weights_share_one_block():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(8, 8)
            self.b.weight = self.a.weight
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))

    torch.manual_seed(0)
    model = Tied().eval()
    batches = mlp_batches((32,))
    table = run(model, batches)
    if "b" in table.layers:  # discovery may list a shared weight once (under its first name) or under each name
        assert table.layers["a"].trace == table.layers["b"].trace
    exact = exact_block_traces(model, batches, ce, ["a", "head"])
    check_against_exact(table, exact, model)


# ------------------------------------------------------------------------------------------------
# contract


def test_deterministic_for_a_seed():
    model, batches = tiny_mlp(), mlp_batches((32, 32))
    a, b, c = run(model, batches, seed=7), run(model, batches, seed=7), run(model, batches, seed=8)
    for name in a.layers:
        assert a.layers[name].trace == b.layers[name].trace
        assert a.layers[name].stderr == b.layers[name].stderr
        assert a.layers[name].probes == b.layers[name].probes
    assert any(a.layers[n].trace != c.layers[n].trace for n in a.layers)
    assert a.meta["seed"] == 7


def test_table_round_trips_and_is_registered():
    est = get_estimator("hessian-trace", quiet=True, tol=0.05)
    assert isinstance(est, HessianTraceEstimator) and est.name == "hessian-trace"
    model, batches = tiny_mlp(), mlp_batches((16,))
    wl = Workload(model, batches, ce, name="tiny")
    table = est.estimate(wl, discover(wl))
    again = parse_document(__import__("json").loads(dump_document(table)), SensitivityTable)
    assert again.layers["0"].model_extra["trace"] == table.layers["0"].trace
    for key in ("probes", "hvps", "seed", "batches", "seconds", "tol", "scheme"):
        assert key in table.meta


def test_nan_loss_is_a_workload_error():
    model, batches = tiny_mlp(), mlp_batches((16, 16))
    with pytest.raises(WorkloadError, match=r"(?i)nan.*finite|finite.*nan"):
        run(model, batches, loss_fn=lambda out, y: ce(out, y) * float("nan"))


def test_non_scalar_loss_is_a_workload_error():
    model, batches = tiny_mlp(), mlp_batches((16,))
    with pytest.raises(WorkloadError, match="scalar"):
        run(model, batches, loss_fn=lambda out, y: ce(out, y, reduction="none"))


def test_detached_loss_is_a_workload_error():
    model, batches = tiny_mlp(), mlp_batches((16,))
    with pytest.raises(WorkloadError, match="autograd graph"):
        run(model, batches, loss_fn=lambda out, y: ce(out, y).detach())


def test_unused_layer_and_linear_loss_give_zero():
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(8, 4)
            self.spare = nn.Linear(8, 8)  # never called

        def forward(self, x):
            return self.used(x)

    torch.manual_seed(0)
    batches = mlp_batches((16,))
    table = run(WithSpare().eval(), batches)
    spare = table.layers["spare"]
    assert (spare.trace, spare.stderr, spare.probes, spare.score) == (0.0, 0.0, 0, 0.0)
    assert table.layers["used"].trace > 0

    # a loss linear in the only layer: its gradient has no graph, the Hessian block is zero
    table = run(nn.Sequential(nn.Linear(8, 4)).eval(), batches, loss_fn=lambda out, y: out.mean())
    assert (table.layers["0"].trace, table.layers["0"].stderr) == (0.0, 0.0)


def test_model_state_is_left_as_it_was():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 4))
    model[0].weight.requires_grad_(False)
    model.train()  # BatchNorm in training mode updates its running statistics on every forward pass
    wl = Workload(model, mlp_batches((16, 16)), ce, name="tiny")
    graph = discover(wl)  # (discovery's own forward pass may move the statistics; the estimator must not)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    HessianTraceEstimator(quiet=True, tol=0.1).estimate(wl, graph)
    assert model.training and model[1].training
    assert model[0].weight.requires_grad is False and model[3].weight.requires_grad is True
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k

    model.eval()
    run(model, mlp_batches((16,)), tol=0.1)
    assert not model.training


def test_settings_are_checked():
    with pytest.raises(EstimatorSettingsError, match="tol"):
        HessianTraceEstimator(tol=0)
    with pytest.raises(EstimatorSettingsError, match="max_probes"):
        HessianTraceEstimator(min_probes=50, max_probes=10)
    with pytest.raises(EstimatorSettingsError, match="min_probes"):
        HessianTraceEstimator(min_probes=1)
    with pytest.raises(EstimatorSettingsError, match="unknown setting"):
        HessianTraceEstimator(tolerance=0.1)
    est = HessianTraceEstimator(probes=10)  # the CLI's --probes: per-layer budget
    assert (est.max_probes, est.min_probes) == (10, 10)
