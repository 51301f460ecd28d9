"""Inter-layer dependencies: the loss of quantizing two adjacent layers together is not the sum of the two.

For every pair of layers adjacent in the data-flow graph (``graph.adjacent_pairs()``) and every
pair of low-bit options (those with ``w_bits <= max_bits``, where the interaction matters; the
lowest-bit option when none is that low), the pair term is::

    d_ab(o, p) = damage(a at o and b at p) - damage(a at o) - damage(b at p)

written to ``pairs`` with one ``options`` entry per option pair; ``mpq.cost`` turns them into
problem pairs, which the solvers add when both layers take the named options (the idea of
"Hessians augmented with inter-layer dependencies", measured exactly here). The per-layer terms
are the ``measured`` estimator's, so the table is complete on its own. ``metric`` and ``probes``
are as in ``measured``; a pair's ``score`` is its term at the lowest-bit option pair.
"""
from __future__ import annotations

from itertools import product
from typing import Mapping, Optional

from pydantic import Field

from mpq.errors import WorkloadError
from mpq.settings import Count
from mpq.graph import LayerGraph
from mpq.quant import QuantSpec
from mpq.schema import PairOption, SensitivityPair, SensitivityTable
from mpq.workload import Workload

from ._runtime import all_quantized, calibration, candidate_options, check_device, prepared, progress
from .base import register_estimator
from .measured import Damage, MeasuredEstimator


def pair_options(specs: Mapping[str, QuantSpec], max_bits: int) -> list[str]:
    """Option ids where pairs are measured: every option of at most ``max_bits``, else the lowest-bit one."""
    low = [oid for oid, s in specs.items() if s.w_bits <= max_bits]
    if low:
        return sorted(low, key=lambda oid: (specs[oid].w_bits, oid))
    return [min(specs, key=lambda oid: (specs[oid].w_bits, oid))]


@register_estimator
class InterlayerEstimator(MeasuredEstimator):
    """Measured per-layer damage plus joint-minus-individual terms for adjacent layers at low bit-widths."""

    name = "interlayer"

    class Settings(MeasuredEstimator.Settings):
        max_bits: Count = Field(4, description="pairs are measured for options of at most this many bits")

    def estimate(self, workload: Workload, graph: LayerGraph, options: Optional[Mapping[str, QuantSpec]] = None) -> SensitivityTable:
        specs = candidate_options(options, self.name)
        device = check_device(self.device)
        low = pair_options(specs, self.max_bits)
        with prepared(workload.model, device) as model:
            batches = calibration(workload, self.probes, device)
            damage = Damage(workload, model, batches, self.metric)
            layers = self.measure_layers(graph, specs, damage)
            pairs = []
            adjacent = graph.adjacent_pairs()
            work = progress([(a, b, o, p) for a, b in adjacent for o, p in product(low, low)],
                            desc=f"{self.name} pairs", quiet=self.quiet)
            terms: dict[tuple[str, str], list[PairOption]] = {pair: [] for pair in adjacent}
            for a, b, o, p in work:
                with all_quantized([(graph.module(a), specs[o]), (graph.module(b), specs[p])]):
                    joint = damage()
                term = joint - layers[a].options[o] - layers[b].options[p]
                terms[(a, b)].append(PairOption(option_a=o, option_b=p, distortion=term))
            for (a, b), opts in terms.items():
                pairs.append(SensitivityPair(a=a, b=b, score=opts[0].distortion, options=opts))
        return self.table(workload, layers, pairs, batches=len(batches), metric=self.metric, pair_options=low)
