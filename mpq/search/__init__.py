"""Distributed plan search on an Optuna study: storage, study settings, measured objective, workers.

Importing this package is light (no torch): ``mpq.search.measured`` is the only model-facing module
and is imported only by processes that evaluate plans on a model.
"""
from __future__ import annotations

from .storage import StorageUnreachable, mask_url, open_storage
from .shared import StudySearch
from .study import SearchSpec, StudyMismatch, join_study, open_study, problem_fingerprint

__all__ = [
    "SearchSpec", "StorageUnreachable", "StudyMismatch", "StudySearch", "join_study", "mask_url", "open_storage", "open_study",
    "problem_fingerprint",
]
