"""Patient-level splitting: every patient's records land in exactly one split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["split_by_patient"]


def split_by_patient(
    records: Sequence[Mapping[str, Any]],
    fractions: Mapping[str, float],
    *,
    seed: int = 0,
    stratify_key: str | None = "label",
    patient_key: str = "patient_id",
) -> dict[str, list[dict[str, Any]]]:
    """Split records into named splits by patient, deterministically for a seed.

    Patients (not records) are shuffled and cut by ``fractions``; with ``stratify_key`` the cut
    is made separately within each stratum (a patient's stratum is their most frequent value),
    so class proportions are kept. A patient never appears in two splits.

    Args:
        records: manifest records, each with ``patient_key``.
        fractions: split name -> fraction of patients, e.g. ``{"training": 0.8,
            "validation": 0.2}``; must be non-negative and sum to 1.
        seed: seed of the shuffle.
        stratify_key: record key to stratify by, or ``None``.
        patient_key: the record key holding the (synthetic) patient identifier.

    Returns:
        split name -> list of records (copies), in the order of ``fractions``.
    """
    names = list(fractions)
    weights = np.asarray([fractions[n] for n in names], dtype=float)
    if not names or (weights < 0).any() or not np.isclose(weights.sum(), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {dict(fractions)}")
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for i, rec in enumerate(records):
        patient = rec.get(patient_key)
        if not isinstance(patient, str) or not patient:
            raise ValueError(f"record {i} has no {patient_key!r} (got {patient!r}); cannot split by patient")
        by_patient.setdefault(patient, []).append(dict(rec))

    strata: dict[str, list[str]] = {}
    for patient, recs in by_patient.items():
        stratum = (
            ""
            if stratify_key is None
            else str(Counter(str(r.get(stratify_key)) for r in recs).most_common(1)[0][0])
        )
        strata.setdefault(stratum, []).append(patient)

    rng = np.random.default_rng(seed)
    out: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for stratum in sorted(strata):
        patients = sorted(strata[stratum])
        rng.shuffle(patients)
        cuts = np.rint(np.cumsum(weights) * len(patients)).astype(int)
        start = 0
        for name, stop in zip(names, cuts, strict=True):
            for patient in patients[start:stop]:
                out[name].extend(by_patient[patient])
            start = stop
    return out
