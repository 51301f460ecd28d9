"""Sensitivity estimators on tiny models built here: coverage, exact values, model left untouched, errors."""
from __future__ import annotations

import math
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mpq.cli import main
from mpq.cost import CandidateSet, build_problem
from mpq.errors import EstimatorSettingsError, UnknownName, WorkloadError
from mpq.graph import discover
from mpq.quant import QuantSpec, fake_quantize, quantization_error, set_weight_matrix, weight_matrix
from mpq.sensitivity.base import get_estimator
from mpq.sensitivity.cache import estimate
from mpq.workload import Workload

try:
    import mpq.sensitivity.hessian  # noqa: F401  (written separately; tested here when present)

    HAVE_HESSIAN = True
except ImportError:
    HAVE_HESSIAN = False

OPTIONS = CandidateSet(bits=(2, 4, 8, 16)).specs()


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# tiny models


def mlp_workload(bias: bool = True, seed: int = 0) -> Workload:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16, bias=bias), nn.ReLU(), nn.Linear(16, 16, bias=bias), nn.ReLU(), nn.Linear(16, 4, bias=bias))
    batches = [(torch.randn(12, 8, generator=g), torch.randint(0, 4, (12,), generator=g)) for _ in range(2)]
    return Workload(model, batches, F.cross_entropy, name="tiny-mlp")


