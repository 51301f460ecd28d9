"""How well each estimator orders layers: Spearman correlation with the measured loss increase at 3 bits.

The reference is the ``measured`` estimator at ``int3`` (per-channel symmetric round-to-nearest):
the exact increase of the mean calibration loss when one layer alone is quantized. Each estimator's
prediction for a layer at int3 is what the cost model would use: its measured per-option
distortion when it has one, else ``score × ||Q_int3(W) - W||²``. The second column ranks by the
raw ``score`` alone. ``interlayer`` is left out: its per-layer terms are the reference itself.

Models: the embedded digits CNN (committed weights) and a small transformer (2 pre-norm layers,
d=32) trained here for a few seconds, seeded, on a synthetic task: the most frequent of tokens
0-3 in a random sequence. Run: ``python benchmarks/estimator_agreement.py``.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from mpq.cost import CandidateSet
from mpq.graph import discover
from mpq.quant import quantization_error, weight_matrix
from mpq.sensitivity.base import available_estimators, get_estimator
from mpq.sensitivity.cache import estimate
from mpq.workload import Workload

INT3 = "int3"
OPTIONS = CandidateSet(bits=(2, 3, 4, 8)).specs()

ESTIMATORS = [
    ("fisher", {}), ("fisher", {"distortion": "score"}), ("grad-output", {}), ("measured", {"metric": "kl"}),
    ("lrp", {}), ("layer-importance", {"metric": "lim"}), ("layer-importance", {"metric": "zd"}),
    ("weight-error", {}), ("weight-error", {"normalize": True}),
]
if "hessian-trace" in available_estimators():
    ESTIMATORS.insert(0, ("hessian-trace", {}))
if "hessian-eigen" in available_estimators():
    ESTIMATORS.insert(1, ("hessian-eigen", {}))


class Block(nn.Module):
    def __init__(self, d: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.ln1(x)
        split = lambda z: z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        att = F.softmax(split(self.q(h)) @ split(self.k(h)).transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        x = x + self.o((att @ split(self.v(h))).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class SmallTransformer(nn.Module):
    def __init__(self, vocab: int = 8, d: int = 32, classes: int = 4, layers: int = 2, length: int = 12):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(length, d))
        self.blocks = nn.ModuleList(Block(d) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(1))


def synthetic(n: int, g: torch.Generator, vocab: int = 8, length: int = 12):
    tokens = torch.randint(0, vocab, (n, length), generator=g)
    counts = torch.stack([(tokens == c).sum(1) for c in range(4)], 1).float()
    return tokens, (counts + 1e-3 * torch.arange(4, 0, -1)).argmax(1)  # ties go to the lowest token


def transformer_workload(seed: int = 0) -> Workload:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = SmallTransformer()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        x, y = synthetic(64, g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    batches = [synthetic(64, g) for _ in range(2)]
    test = synthetic(512, g)

    def evaluate(m):
        with torch.no_grad():
            return {"accuracy": float((m(test[0]).argmax(1) == test[1]).float().mean())}

    return Workload(model, batches, F.cross_entropy, evaluate=evaluate, name="benchmarks:small-transformer")


def predicted_at_int3(table, graph) -> tuple[list[float], list[float]]:
    pred, score = [], []
    for name in graph.names:
        layer = table.layers[name]
        if layer.options is not None:
            pred.append(layer.options[INT3])
        else:
            pred.append(layer.score * quantization_error(weight_matrix(graph.module(name)), OPTIONS[INT3]))
        score.append(layer.score)
    return pred, score


def rho(a: list[float], b: list[float]) -> str:
    """Spearman's rho as text; 'n/a' when one side ranks every layer the same."""
    if len(set(a)) < 2 or len(set(b)) < 2:
        return "n/a"
    return f"{spearmanr(a, b).statistic:.3f}"


def label(name: str, settings: dict) -> str:
    return name + "".join(f" {k}={v}" for k, v in settings.items())


def agreement(title: str, workload: Workload) -> None:
    graph = discover(workload)
    t0 = time.perf_counter()
    reference = estimate(get_estimator("measured", quiet=True), workload, graph, {INT3: OPTIONS[INT3]}, use_cache=False)
    truth = [reference.layers[n].options[INT3] for n in graph.names]
    print(f"\n## {title}: {len(graph)} layers; reference = measured loss increase at {INT3} ({time.perf_counter() - t0:.1f} s)")
    if workload.evaluate:
        print(f"full-precision metrics: {workload.evaluate(workload.model)}")
    order = sorted(graph.names, key=lambda n: -reference.layers[n].options[INT3])
    print("most sensitive at int3: " + ", ".join(f"{n} ({reference.layers[n].options[INT3]:.3g})" for n in order[:4]))
    rows = []
    for name, settings in ESTIMATORS:
        est = get_estimator(name, quiet=True, **settings)
        t0 = time.perf_counter()
        table = estimate(est, workload, graph, OPTIONS if est.per_option else None, use_cache=False)
        seconds = time.perf_counter() - t0
        pred, score = predicted_at_int3(table, graph)
        rho_pred = rho(pred, truth)
        rho_score = rho(score, truth)
        rows.append((label(name, settings), rho_pred, rho_score, seconds))
    width = max(len(r[0]) for r in rows)
    print(f"{'estimator':{width}}  rho(predicted int3 distortion)  rho(score)  seconds")
    print(f"{'-' * width}  {'-' * 30}  {'-' * 10}  {'-' * 7}")
    for lab, a, b, s in rows:
        print(f"{lab:{width}}  {a:30}  {b:10}  {s:7.2f}")


def main() -> None:
    from mpq.examples.digits import workload as digits_workload

    torch.set_num_threads(1)  # tiny models: one thread is fastest, and kind to a shared machine
    start = time.perf_counter()
    agreement("digits CNN (mpq.examples.digits)", digits_workload())
    t0 = time.perf_counter()
    wl = transformer_workload()
    print(f"\n(trained the small transformer in {time.perf_counter() - t0:.1f} s)")
    agreement("small transformer (2 layers, d=32, synthetic majority task)", wl)
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
