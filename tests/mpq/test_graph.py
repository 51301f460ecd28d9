import pytest
import torch
from torch import nn

from mpq.errors import WorkloadError
from mpq.graph import discover
from mpq.workload import Workload


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x)) + x  # residual: conv1 feeds both conv2 and fc
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


class TinyAttention(nn.Module):
    """A transformer-like block: embedding, q/k/v projections, attention, MLP."""

    def __init__(self, vocab=20, d=16):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, d))
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        h = self.emb(ids)
        a = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / 4.0, dim=-1) @ self.v(h)
        h = h + self.o(a)
        h = h + self.mlp(h)
        return self.head(h)


def test_cnn_layers_shapes_and_macs():
    model = TinyCNN()
    g = discover(model, torch.randn(2, 3, 4, 4))
    assert g.names == ["conv1", "conv2", "fc"]
    assert g.layers["conv1"].shape == [8, 3, 3, 3]
    assert g.layers["conv2"].params == 8 * 4 * 9
    # per sample: conv1 has 8*4*4 outputs, each 3*3*3 taps; grouped conv2 has 4*3*3 taps
    assert g.layers["conv1"].macs == 8 * 16 * 27
    assert g.layers["conv2"].macs == 8 * 16 * 36
    assert g.layers["fc"].macs == 5 * 128
    assert set(g.graph.edges) == {("conv1", "conv2"), ("conv1", "fc"), ("conv2", "fc")}
    assert g.method == "fx"


def test_mlp_chain_edges_follow_data_flow():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    g = discover(model, torch.randn(3, 4))
    assert list(g.graph.edges) == [("0", "2"), ("2", "4")]
    assert [g.layers[n].macs for n in g.names] == [32, 64, 16]


def test_transformer_like_block_discovers_embedding_and_projections():
    model = TinyAttention()
    g = discover(model, torch.randint(0, 20, (2, 7)))
    assert set(g.names) == {"emb", "q", "k", "v", "o", "mlp.0", "mlp.2", "head"}
    assert g.layers["emb"].kind == "Embedding" and g.layers["emb"].macs == 0
    assert g.layers["q"].macs == 7 * 16 * 16  # per sample: 7 tokens
    assert {("emb", "q"), ("emb", "k"), ("emb", "v"), ("q", "o"), ("v", "o"), ("mlp.2", "head"), ("emb", "head")} <= set(g.graph.edges)


def test_untraceable_model_falls_back_to_hook_order():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow defeats torch.fx
                x = x * 2
            return self.b(self.a(x))

    g = discover(Branchy(), torch.randn(2, 4))
    assert g.method == "hooks"
    assert list(g.graph.edges) == [("a", "b")]


def test_gpt2_style_conv1d_weight_is_reported_output_first():
    transformers = pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    model = nn.Sequential(Conv1D(6, 4))  # nf=6 outputs, nx=4 inputs; weight stored [4, 6]
    g = discover(model, torch.randn(2, 4))
    assert g.layers["0"].shape == [6, 4]
    assert g.layers["0"].macs == 24


def test_model_without_quantizable_layer_is_refused():
    w = Workload(nn.Sequential(nn.ReLU()), [(torch.randn(2, 3), torch.zeros(2))], lambda o, t: o.sum())
    with pytest.raises(WorkloadError, match="no quantizable layer"):
        discover(w)
