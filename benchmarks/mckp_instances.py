"""Multiple-choice knapsack instances shaped like bit-allocation problems, for solver benchmarks.

N groups (layers or channel groups) x 6 options (int 2, 3, 4, 5, 6, 8 bits); pick one option per group,
minimise the summed distortion under one size budget (an average of 4 bits per weight).

Families:
  layer    parameter counts log-uniform in 1e4..5e7, rounded to multiples of 4096; per-group
           sensitivity lognormal(0, 1.5); distortion ~ sensitivity * params * 4^-bits with 10% jitter,
           made non-increasing in bits
  chgroup  every group 4096 parameters, the same distortion model

gen_instance returns normalised floats (size[N,K], dist[N,K], budget, unit): sizes are params*bits
divided by the mean parameter count, and every size is an integer multiple of `unit` (4096 params x 1 bit),
so integer sizes are recovered exactly with  params = rint(size[:,0] / (2*unit)) * 4096.

Usage: python mckp_instances.py N FAMILY SEED  -> prints N, the budget and the first rows.

The ``layer`` and ``chgroup`` instance families live here, in the repository, so that benchmarks and
tests are self-contained; ``integer_instance`` is the integer-sized variant.
"""
import sys

import numpy as np

BITS = np.array([2, 3, 4, 5, 6, 8], dtype=np.float64)


def gen_instance(N, family, seed, sens_sigma=1.5, noise=0.1):
    """Return (size[N,K], dist[N,K], budget, unit), normalised so sizes ~ bits and dist ~ O(1);
    unit = normalised size of 4096 params x 1 bit (every extra size is an integer multiple)."""
    rng = np.random.default_rng(seed)
    if family == "layer":
        # log-uniform 1e4..5e7, rounded to a multiple of 4096 (64x64 tiles) so that the
        # budget has an exact integer grid for the DP
        params = 4096.0 * np.maximum(1, np.round(np.exp(rng.uniform(np.log(1e4), np.log(5e7), N)) / 4096))
    elif family == "chgroup":
        params = np.full(N, 4096.0)
    else:
        raise ValueError(family)
    s = rng.lognormal(0.0, sens_sigma, N)                       # per-group sensitivity
    d = s[:, None] * params[:, None] * 4.0 ** (-BITS[None, :])  # c ~ params, 4^-bits
    d = d * np.exp(noise * rng.standard_normal(d.shape))       # "convex-ish": 10% jitter
    d = np.minimum.accumulate(d, axis=1)                        # non-increasing in bits
    size = params[:, None] * BITS[None, :]
    budget = 4.0 * params.sum()
    pscale = params.mean()
    dscale = (s * params * 4.0 ** -4).mean()
    return size / pscale, d / dscale, budget / pscale, 4096.0 / pscale


def integer_instance(N, family, seed):
    """(dist[N,K], bits[N,K] int64, budget in bits): the exact integer form of ``gen_instance``, the
    sizes an exact solver (and a MILP with integer coefficients in its budget row) should see."""
    size, dist, budget, unit = gen_instance(N, family, seed)
    params = np.rint(size[:, 0] / (BITS[0] * unit)).astype(np.int64) * 4096
    return dist, params[:, None] * BITS.astype(np.int64)[None, :], float(4 * params.sum())


def problem_columns(N, family, seed):
    """The instance as an ``mpq.problem-columns/v1`` (options int2..int8 per output channel, budget
    ``max_avg_bits=4``), built with whole-array operations, for file-to-file benchmarks and tests."""
    from mpq.columnar import ProblemColumns
    from mpq.schema import Constraints

    dist, bits, budget = integer_instance(N, family, seed)
    G, K = dist.shape
    params = bits[:, 0] // 2
    rows = G * K
    w_bits = np.tile(BITS.astype(np.int64), G)
    a = {
        "layer_name": np.char.add("g", np.arange(G).astype(str)), "layer_params": params,
        "layer_macs": np.zeros(G, np.int64), "layer_shape": np.stack([params // 64, np.full(G, 64)], 1),
        "layer_module": np.full(G, ""), "layer_channels": np.full((G, 2), -1, np.int64),
        "option_names": np.array([f"int{b}" for b in BITS.astype(int)]),
        "row_layer": np.repeat(np.arange(G, dtype=np.int64), K), "row_option": np.tile(np.arange(K, dtype=np.int64), G),
        "row_format": np.zeros(rows, np.int64), "row_structure": np.zeros(rows, np.int64), "w_bits": w_bits,
        "group_size": np.zeros(rows, np.int64), "symmetric": np.ones(rows, bool), "prune_ratio": np.zeros(rows),
        "a_bits": np.zeros(rows, np.int64), "bits": bits.ravel(), "bytes": -(-bits.ravel() // 8),
        "bitops": np.full(rows, -1, np.int64), "latency_ms": np.full(rows, np.nan), "distortion": dist.ravel(),
    }
    return ProblemColumns(a, Constraints(max_avg_bits=budget / params.sum()))


if __name__ == "__main__":
    n, fam, seed = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    size, dist, budget, unit = gen_instance(n, fam, seed)
    params = np.rint(size[:, 0] / (BITS[0] * unit)).astype(np.int64) * 4096
    print(f"N={n} family={fam} seed={seed} total_params={params.sum()} budget_bits={4 * params.sum()}")
    print("params[:3]", params[:3].tolist())
    print("dist[:3]", dist[:3].round(6).tolist())