def cnn_workload() -> Workload:
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )
    batches = [(torch.randn(6, 1, 6, 6, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(2)]
    return Workload(model, batches, F.cross_entropy, name="tiny-cnn")


class Block(nn.Module):
    """Pre-norm transformer layer: attention (q, k, v, o) and a GELU MLP, each with a residual add."""

    def __init__(self, d: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.act, self.fc2 = nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.ln1(x)
        split = lambda z: z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        att = F.softmax(split(self.q(h)) @ split(self.k(h)).transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        x = x + self.o((att @ split(self.v(h))).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int = 11, d: int = 16, classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList([Block(d), Block(d)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(1))


def transformer_workload() -> Workload:
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    batches = [(torch.randint(0, 11, (4, 5), generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(2)]
    return Workload(TinyTransformer(), batches, F.cross_entropy, name="tiny-transformer")


MODELS = {"mlp": mlp_workload, "cnn": cnn_workload, "transformer": transformer_workload}

#: every estimator of this module with its settings variants (hessian-trace is tested in its own module)
ESTIMATORS = [
    ("fisher", {}), ("fisher", {"distortion": "score"}), ("grad-output", {}), ("measured", {}),
    ("measured", {"metric": "kl"}), ("lrp", {}), ("layer-importance", {}), ("layer-importance", {"metric": "zd"}),
    ("interlayer", {}), ("weight-error", {}), ("weight-error", {"normalize": True}),
]


def snapshot(model: nn.Module) -> dict:
    """Everything an estimator could leave behind on a model."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "grad": {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "attrs": {k: sorted(vars(m)) for k, m in model.named_modules()},
        "hooks": {k: [len(getattr(m, h)) for h in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_forward_hooks_with_kwargs")]
                  for k, m in model.named_modules()},
        "device": {k: p.device for k, p in model.named_parameters()},
    }


def assert_same(before: dict, after: dict) -> None:
    for key in ("requires_grad", "training", "attrs", "hooks", "device"):
        assert before[key] == after[key], key
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), k
    for k, g in before["grad"].items():
        assert (g is None) == (after["grad"][k] is None) and (g is None or torch.equal(g, after["grad"][k])), k


def run(name: str, workload: Workload, options=OPTIONS, **settings):
    est = get_estimator(name, quiet=True, **settings)
    return estimate(est, workload, discover(workload), options if est.per_option else None, use_cache=False)


# ----------------------------------------------------------------------------------------------
# every estimator on every tiny model


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("name,settings", ESTIMATORS, ids=[f"{n}{'-' + '-'.join(map(str, s.values())) if s else ''}" for n, s in ESTIMATORS])
def test_estimator_scores_every_layer_finitely_and_leaves_the_model_as_it_was(model, name, settings):
    wl = MODELS[model]()
    wl.model.train()  # estimators switch to eval mode and must switch back
    first = next(wl.model.parameters())
    first.grad = torch.ones_like(first)  # a user's leftover gradient stays as it was
    list(wl.model.parameters())[-1].requires_grad_(False)  # and so does a frozen parameter
    before = snapshot(wl.model)
    table = run(name, wl, **settings)
    assert_same(before, snapshot(wl.model))
    graph = discover(wl)
    assert set(table.layers) == set(graph.names)
    for layer_name, layer in table.layers.items():
        assert math.isfinite(layer.score), layer_name
        assert layer.params == graph.layers[layer_name].params
    if get_estimator(name, **settings).per_option:
        quantized = {k for k, s in OPTIONS.items() if s.format != "float"}
        for layer in table.layers.values():
            assert set(layer.options) == quantized
            assert all(math.isfinite(v) for v in layer.options.values())
        build_problem(graph, table, OPTIONS, {"max_avg_bits": 4})  # the cost model accepts the table


@pytest.mark.parametrize("name,settings", [("fisher", {}), ("grad-output", {}), ("measured", {"metric": "kl"}), ("lrp", {}),
                                           ("layer-importance", {}), ("interlayer", {})])
def test_estimators_are_deterministic(name, settings):
    options = CandidateSet(bits=(2, 8)).specs()
    a = run(name, transformer_workload(), options, **settings)
    b = run(name, transformer_workload(), options, **settings)
    assert a.layers == b.layers and a.pairs == b.pairs


def test_probes_caps_the_calibration_batches():
    wl = mlp_workload()
    one = run("measured", wl, probes=1)
    assert one.meta["batches"] == 1 and run("measured", wl).meta["batches"] == 2
    assert one.layers != run("measured", wl).layers


# ----------------------------------------------------------------------------------------------
# exact values


def loss_of(wl: Workload) -> float:
    return wl.calibration_loss()


def test_measured_distortion_is_the_calibration_loss_increase_of_that_layer_alone():
    wl = mlp_workload()
    table = run("measured", wl)
    base = loss_of(wl)
    layer = wl.model[2]
    saved = layer.weight.detach().clone()
    set_weight_matrix(layer, fake_quantize(weight_matrix(layer), OPTIONS["int2"]))
    expected = loss_of(wl) - base
    layer.weight.data.copy_(saved)
    assert table.layers["2"].options["int2"] == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_measured_kl_is_the_output_kl_divergence():
    wl = mlp_workload()
    table = run("measured", wl, metric="kl")
    layer = wl.model[0]
    with torch.no_grad():
        ref = [F.log_softmax(wl.model(x), -1) for x, _ in wl.batches]
        saved = layer.weight.detach().clone()
        set_weight_matrix(layer, fake_quantize(weight_matrix(layer), OPTIONS["int2"]))
        kl = [F.kl_div(F.log_softmax(wl.model(x), -1), r, log_target=True, reduction="batchmean") for (x, _), r in zip(wl.batches, ref)]
        layer.weight.copy_(saved)
    assert table.layers["0"].options["int2"] == pytest.approx(float(sum(kl) / 2), rel=1e-6)
    assert all(v >= 0 for l in table.layers.values() for v in l.options.values())


def test_grad_output_is_gradient_weighted_output_error():
    wl = mlp_workload()
    table = run("grad-output", wl)
    layer = wl.model[4]
    total = 0.0
    for x, y in wl.batches:
        h = wl.model[:4](x).detach()
        out = layer(h)
        g, = torch.autograd.grad(F.cross_entropy(out, y), out)
        wq = fake_quantize(weight_matrix(layer), OPTIONS["int4"])
        total += float(((g * (F.linear(h, wq, layer.bias) - out)) ** 2).sum().detach())
    assert table.layers["4"].options["int4"] == pytest.approx(total, rel=1e-5)


def test_grad_output_refuses_a_loss_with_zero_gradient_at_full_precision():
    wl = mlp_workload()
    with torch.no_grad():
        targets = [wl.model(x) for x, _ in wl.batches]
    wl = Workload(wl.model, [(x, t) for (x, _), t in zip(wl.batches, targets)], F.mse_loss, name="self-distill")
    with pytest.raises(WorkloadError, match="zero gradient"):
        run("grad-output", wl)


def test_fisher_is_the_mean_squared_per_sample_gradient():
    wl = mlp_workload()
    table = run("fisher", wl)
    layer = wl.model[2]
    fisher = torch.zeros_like(layer.weight)
    n = 0
    for x, y in wl.batches:
        for i in range(len(y)):
            g, = torch.autograd.grad(F.cross_entropy(wl.model(x[i:i + 1]), y[i:i + 1]), layer.weight)
            fisher += g**2
            n += 1
    fisher /= n
    entry = table.layers["2"]
    assert entry.fisher == pytest.approx(float(fisher.sum()), rel=1e-5)
    assert entry.score == pytest.approx(float(fisher.sum()) / layer.weight.numel(), rel=1e-5)
    dw2 = (fake_quantize(layer.weight, OPTIONS["int2"]) - layer.weight).detach() ** 2
    assert entry.options["int2"] == pytest.approx(float((fisher * dw2).sum()), rel=1e-5)
    assert wl.model[2].weight.grad is None


def test_interlayer_pairs_exist_for_adjacent_layers_only_and_are_joint_minus_individual():
    wl = mlp_workload()
    graph = discover(wl)
    table = run("interlayer", wl)
    assert {(p.a, p.b) for p in table.pairs} == set(graph.adjacent_pairs()) == {("0", "2"), ("2", "4")}
    pair = next(p for p in table.pairs if (p.a, p.b) == ("0", "2"))
    assert {(o.option_a, o.option_b) for o in pair.options} == {(a, b) for a in ("int2", "int4") for b in ("int2", "int4")}
    base = loss_of(wl)
    saved = [wl.model[i].weight.detach().clone() for i in (0, 2)]
    for i in (0, 2):
        set_weight_matrix(wl.model[i], fake_quantize(weight_matrix(wl.model[i]), OPTIONS["int2"]))
    joint = loss_of(wl) - base
    for i, w in zip((0, 2), saved):
        wl.model[i].weight.data.copy_(w)
    term = next(o for o in pair.options if (o.option_a, o.option_b) == ("int2", "int2")).distortion
    assert term == pytest.approx(joint - table.layers["0"].options["int2"] - table.layers["2"].options["int2"], abs=1e-9)
    problem = build_problem(graph, table, OPTIONS, {"max_avg_bits": 4})
    assert {(p.a, p.b) for p in problem.pairs} == {("0", "2"), ("2", "4")} and len(problem.pairs) == 8


def test_interlayer_follows_the_data_flow_graph_of_a_transformer():
    wl = transformer_workload()
    graph = discover(wl)
    table = run("interlayer", wl, options=CandidateSet(bits=(2, 8)).specs(), probes=1)
    assert {(p.a, p.b) for p in table.pairs} == set(graph.adjacent_pairs())
    assert ("blocks.0.q", "blocks.0.k") not in {(p.a, p.b) for p in table.pairs}


# ----------------------------------------------------------------------------------------------
# LRP


def signed(r: torch.Tensor) -> torch.Tensor:
    return r.detach().double().reshape(r.shape[0], -1).sum(1)


@pytest.mark.parametrize("backend", ["captum", "gradient"])
def test_lrp_conserves_relevance_layer_by_layer_on_a_bias_free_relu_mlp(backend):
    from mpq.sensitivity.lrp import captum_relevance, gradient_relevance

    wl = mlp_workload(bias=False)
    layers = {n: wl.model[int(n)] for n in ("0", "2", "4")}
    x, y = wl.batches[0]
    relevance = (captum_relevance if backend == "captum" else gradient_relevance)(wl.model, layers, (x, y), reduce=signed)
    with torch.no_grad():
        target_logits = wl.model(x).gather(1, y[:, None]).squeeze(1).double()
    for name, r in relevance.items():
        torch.testing.assert_close(r, target_logits, rtol=1e-5, atol=1e-6, msg=name)


def test_lrp_conserves_relevance_through_attention_layernorm_and_residual_adds():
    from mpq.sensitivity.lrp import gradient_relevance

    wl = transformer_workload()
    with torch.no_grad():
        for m in wl.model.modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is not None:
                m.bias.zero_()
    names = ["embed", "blocks.0.v", "blocks.1.q", "head"]
    layers = {n: wl.model.get_submodule(n) for n in names}
    x, y = wl.batches[0]
    relevance = gradient_relevance(wl.model, layers, (x, y), reduce=signed)
    with torch.no_grad():
        target_logits = wl.model(x).gather(1, y[:, None]).squeeze(1).double()
    torch.testing.assert_close(relevance["head"], target_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(relevance["embed"], target_logits, rtol=1e-5, atol=1e-5)  # all of it reaches the input of the blocks
    assert relevance["blocks.0.v"].abs().sum() > 0 and relevance["blocks.1.q"].abs().sum() > 0


def test_lrp_uses_captum_where_it_covers_the_model_and_both_back_ends_agree():
    wl = mlp_workload()
    auto = run("lrp", wl)
    grad = run("lrp", wl, backend="gradient")
    assert auto.meta["backend"] == "captum" and grad.meta["backend"] == "gradient"
    for name in auto.layers:
        assert auto.layers[name].contribution == pytest.approx(grad.layers[name].contribution, rel=1e-5)
    assert sum(l.contribution for l in auto.layers.values()) == pytest.approx(1.0)


def test_lrp_on_a_transformer_gives_every_layer_relevance_including_queries_and_keys():
    table = run("lrp", transformer_workload())
    assert table.meta["backend"] == "gradient"
    assert all(l.relevance > 0 for l in table.layers.values())
    with pytest.raises(WorkloadError, match="Captum"):
        run("lrp", transformer_workload(), backend="captum")


# ----------------------------------------------------------------------------------------------
# layer importance


def test_layer_importance_maps_block_scores_onto_each_blocks_layers():
    wl = transformer_workload()
    for metric in ("lim", "zd"):
        table = run("layer-importance", wl, metric=metric)
        blocks = table.meta["blocks"]
        assert set(blocks) == {"blocks.0", "blocks.1"}
        assert blocks["blocks.0"] == [f"blocks.0.{n}" for n in ("q", "k", "v", "o", "fc1", "fc2")]
        for block, names in blocks.items():
            assert len({getattr(table.layers[n], metric) for n in names}) == 1
    lim = run("layer-importance", wl)
    assert lim.layers["embed"].lim == 1.0  # token ids in, vectors out: nothing of the input survives


def test_lim_is_zero_for_a_block_that_passes_its_input_through():
    wl = transformer_workload()
    for name in ("o", "fc2"):
        for b in wl.model.blocks:
            nn.init.zeros_(getattr(b, name).weight)
            nn.init.zeros_(getattr(b, name).bias)
    table = run("layer-importance", wl)
    assert table.layers["blocks.0.q"].lim == pytest.approx(0.0, abs=1e-9)


def test_zd_is_the_fraction_of_weights_beyond_one_standard_deviation():
    wl = mlp_workload()
    w = torch.zeros(4, 16)
    w[0, :2] = torch.tensor([10.0, -10.0])
    wl.model[4].weight.data.copy_(w)
    table = run("layer-importance", wl, metric="zd")
    assert table.layers["4"].zd == pytest.approx(2 / 64)
    assert get_estimator("layer-importance", metric="zd").needs_data is False


# ----------------------------------------------------------------------------------------------
# weight-error


def test_weight_error_makes_distortion_the_weight_quantization_noise():
    wl = mlp_workload()
    graph = discover(wl)
    table = run("weight-error", wl)
    problem = build_problem(graph, table, OPTIONS, {"max_avg_bits": 4})
    w = weight_matrix(wl.model[2])
    assert problem.layer("2").option("int2").distortion == pytest.approx(quantization_error(w, OPTIONS["int2"]))
    rel = run("weight-error", wl, normalize=True)
    assert rel.layers["2"].score == pytest.approx(1 / float((w.double() ** 2).sum()))
    assert get_estimator("weight-error").needs_data is False


def test_weight_error_ignores_probes_so_the_cache_is_shared():
    from mpq.sensitivity.cache import cache_key

    wl = mlp_workload()
    assert cache_key(get_estimator("weight-error", probes=3), wl, None) == cache_key(get_estimator("weight-error"), wl, None)


# ----------------------------------------------------------------------------------------------
# bad inputs


LOSS_USERS = ["fisher", "grad-output", "measured", "interlayer"]


@pytest.mark.parametrize("name", LOSS_USERS)
def test_a_loss_that_is_not_a_scalar_is_named(name):
    wl = mlp_workload()
    wl.loss_fn = lambda out, y: F.cross_entropy(out, y, reduction="none")
    with pytest.raises(WorkloadError, match="must return a scalar"):
        run(name, wl)


@pytest.mark.parametrize("name", LOSS_USERS)
def test_a_nan_or_inf_loss_is_named(name):
    wl = mlp_workload()
    wl.loss_fn = lambda out, y: F.cross_entropy(out, y) * float("nan")
    with pytest.raises(WorkloadError, match="must be finite"):
        run(name, wl)
    wl.loss_fn = lambda out, y: F.cross_entropy(out, y) + float("inf")
    with pytest.raises(WorkloadError, match="must be finite"):
        run(name, wl)


def test_api_errors_name_the_problem():
    with pytest.raises(WorkloadError, match="no quantizable layer"):
        discover(Workload(nn.Sequential(nn.ReLU()), [(torch.ones(2, 3), torch.zeros(2))], F.mse_loss))
    with pytest.raises(WorkloadError, match="calibration data is empty"):
        Workload(nn.Linear(2, 2), [], F.mse_loss)
    with pytest.raises(UnknownName, match="available: .*fisher.*measured"):
        get_estimator("hessian-diagonal")
    with pytest.raises(EstimatorSettingsError, match="estimator 'measured': setting metric='mse': expected 'loss' or 'kl'"):
        get_estimator("measured", metric="mse")
    with pytest.raises(EstimatorSettingsError, match="setting device='tpu': expected 'cpu', 'cuda' or 'cuda:N'"):
        run("measured", mlp_workload(), device="tpu")
    with pytest.raises(EstimatorSettingsError, match="estimator 'fisher': setting probes=0: expected a value >= 1"):
        get_estimator("fisher", probes=0)
    with pytest.raises(WorkloadError, match="float"):
        run("measured", mlp_workload(), options=CandidateSet(bits=(16,)).specs())
    regression = Workload(nn.Sequential(nn.Linear(3, 1)), [(torch.ones(2, 3), torch.zeros(2, 1))], F.mse_loss)
    with pytest.raises(WorkloadError, match="metric 'kl' needs .* logits"):
        run("measured", regression, metric="kl")


BAD_MODELS = '''
import torch, torch.nn as nn, torch.nn.functional as F
from mpq.workload import Workload

def data():
    return [(torch.randn(4, 3), torch.randint(0, 2, (4,)))]

def no_layers():
    return Workload(nn.Sequential(nn.ReLU()), data(), F.cross_entropy)

def empty():
    return Workload(nn.Sequential(nn.Linear(3, 2)), [], F.cross_entropy)

def vector_loss():
    return Workload(nn.Sequential(nn.Linear(3, 2)), data(), lambda o, t: F.cross_entropy(o, t, reduction="none"))

def nan_loss():
    return Workload(nn.Sequential(nn.Linear(3, 2)), data(), lambda o, t: F.cross_entropy(o, t) * float("nan"))
'''


@pytest.mark.parametrize("ref,estimator,message,code", [  # 5: the model or data cannot be used; 2: bad input
    ("no_layers", "measured", "no quantizable layer", 5),
    ("empty", "measured", "calibration data is empty", 5),
    ("vector_loss", "measured", "must return a scalar", 5),
    ("nan_loss", "fisher", "must be finite", 5),
    ("vector_loss", "no-such-estimator", "unknown estimator 'no-such-estimator'; available: .*grad-output", 2),
])
def test_cli_errors_name_the_problem(tmp_path, monkeypatch, capsys, ref, estimator, message, code):
    (tmp_path / "badmodels_for_mpq.py").write_text(BAD_MODELS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPQ_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["sensitivity", f"badmodels_for_mpq:{ref}", "--estimator", estimator, "--quiet"]) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    import re

    assert re.search(message, err), err


# ----------------------------------------------------------------------------------------------
# the command line, on a model mpq has never seen


UNSEEN_MODEL = '''
import torch, torch.nn as nn, torch.nn.functional as F
from mpq.workload import Workload

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 12)
        self.hidden = nn.Linear(12, 12)
        self.out = nn.Linear(12, 3)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(torch.relu(self.inp(x)))))

def workload():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(2)]
    return Workload(Net(), batches, F.cross_entropy)
'''

CLI_ESTIMATORS = ["fisher", "grad-output", "measured", "lrp", "layer-importance", "interlayer", "weight-error",
                  "hessian-trace", "hessian-eigen"]


@pytest.mark.parametrize("name", CLI_ESTIMATORS)
def test_every_estimator_runs_from_the_cli_on_an_unseen_mlp(tmp_path, monkeypatch, capsys, name):
    module = f"unseen_mlp_{name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(UNSEEN_MODEL))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPQ_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "sens.json"
    args = ["--estimator", name, "--bits", "2,4,8", "--quiet", "--probes", "2"]
    assert main(["sensitivity", f"{module}:workload", *args, "-o", str(out)]) == 0
    from mpq.schema import SensitivityTable, load_document

    table = load_document(out, SensitivityTable)
    assert table.estimator == name and set(table.layers) == {"inp", "hidden", "out"}
    assert all(math.isfinite(l.score) for l in table.layers.values())
    assert main(["plan", f"{module}:workload", "--budget", "avg_bits=4", *args, "--no-eval", "-o", str(tmp_path / "plan.json")]) == 0
    assert "wrote" in capsys.readouterr().out
    sys.modules.pop(module, None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name,settings", ESTIMATORS)
def test_estimators_run_on_cuda_and_give_the_model_back_on_the_cpu(name, settings):
    wl = transformer_workload()
    before = snapshot(wl.model)
    cpu = run(name, wl, **settings)
    gpu = run(name, wl, device="cuda", **settings)
    assert_same(before, snapshot(wl.model))
    for layer in cpu.layers:
        assert gpu.layers[layer].score == pytest.approx(cpu.layers[layer].score, rel=1e-3, abs=1e-7)


@pytest.mark.parametrize("name", ["fisher", "measured", "interlayer", "lrp", "layer-importance", "weight-error", "grad-output", "hessian-trace"])
def test_unknown_estimator_setting_is_refused_naming_it_and_the_known_ones(name):
    from mpq.errors import EstimatorSettingsError

    with pytest.raises(EstimatorSettingsError, match=f"estimator '{name}': unknown setting 'bogus'; known: .*seed"):
        get_estimator(name, bogus=1)
