"""output-gn: its sampled quadratic form matches the exact Gauss-Newton damage it estimates, on a tiny model."""
import pytest
import torch
from torch import nn

from mpq.cost import CandidateSet
from mpq.graph import discover
from mpq.pipeline import sensitivities
from mpq.quant import fake_quantize, set_weight_matrix, weight_matrix
from mpq.workload import Workload
from tests.helpers.hf_tiny import tiny_hf  # noqa: F401  (fixture)
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


def _reference_output_gn(wl, graph, specs, samples, seed, per_sequence=True):
    """½ E[(Σ_t g_t · ΔW x_t)²] written the plain way: every layer output's cotangent kept, ``ΔW x`` by a
    functional call of the module per option (what the estimator computes with products restricted to
    the rows that get a cotangent, one product for all options, and embeddings by their rows). With
    ``per_sequence`` each sequence's sum is squared apart (embeddings keep one sum a batch)."""
    from torch.func import functional_call

    from mpq.sensitivity.grad_output import quantized_weight
    from mpq.sensitivity.output_gn import _parts, main_output, sample_cotangents
    from mpq.workload import call_model

    gen = torch.Generator().manual_seed(seed)
    modules = {n: graph.module(n) for n in graph.names}
    for p in wl.model.parameters():
        p.requires_grad_(False)
    for m in modules.values():
        m.weight.requires_grad_(True)
    totals = {n: {o: 0.0 for o in specs} for n in modules}
    try:
        for inputs, targets in wl.batches:
            calls = []
            hooks = [m.register_forward_hook(lambda mod, a, y, n=n: calls.append((n, a, y))) for n, m in modules.items()]
            out = main_output(call_model(wl.model, inputs))
            for h in hooks:
                h.remove()
            cots = sample_cotangents(wl, out, targets, samples, gen)
            pulled = [torch.autograd.grad(out, [y for _, _, y in calls], cots[k], retain_graph=True, allow_unused=True)
                      for k in range(samples)]
            with torch.no_grad():
                for i, (n, args, _) in enumerate(calls):
                    if pulled[0][i] is None:  # not on the path to the output (a pooler the loss does not read)
                        continue
                    for o, spec in specs.items():
                        m = modules[n]
                        dw = quantized_weight(m, spec) - m.weight
                        params = {"weight": dw} | ({"bias": torch.zeros_like(m.bias)} if getattr(m, "bias", None) is not None else {})
                        dy = functional_call(m, params, args).double()
                        # a layer whose tensors lead with the batch (not an expert's routed tokens, not an embedding)
                        apart = (per_sequence and not isinstance(m, nn.Embedding) and dy.dim() >= out.dim()
                                 and len(dy) == len(out))
                        parts = _parts(len(dy)) if apart else 1
                        s = torch.stack([(pulled[k][i].double() * dy).reshape(parts, -1).sum(1)
                                         for k in range(samples)])
                        totals[n][o] += 0.5 * float((s**2).sum(1).mean()) / len(wl.batches)
    finally:
        for m in modules.values():
            m.weight.requires_grad_(False)
    return totals


@pytest.mark.parametrize("kind,per_sequence,max_parts", [("bert", True, 8), ("gpt2", True, 8), ("llama", True, 8),
                                                         ("mixtral", True, 8), ("bert", True, 2), ("bert", False, 8),
                                                         ("llama", False, 8)])
