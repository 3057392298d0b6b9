"""Datalist manifests: reading, validation that reports every problem at once, quarantine.

A manifest is a MONAI datalist JSON (``training``, ``validation`` and named test sets such as
``test_biased``) whose records hold ``image``, ``label``, optional ``mask``, ``source`` (the
hospital) and ``patient_id`` (synthetic and opaque). The JSON Schema is
``data_manifests/datalist.schema.json`` (also shipped inside the package).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from tqdm.auto import tqdm

from tea_med.data.errors import DataError

__all__ = [
    "METADATA_KEYS",
    "PROBLEM_CODES",
    "ManifestError",
    "Problem",
    "load_datalist",
    "manifest_schema",
    "quarantine",
    "read_manifest",
    "split_names",
    "validate_manifest",
    "write_quarantine_report",
]

logger = logging.getLogger(__name__)

#: top-level keys that are not splits
METADATA_KEYS = ("name", "description", "labels", "metadata")
#: what :class:`Problem.code` can be
PROBLEM_CODES = (
    "schema",  # the JSON does not follow the schema (wrong type, missing key, ...)
    "missing_file",  # image or mask file does not exist
    "unknown_label",  # label not among the allowed labels
    "patient_in_two_splits",  # the same patient_id in two splits (leakage)
    "duplicate_image",  # the same image file listed twice
    "missing_mask",  # no mask where masks are required
    "unreadable",  # the image or mask exists but cannot be used (checked on request)
)
_PATH_FIELDS = ("image", "mask")

Manifest = Mapping[str, Any]


@dataclass(frozen=True)
class Problem:
    """One problem in a manifest, located as ``split[index].field`` where that applies."""

    code: str
    message: str
    split: str | None = None
    index: int | None = None
    field: str | None = None

    @property
    def location(self) -> str:
        if self.split is None:
            return self.field or "(manifest)"  # a top-level key such as "labels"
        where = self.split if self.index is None else f"{self.split}[{self.index}]"
        return f"{where}.{self.field}" if self.field else where

    @property
    def record_key(self) -> tuple[str, int] | None:
        """``(split, index)`` of the record this problem belongs to, if any."""
        return None if self.split is None or self.index is None else (self.split, self.index)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.location}: {self.message} [{self.code}]"


class ManifestError(DataError):
    """A manifest with problems; ``problems`` lists all of them."""

    def __init__(self, path: str | os.PathLike[str] | None, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(path, f"{n} problem{'s' if n != 1 else ''} in the manifest:\n{lines}")

    def __reduce__(self) -> tuple[type[ManifestError], tuple[Any, ...]]:
        return (type(self), (self.path, self.problems))


def manifest_schema() -> dict[str, Any]:
    """The datalist JSON Schema (the copy shipped with the package)."""
    text = resources.files("tea_med.data").joinpath("datalist.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a manifest JSON file; :class:`DataError` names the file and the JSON error position."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(path, f"cannot read the manifest ({exc.strerror or exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if not isinstance(data, dict):
        raise DataError(path, f"a manifest must be a JSON object, got {type(data).__name__}")
    return data


def split_names(manifest: Manifest) -> list[str]:
    """The splits of a manifest in file order (every top-level key that is not metadata)."""
    return [k for k in manifest if k not in METADATA_KEYS]


def _records(manifest: Manifest) -> Iterable[tuple[str, int, Mapping[str, Any]]]:
    for split in split_names(manifest):
        records = manifest[split]
        if isinstance(records, list):
            for i, rec in enumerate(records):
                if isinstance(rec, Mapping):
                    yield split, i, rec


def _resolve(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _schema_problems(manifest: Manifest) -> list[Problem]:
    problems = []
    validator = Draft202012Validator(manifest_schema())
    for err in sorted(validator.iter_errors(manifest), key=lambda e: [str(p) for p in e.absolute_path]):
        path = list(err.absolute_path)
        split = str(path[0]) if path else None
        index = path[1] if len(path) > 1 and isinstance(path[1], int) else None
        field = str(path[2]) if len(path) > 2 else None
        if err.validator == "required" and index is not None and field is None:
            missing = [k for k in err.validator_value if k not in err.instance]
            field = missing[0] if missing else None
        if split in METADATA_KEYS:
            split, index, field = None, None, split
        message = err.message if len(err.message) <= 200 else err.message[:197] + "..."
        problems.append(Problem("schema", message, split, index, field))
    if not split_names(manifest):
        problems.append(Problem("schema", "no splits (expected 'training', 'validation' or test sets)"))
    return problems


def _require_mask_for(split: str, require_mask: bool | Collection[str]) -> bool:
    if isinstance(require_mask, bool):
        return require_mask
    return split in require_mask


def _check_readable(
    manifest: Manifest, base_dir: Path, skip: set[tuple[str, int]], progress: bool
) -> list[Problem]:
    from tea_med.data.loading import LoadMask, LoadXray
    from tea_med.data.masks import check_mask_shape

    load_image, load_mask = LoadXray(), LoadMask()
    todo = [(s, i, r) for s, i, r in _records(manifest) if (s, i) not in skip]
    problems = []
    for split, i, rec in tqdm(todo, desc="reading images", unit="img", disable=not progress):
        try:
            image = load_image(_resolve(rec["image"], base_dir))
        except DataError as exc:
            problems.append(Problem("unreadable", exc.reason, split, i, "image"))
            continue
        if not isinstance(rec.get("mask"), str):
            continue
        try:
            mask = load_mask(_resolve(rec["mask"], base_dir))
            check_mask_shape(image.shape[1:], mask.shape[1:], mask.meta["filename_or_obj"])
        except DataError as exc:
            problems.append(Problem("unreadable", exc.reason, split, i, "mask"))
    return problems


def validate_manifest(
    manifest: Manifest | str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    labels: Sequence[str] | None = None,
    require_mask: bool | Collection[str] = False,
    check_files: bool = True,
    check_readable: bool = False,
    progress: bool = False,
) -> list[Problem]:
    """Every problem of a manifest, in one list (empty when the manifest is valid).

    Args:
        manifest: a manifest file or an already parsed manifest.
        base_dir: folder that relative paths start from; default the manifest file's folder
            (the current folder for a parsed manifest).
        labels: the allowed class names (integer labels index into them); default the
            manifest's ``labels``; when neither is given labels are not checked.
        require_mask: ``True`` (every split) or the split names whose records need a ``mask``.
        check_files: check that image and mask files exist.
        check_readable: also load every image and mask (slow: decodes all pixels), reporting
            files that cannot be used and masks whose shape differs from their image.
        progress: show a progress bar while reading images.

    Problems found: schema violations, missing files, unknown labels, a patient in two splits
    (reported on each record of the later split), duplicate images (reported on each repeat),
    missing masks where required, and (on request) unreadable images or masks.
    """
    if isinstance(manifest, (str, os.PathLike)):
        base = Path(base_dir) if base_dir is not None else Path(manifest).parent
        manifest = read_manifest(manifest)
    else:
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    problems = _schema_problems(manifest)

    allowed = list(labels) if labels is not None else manifest.get("labels")
    allowed = list(allowed) if isinstance(allowed, list) else None
    first_split_of_patient: dict[str, tuple[str, int]] = {}
    first_record_of_image: dict[Path, tuple[str, int]] = {}
    bad_paths: set[tuple[str, int]] = set()
    for split, i, rec in _records(manifest):
        for field in _PATH_FIELDS:
            value = rec.get(field)
            if not (isinstance(value, str) and value and check_files):
                continue
            resolved = _resolve(value, base)
            if not resolved.is_file():
                problems.append(
                    Problem("missing_file", f"{field} file not found: {resolved}", split, i, field)
                )
                bad_paths.add((split, i))
        if "mask" not in rec and _require_mask_for(split, require_mask):
            problems.append(Problem("missing_mask", "no mask, but masks are required", split, i, "mask"))
        label = rec.get("label")
        if allowed is not None and label is not None:
            if isinstance(label, bool) or not isinstance(label, (str, int)):
                pass  # reported by the schema
            elif isinstance(label, str) and label not in allowed:
                problems.append(
                    Problem(
                        "unknown_label",
                        f"unknown label {label!r}; allowed: {', '.join(allowed)}",
                        split,
                        i,
                        "label",
                    )
                )
            elif isinstance(label, int) and not 0 <= label < len(allowed):
                problems.append(
                    Problem(
                        "unknown_label",
                        f"label index {label} out of range 0..{len(allowed) - 1} ({', '.join(allowed)})",
                        split,
                        i,
                        "label",
                    )
                )
        patient = rec.get("patient_id")
        if isinstance(patient, str) and patient:
            first = first_split_of_patient.setdefault(patient, (split, i))
            if first[0] != split:
                problems.append(
                    Problem(
                        "patient_in_two_splits",
                        f"patient {patient!r} is also in split {first[0]!r} ({first[0]}[{first[1]}]); "
                        "a patient must belong to one split only",
                        split,
                        i,
                        "patient_id",
                    )
                )
        image = rec.get("image")
        if isinstance(image, str) and image:
            key = Path(os.path.normpath(_resolve(image, base).absolute()))
            first = first_record_of_image.setdefault(key, (split, i))
            if first != (split, i):
                problems.append(
                    Problem(
                        "duplicate_image",
                        f"image {image!r} is already listed as {first[0]}[{first[1]}]",
                        split,
                        i,
                        "image",
                    )
                )
    if check_readable:
        schema_bad = {p.record_key for p in problems if p.code == "schema" and p.record_key}
        problems += _check_readable(manifest, base, bad_paths | schema_bad, progress)
    order = {s: n for n, s in enumerate(split_names(manifest))}
    return sorted(
        problems,
        key=lambda p: (p.split is not None, order.get(p.split or "", -1), p.index or -1),
    )


def quarantine(
    manifest: Manifest, problems: Sequence[Problem]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Split a manifest into a clean copy and the quarantined records with their problems.

    Raises:
        ManifestError: when a problem is not tied to a record (e.g. top-level schema errors),
            since no record can be set aside to fix it.
    """
    global_problems = [p for p in problems if p.record_key is None]
    if global_problems:
        raise ManifestError(None, global_problems)
    by_record: dict[tuple[str, int], list[Problem]] = {}
    for p in problems:
        by_record.setdefault(p.record_key, []).append(p)  # type: ignore[arg-type]  # not None: raised above
    clean: dict[str, Any] = {}
    quarantined: list[dict[str, Any]] = []
    for key, value in manifest.items():
        if key in METADATA_KEYS or not isinstance(value, list):
            clean[key] = value
            continue
        clean[key] = []
        for i, rec in enumerate(value):
            found = by_record.get((key, i))
            if found:
                quarantined.append(
                    {"split": key, "index": i, "record": rec, "problems": [p.to_dict() for p in found]}
                )
            else:
                clean[key].append(rec)
    return clean, quarantined


