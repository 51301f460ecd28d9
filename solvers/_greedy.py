"""Greedy baseline (MPTQ-ViT): lower the layer that costs the least distortion per byte saved.

``direction="down"`` starts every group at its largest efficient option and repeatedly steps the
group with the smallest distortion increase per unit of size saved one rung down, until every
budget is met. ``direction="up"`` starts at the smallest options and repeatedly takes the step
with the largest distortion decrease per unit of size added that still fits. With several
budgets, size is the sum of each resource divided by its cap. Not exact: status ``feasible``,
with the Lagrangian (LP) bound as the bound when there is a single budget and no pairwise terms.
"""
from __future__ import annotations

import heapq
from typing import Optional

import numpy as np

from mpq.errors import SolverSettingsError

from .compiled import Compiled


def _ladders(cp: Compiled) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per group: efficient options by ascending combined size (cost strictly decreasing), with size and cost."""
    arrays = cp.arrays
    size = sum(r.astype(np.float64) / max(cap, 1e-300) for r, cap in ((arrays.resources[n], c) for n, c in arrays.caps.items()))
    out_idx, out_size, out_cost = [], [], []
    for g in range(arrays.n_groups):
        n = int(arrays.n_options[g])
        s, c = size[g, :n], arrays.cost[g, :n]
        order = np.lexsort((c, s))
        s, c = s[order], c[order]
        keep = np.ones(n, dtype=bool)
        keep[1:] = c[1:] < np.minimum.accumulate(c)[:-1]
        out_idx.append(order[keep])
        out_size.append(s[keep])
        out_cost.append(c[keep])
    return out_idx, out_size, out_cost


def greedy_choice(cp: Compiled, direction: str = "down") -> Optional[np.ndarray]:
    """A choice that meets every budget (None when the greedy walk cannot find one)."""
    idx, size, cost = _ladders(cp)
    G = len(idx)
    arrays = cp.arrays
    if direction == "down":
        rung = np.array([len(i) - 1 for i in idx])
        choice = np.array([i[r] for i, r in zip(idx, rung)])
        use = arrays.usage(choice)
        heap = [((cost[g][rung[g] - 1] - cost[g][rung[g]]) / (size[g][rung[g]] - size[g][rung[g] - 1]), g) for g in range(G) if rung[g] > 0]
        heapq.heapify(heap)
        while any(use[n] > arrays.caps[n] * (1 + 1e-12) for n in arrays.caps):
            if not heap:
                return None
            _, g = heapq.heappop(heap)
            old = choice[g]
            rung[g] -= 1
            choice[g] = idx[g][rung[g]]
            for n, r in arrays.resources.items():
                use[n] += float(r[g, choice[g]] - r[g, old])
            r = rung[g]
            if r > 0:
                heapq.heappush(heap, ((cost[g][r - 1] - cost[g][r]) / (size[g][r] - size[g][r - 1]), g))
        return choice if arrays.fits(choice) else None
    if direction != "up":
        raise SolverSettingsError(f"greedy direction must be 'down' or 'up', got {direction!r}")
    rung = np.zeros(G, dtype=np.int64)
    choice = np.array([i[0] for i in idx])
    if not cp.fits(choice):
        return None
    use = arrays.usage(choice)
    heap = [(-(cost[g][0] - cost[g][1]) / (size[g][1] - size[g][0]), g) for g in range(G) if len(idx[g]) > 1]
    heapq.heapify(heap)
    while heap:
        _, g = heapq.heappop(heap)
        old, new = choice[g], idx[g][rung[g] + 1]
        delta = {n: float(r[g, new] - r[g, old]) for n, r in arrays.resources.items()}
        if any(use[n] + delta[n] > arrays.caps[n] * (1 + 1e-12) for n in arrays.caps):
            continue  # a larger rung of this group cannot fit either
        for n in use:
            use[n] += delta[n]
        rung[g] += 1
        choice[g] = new
        r = rung[g]
        if r + 1 < len(idx[g]):
            heapq.heappush(heap, (-(cost[g][r] - cost[g][r + 1]) / (size[g][r + 1] - size[g][r]), g))
    return choice