def test_output_gn_equals_the_plain_computation_on_hf_models(kind, per_sequence, max_parts, tiny_hf, one_thread, monkeypatch):
    """Padding rows, embeddings, Conv1D (GPT-2), experts' routed tokens (Mixtral) and causal-LM cotangents, and options held as integer codes
    (symmetric, asymmetric, grouped) or as float errors (fp8), taken a few rows at a time, each sequence's
    share squared apart (consecutive sequences together beyond MAX_PARTS) or the batch's sum squared whole: the
    fast path computes the same numbers."""
    from mpq.model_ref import load_workload

    monkeypatch.setattr("mpq.sensitivity.output_gn.SLICE", 300)  # several slices a layer, a last one shorter
    monkeypatch.setattr("mpq.sensitivity.output_gn.MAX_PARTS", max_parts)  # 2: batches of 4 in two terms of two

    wl = load_workload(str(tiny_hf[kind]), calib=str(tiny_hf["calib"]), hf={"batch_size": 3 if max_parts > 2 else 4})
    cands = CandidateSet(bits=(3, 8), group_sizes=(None, 16), symmetric=(True, False), formats=("int", "fp"))
    table = sensitivities(wl, "output-gn", candidates=cands, use_cache=False, samples=3, seed=5, quiet=True,
                          per_sequence=per_sequence)
    expected = _reference_output_gn(wl, discover(wl), cands.specs(), samples=3, seed=5, per_sequence=per_sequence)
    assert set(table.layers) == set(expected)
    for name, layer in table.layers.items():
        for oid, value in expected[name].items():
            assert layer.options[oid] == pytest.approx(value, rel=1e-4, abs=1e-12), (name, oid)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logits_cotangents_built_in_row_blocks_are_fisher_samples(dtype, monkeypatch):
    """Cotangents built a few token rows at a time (an lm_head's logits are too large to copy whole) are
    ``(p - onehot(y)) / sqrt(N)`` with ``y ~ p`` on every row, in the output's dtype, the same for a seed,
    and their covariance is the Fisher ``(diag p - p p^T) / N``."""
    from mpq.sensitivity.output_gn import cotangents

    monkeypatch.setattr("mpq.sensitivity.output_gn.ROWS", 7)  # 5 blocks over 3 x 11 tokens, a last one shorter
    wl = Workload(model=tiny_mlp(), batches=mlp_batches(), loss_fn=nn.functional.cross_entropy, name="tiny-mlp")
    logits = torch.randn(3, 11, 6, generator=torch.Generator().manual_seed(0)).to(dtype)
    n = 33
    p = torch.softmax(logits.float().reshape(n, 6), -1)
    draws = list(cotangents(wl, logits, None, 4000, torch.Generator().manual_seed(1)))
    first = list(cotangents(wl, logits, None, 3, torch.Generator().manual_seed(1)))
    again = list(cotangents(wl, logits, None, 3, torch.Generator().manual_seed(1)))
    assert all(c.dtype == dtype and c.shape == logits.shape for c in draws)
    onehot = p.unsqueeze(0) - torch.stack(draws).float().reshape(-1, n, 6) * n**0.5
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(onehot.sum(-1), torch.ones(()), atol=tol * 6)
    assert torch.allclose(onehot.max(-1).values, torch.ones(()), atol=tol)  # one 1 a row, the rest 0
    assert all(torch.equal(a, b) for a, b in zip(again, first))
    c = torch.stack(draws).float().reshape(-1, n, 6)[:, 20]  # a row in the third block
    fisher = (torch.diag(p[20]) - torch.outer(p[20], p[20])) / n
    assert torch.allclose(c.t() @ c / len(c), fisher, atol=0.15 / n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_option_errors_are_the_quantizers_to_the_bit(dtype, monkeypatch):
    """Integer options are rounded again from their scales where they are used, a slice of rows at a time: each
    error is ``fake_quantize(W) - W`` bit for bit (symmetric, asymmetric, per channel, grouped), and so is the
    float error kept for another format; ``dots`` is their inner product with ``G^T X``."""
    from mpq.quant import QuantSpec
    from mpq.sensitivity.output_gn import _OptionErrors

    monkeypatch.setattr("mpq.sensitivity.output_gn.SLICE", 7 * 64)  # 7 rows a slice over 30: a last one shorter
    layer = nn.Linear(64, 30).to(dtype)
    with torch.no_grad():
        layer.weight[3] = 0.0  # a zero row: scale 1 by convention
        layer.weight[5, :16] *= 40  # an outlier group
    specs = {f"{b}{s}{g}": QuantSpec(w_bits=b, group_size=g, symmetric=s)
             for b in (2, 4, 8) for s in (True, False) for g in (None, 16, 128)}
    specs["fp8"] = QuantSpec(w_bits=8, format="fp8_e4m3")
    errors = _OptionErrors(layer, specs)
    w = weight_matrix(layer).float()
    expected = [fake_quantize(weight_matrix(layer), spec).float() - w for spec in specs.values()]
    for i, e in enumerate(expected):
        assert torch.equal(errors.error(i), e), list(specs)[i]
        assert errors.sq[list(specs)[i]] == pytest.approx(float(e.double().pow(2).sum()), rel=1e-12)
    g, x = torch.randn(12, 30), torch.randn(12, 64)
    m = (g.t() @ x).double()
    dots = errors.dots(g, x)
    for i, e in enumerate(expected):
        assert float(dots[i]) == pytest.approx(float((e.double() * m).sum()), rel=1e-5, abs=1e-6)