def write_quarantine_report(
    path: str | os.PathLike[str],
    quarantined: Sequence[Mapping[str, Any]],
    *,
    manifest_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the quarantined records and why each was set aside, as JSON."""
    from tea_med import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "manifest": None if manifest_path is None else os.fspath(manifest_path),
        "tea_med_version": __version__,
        "n_quarantined": len(quarantined),
        "quarantined": list(quarantined),
    }
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


def default_report_path(manifest_path: str | os.PathLike[str]) -> Path:
    """``<manifest stem>.quarantine.json`` next to the manifest."""
    path = Path(manifest_path)
    return path.with_name(f"{path.stem}.quarantine.json")


def load_datalist(
    manifest: Manifest | str | os.PathLike[str],
    split: str,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    labels: Sequence[str] | None = None,
    require_mask: bool | Collection[str] = False,
    check_readable: bool = False,
    skip_bad: bool = False,
    report_path: str | os.PathLike[str] | None = None,
    encode_labels: bool = False,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The records of one split with absolute paths, after validating the whole manifest.

    By default any problem anywhere in the manifest raises :class:`ManifestError` listing all
    of them. With ``skip_bad=True`` the records with problems are quarantined instead: they are
    written with their problems to ``report_path`` (default ``<manifest>.quarantine.json``),
    a warning is logged, and only clean records are returned; nothing is dropped silently.

    Args:
        encode_labels: replace ``label`` by its index in the label list (keeping the name in
            ``label_name``); needs ``labels`` or the manifest's ``labels``.
        Other arguments: as :func:`validate_manifest`.
    """
    manifest_path: Path | None = None
    if isinstance(manifest, (str, os.PathLike)):
        manifest_path = Path(manifest)
        base = Path(base_dir) if base_dir is not None else manifest_path.parent
        manifest = read_manifest(manifest_path)
    else:
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    if split not in split_names(manifest):
        raise DataError(manifest_path, f"no split {split!r}; splits: {', '.join(split_names(manifest))}")
    problems = validate_manifest(
        manifest,
        base_dir=base,
        labels=labels,
        require_mask=require_mask,
        check_readable=check_readable,
        progress=progress,
    )
    if problems and not skip_bad:
        raise ManifestError(manifest_path, problems)
    if problems:
        if report_path is None:
            if manifest_path is None:
                raise ValueError("skip_bad=True with an in-memory manifest needs report_path")
            report_path = default_report_path(manifest_path)
        try:
            manifest, quarantined = quarantine(manifest, problems)
        except ManifestError as exc:
            raise ManifestError(manifest_path, exc.problems) from None
        written = write_quarantine_report(report_path, quarantined, manifest_path=manifest_path)
        logger.warning(
            "quarantined %d record(s) with %d problem(s); see %s", len(quarantined), len(problems), written
        )
    allowed = list(labels) if labels is not None else manifest.get("labels")
    if encode_labels and not allowed:
        raise ValueError("encode_labels=True needs labels (argument or the manifest's 'labels')")
    names: list[Any] = list(allowed or [])
    out = []
    for rec in manifest[split]:
        item = dict(rec)
        for field in _PATH_FIELDS:
            if isinstance(item.get(field), str):
                item[field] = os.fspath(_resolve(item[field], base).absolute())
        if encode_labels and isinstance(item["label"], str):
            item["label_name"] = item["label"]
            item["label"] = names.index(item["label"])
        elif encode_labels:
            item["label_name"] = names[item["label"]]
        out.append(item)
    return out
