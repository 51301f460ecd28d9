"""Tiny models and calibration batches built in code, shared by the estimator tests."""
import torch
from torch import nn


def tiny_mlp(bias=True):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 16, bias=bias), nn.Tanh(), nn.Linear(16, 16, bias=bias), nn.Tanh(), nn.Linear(16, 4, bias=bias)
    ).eval()


class TinyCNN(nn.Module):
    """conv 1->3 (27 weights), conv 3->8 (216), linear 128->5 (640), on 8x8 images."""

    def __init__(self, bias=True):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1, bias=bias)
        self.conv2 = nn.Conv2d(3, 8, 3, padding=1, bias=bias)
        self.fc = nn.Linear(8 * 4 * 4, 5, bias=bias)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def mlp_batches(sizes=(32, 32, 16)):
    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(8, 4, generator=g)
    out = []
    for n in sizes:
        x = torch.randn(n, 8, generator=g)
        out.append((x, (x @ teacher).argmax(1)))
    return out


def cnn_batches(sizes=(24, 24)):
    g = torch.Generator().manual_seed(2)
    out = []
    for n in sizes:
        x = torch.rand(n, 1, 8, 8, generator=g)
        y = (x[:, 0, :4].mean((1, 2)) * 10).long().clamp(0, 4)
        out.append((x, y))
    return out


def exact_block_traces(model, batches, loss_fn, names):
    """tr(H_ll) of the sample-weighted mean loss, by one HVP per weight coordinate (double backprop)."""
    weights = [model.get_submodule(n).weight for n in names]
    total = sum(x.shape[0] for x, _ in batches)
    traces = {n: 0.0 for n in names}
    for x, y in batches:
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, weights, create_graph=True)
        for n, w, g in zip(names, weights, grads):
            d = w.numel()
            eye = torch.eye(d).view(d, *w.shape)
            (hv,) = torch.autograd.grad(g, w, eye, retain_graph=True, is_grads_batched=True)
            traces[n] += x.shape[0] / total * float(hv.reshape(d, d).diagonal().double().sum())
    return traces
