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
