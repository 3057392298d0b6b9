"""Writing a phantom data set to disk: DICOM and/or PNG images, PNG masks, datalists, a grid.

Layout under the output folder::

    images/<split>/<split>-<index>.dcm|.png  the X-rays (DICOM as each hospital's scanner writes)
    masks/<split>/<split>-<index>.png        exact lung masks (0 / 255)
    datalist_dicom.json, datalist_png.json  one MONAI datalist per written format (records carry
                                            "marker" in the foreground variant)
    examples.png                            example grid: a row per split, columns per class
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.uid import generate_uid
from tqdm.auto import tqdm

from tea_med.data.dicom_writer import write_dicom
from tea_med.data.phantoms import (
    BIASES,
    CLASSES,
    HOSPITALS,
    MARKERS,
    SPLITS,
    TRAIN_HOSPITALS,
    UNSEEN_HOSPITALS,
    Hospital,
    PhantomSpec,
    generate_phantom,
    get_hospital,
    plan_phantoms,
)

__all__ = ["FORMATS", "save_example_grid", "to_stored_values", "write_phantoms"]

FORMATS = ("dicom", "png")


def to_stored_values(image: np.ndarray, bits: int, photometric: str = "MONOCHROME2") -> np.ndarray:
    """Quantise a ``[0, 1]`` image (bright = dense) to ``bits``-bit stored values (uint8/uint16).

    MONOCHROME1 stores the inverse (bright = low value), as such scanners do.
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    top = 2**bits - 1
    stored = np.rint(np.clip(image, 0, 1) * top).astype(np.int64)
    if photometric == "MONOCHROME1":
        stored = top - stored
    return stored.astype(np.uint8 if bits <= 8 else np.uint16)


def _uid(seed: int, *parts: object) -> str:
    return generate_uid(entropy_srcs=["tea_med-phantom", str(seed), *map(str, parts)])


def _write_dicom(path: Path, spec: PhantomSpec, image: np.ndarray, hospital: Hospital, seed: int) -> None:
    spacing = hospital.field_of_view_mm / image.shape[0]
    write_dicom(
        path,
        to_stored_values(image, hospital.bits_stored, hospital.photometric),
        photometric=hospital.photometric,
        bits_stored=hospital.bits_stored,
        rescale_slope=hospital.rescale_slope,
        rescale_intercept=hospital.rescale_intercept,
        modality=hospital.modality,
        pixel_spacing=(spacing, spacing),
        patient_id=spec.patient_id,
        sop_instance_uid=_uid(seed, spec.split, spec.index, "instance"),
        study_instance_uid=_uid(seed, spec.split, spec.index, "study"),
        series_instance_uid=_uid(seed, spec.split, spec.index, "series"),
        institution=hospital.institution,
    )


def _write_png(path: Path, image: np.ndarray, bits: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_stored_values(image, bits)).save(path)


