"""Where a study stands: trial counts by state and its current non-dominated feasible plans."""
from __future__ import annotations

from dataclasses import dataclass

from mpq.schema import Plan
from mpq.solvers.compiled import compile_problem
from mpq.solvers.evolutionary import EvolutionarySolver, SearchSpace, exact_seeds

from .storage import mask_url, open_storage
from .study import SearchSpec, join_study

#: Every Optuna trial state, in the order status reports them.
STATES = ("COMPLETE", "RUNNING", "WAITING", "FAIL", "PRUNED")


@dataclass
class StudyStatus:
    study: str
    storage: str  # the URL with its password masked
    spec: SearchSpec
    trials: dict[str, int]
    plans: list[Plan]  # non-dominated and within every constraint, smallest first

    def as_dict(self) -> dict:
        return {
            "study": self.study, "storage": self.storage, "objective": self.spec.objective, "model": self.spec.model,
            "fingerprint": self.spec.fingerprint, "target": self.spec.trials,
            "trials": {s: self.trials.get(s, 0) for s in STATES},
            "plans": [p.model_dump(mode="json", by_alias=True) for p in self.plans],
        }


def study_status(url: str, study_name: str) -> StudyStatus:
    storage = open_storage(url, heartbeat_s=None)
    study, spec = join_study(url, study_name, storage=storage)
    cp = compile_problem(spec.problem)
    space = SearchSpace(cp)
    bound = exact_seeds(cp, space.sizes, 1)[1] if spec.objective == "additive" else None
    result = EvolutionarySolver().collect(study, cp, space, bound=bound)
    return StudyStatus(study_name, mask_url(url), spec, result.trials, result.plans)