def save_example_grid(
    examples: Sequence[tuple[PhantomSpec, np.ndarray, np.ndarray]],
    path: str | os.PathLike[str],
    *,
    per_class: int = 2,
    bias: str = "background",
) -> Path:
    """Save a grid of examples: one row per split, ``per_class`` columns per class.

    Each panel shows the image with its lung-mask outline and is titled class / hospital, and
    for the foreground variant (``bias="foreground"``) also the device marker.
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures are left alone

    splits = [s for s in SPLITS if any(e[0].split == s for e in examples)]
    cols = len(CLASSES) * per_class
    fig = Figure(figsize=(1.6 * cols, 1.75 * len(splits)))
    axes = fig.subplots(len(splits), cols, squeeze=False)
    for r, split in enumerate(splits):
        for c, label in enumerate(CLASSES):
            chosen = [e for e in examples if e[0].split == split and e[0].label == label][:per_class]
            for k in range(per_class):
                ax = axes[r, c * per_class + k]
                ax.axis("off")
                if k < len(chosen):
                    spec, image, mask = chosen[k]
                    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                    ax.contour(mask, levels=[0.5], colors="lime", linewidths=0.4)
                    title = f"{label} / {spec.hospital}"
                    if bias == "foreground":
                        title += f"\n{spec.marker or 'no marker'}"
                    ax.set_title(title, fontsize=7)
        axes[r, 0].text(
            -0.08,
            0.5,
            split,
            transform=axes[r, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=8,
        )
    shortcut = (
        "device marker inside the lungs" if bias == "foreground" else "hospital signature outside the lungs"
    )
    fig.suptitle(f"tea_med phantoms: lung outline in green; {shortcut}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _hospital_table() -> dict[str, Any]:
    roles = {h.name: "training" for h in TRAIN_HOSPITALS} | {h.name: "unseen" for h in UNSEEN_HOSPITALS}
    return {
        h.name: {
            "role": roles[h.name],
            "marker": h.marker,
            "laterality": h.laterality,
            "modality": h.modality,
            "photometric": h.photometric,
            "bits_stored": h.bits_stored,
        }
        for h in HOSPITALS
    }


def write_phantoms(
    out: str | os.PathLike[str],
    *,
    n: int = 60,
    size: int = 224,
    seed: int = 0,
    confounding: float = 1.0,
    bias: str = "background",
    formats: Sequence[str] = FORMATS,
    grid: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Generate and write a phantom data set (see :mod:`tea_med.data.phantoms`).

    Args:
        out: output folder (created; must be empty unless ``overwrite``).
        n: images per split (five splits: training, validation, test_biased, test_unbiased,
            test_deceiving).
        size: image side in pixels.
        seed: data set seed (same seed, same files).
        confounding: class-hospital (background) or class-marker (foreground) correlation
            strength in training / validation / test_biased, in ``[0, 1]``.
        bias: ``"background"`` (the class's shortcut is its hospital's signature outside the
            lungs) or ``"foreground"`` (a class-correlated device marker inside the lungs; the
            hospital is independent of the class); see :func:`tea_med.data.phantoms.plan_phantoms`.
        formats: any of ``"dicom"``, ``"png"``.
        grid: also save ``examples.png``.
        progress: show a progress bar.

    Returns:
        What was written: ``"datalist_dicom"``, ``"datalist_png"``, ``"grid"`` -> path.
    """
    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats must be a non-empty selection of {FORMATS}, got {list(formats)}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (images per split) must be an int >= 1, got {n!r}")
    if bias not in BIASES:
        raise ValueError(f"bias must be one of {BIASES}, got {bias!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose a new folder or pass overwrite=True")
    specs = plan_phantoms(n, seed=seed, confounding=confounding, bias=bias)
    records: dict[str, dict[str, list[dict[str, Any]]]] = {f: {s: [] for s in SPLITS} for f in formats}
    examples: list[tuple[PhantomSpec, np.ndarray, np.ndarray]] = []
    shown: dict[tuple[str, str], int] = {}
    for spec in tqdm(specs, desc="phantoms", unit="img", disable=not progress):
        hospital = get_hospital(spec.hospital)
        image, mask = generate_phantom(
            spec.label, hospital, size, np.random.default_rng(spec.seed), marker=spec.marker
        )
        stem = f"{spec.split}-{spec.index:05d}"  # file names carry no patient identifier
        mask_rel = Path("masks", spec.split, f"{stem}.png")
        (out / mask_rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask * np.uint8(255)).save(out / mask_rel)
        for fmt in formats:
            rel = Path("images", spec.split, f"{stem}.{'dcm' if fmt == 'dicom' else 'png'}")
            if fmt == "dicom":
                _write_dicom(out / rel, spec, image, hospital, seed)
            else:
                _write_png(out / rel, image, hospital.png_bits)
            record: dict[str, Any] = {
                "image": rel.as_posix(),
                "label": spec.label,
                "mask": mask_rel.as_posix(),
                "source": spec.hospital,
                "patient_id": spec.patient_id,
            }
            if bias == "foreground":  # "none" rather than null: batches of records collate strings
                record["marker"] = spec.marker or "none"
            records[fmt][spec.split].append(record)
        key = (spec.split, spec.label)
        if grid and shown.get(key, 0) < 2:
            shown[key] = shown.get(key, 0) + 1
            examples.append((spec, image, mask))

    pairing: dict[str, Any]
    if bias == "foreground":
        shortcut = "a device-marker shortcut inside the lungs"
        pairing = {"marker_pairing": dict(zip(CLASSES, MARKERS, strict=True))}
    else:
        shortcut = "a hospital shortcut outside the lungs"
        pairing = {"training_pairing": {c: h.name for c, h in zip(CLASSES, TRAIN_HOSPITALS, strict=True)}}
    written: dict[str, Path] = {}
    for fmt in formats:
        manifest: dict[str, Any] = {
            "name": f"tea_med phantoms ({fmt})",
            "description": f"Synthetic chest X-ray phantoms with {shortcut}.",
            "labels": list(CLASSES),
            "metadata": {
                "generator": "tea_med.data.phantoms",
                "format": fmt,
                "seed": seed,
                "size": size,
                "n_per_split": n,
                "bias": bias,
                "confounding": confounding,
                **pairing,
                "hospitals": _hospital_table(),
            },
            **records[fmt],
        }
        path = out / f"datalist_{fmt}.json"
        path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        written[f"datalist_{fmt}"] = path
    if grid:
        written["grid"] = save_example_grid(examples, out / "examples.png", bias=bias)
    return written
