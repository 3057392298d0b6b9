"""Phantoms: determinism, anatomy and lesions, split design, files, and a measured bias."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy.ndimage import label as connected_components
from skimage.transform import downscale_local_mean
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tea_med.data import (
    CLASSES,
    HOSPITALS,
    LoadXray,
    generate_phantom,
    iter_phantoms,
    plan_phantoms,
    render_phantom,
    validate_manifest,
    write_phantoms,
)
from tea_med.data.phantoms import TRAIN_HOSPITALS, UNSEEN_HOSPITALS


def test_same_seed_same_phantom_other_seed_other_phantom() -> None:
    a = generate_phantom("covid", "H2", 64, rng=11)
    b = generate_phantom("covid", "H2", 64, rng=np.random.default_rng(11))
    c = generate_phantom("covid", "H2", 64, rng=12)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])
    first = [(s, i.copy()) for s, i, _ in iter_phantoms(3, size=32, seed=5)]
    again = [(s, i) for s, i, _ in iter_phantoms(3, size=32, seed=5)]
    assert [s for s, _ in first] == [s for s, _ in again]
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(first, again, strict=True))


@pytest.mark.parametrize("size", [32, 96])
def test_anatomy_two_lungs_and_an_exact_binary_mask(size: int) -> None:
    for seed in range(5):
        image, mask = generate_phantom("normal", HOSPITALS[seed % 6], size, rng=seed)
        assert image.shape == mask.shape == (size, size)
        assert image.dtype == np.float32 and image.min() >= 0.0 and image.max() <= 1.0
        assert set(np.unique(mask)) == {0, 1}
        _, lungs = connected_components(mask)
        assert lungs == 2
        left, right = mask[:, : size // 2].sum(), mask[:, size // 2 :].sum()
        assert left > 0 and right > 0 and 0.1 < mask.mean() < 0.35
        assert image[mask == 1].mean() < image[mask == 0].mean()  # air is dark


def test_lesions_stay_inside_the_lungs() -> None:
    for seed in range(8):
        normal = render_phantom("normal", "H1", 64, rng=seed)
        assert not normal.lesion.any()
        for label in ("pneumonia", "covid"):
            parts = render_phantom(label, "H1", 64, rng=seed)
            assert parts.lesion.max() > 0.05
            assert np.all(parts.lesion[parts.mask == 0] == 0)
            half = parts.lesion.shape[1] // 2
            sides = [parts.lesion[:, :half].sum() > 1.0, parts.lesion[:, half:].sum() > 1.0]
            assert sum(sides) == (1 if label == "pneumonia" else 2), (label, seed)


def test_hospital_signature_never_enters_the_lungs() -> None:
    """The same anatomy seed rendered for two hospitals differs only outside the lungs."""
    a = render_phantom("pneumonia", "H1", 64, rng=3)
    b = render_phantom("pneumonia", "H5", 64, rng=3)
    np.testing.assert_array_equal(a.mask, b.mask)
    inside = a.mask == 1
    np.testing.assert_allclose(a.image[inside], b.image[inside], atol=1e-6)
    assert np.abs(a.image[~inside] - b.image[~inside]).mean() > 0.05


def test_split_design() -> None:
    specs = plan_phantoms(60, seed=0)
    by_split = {s: [p for p in specs if p.split == s] for s in {p.split for p in specs}}
    pairing = {c: h.name for c, h in zip(CLASSES, TRAIN_HOSPITALS, strict=True)}
    for split in ("training", "validation", "test_biased"):
        assert all(p.hospital == pairing[p.label] for p in by_split[split])
        assert Counter(p.label for p in by_split[split]) == dict.fromkeys(CLASSES, 20)
    unseen = {h.name for h in UNSEEN_HOSPITALS}
    pairs = Counter((p.label, p.hospital) for p in by_split["test_unbiased"])
    assert {h for _, h in pairs} == unseen
    for hospital in unseen:  # every unseen hospital sends each class equally often
        assert len({pairs[c, hospital] for c in CLASSES}) == 1
    assert all(p.hospital != pairing[p.label] for p in by_split["test_deceiving"])
    assert all(p.hospital in pairing.values() for p in by_split["test_deceiving"])
    assert len({p.patient_id for p in specs}) == len(specs)

    loose = [p for p in plan_phantoms({"training": 300}, seed=0, confounding=0.5)]
    share = np.mean([p.hospital == pairing[p.label] for p in loose])
    assert 0.55 < share < 0.8  # 0.5 + 0.5 / 3 expected
    none = [p for p in plan_phantoms({"training": 300}, seed=0, confounding=0.0)]
    assert 0.2 < np.mean([p.hospital == pairing[p.label] for p in none]) < 0.47
    with pytest.raises(ValueError, match="confounding"):
        plan_phantoms(3, confounding=1.5)


def _features(data: list, part: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = [], []
    for image, mask, label in data:
        kept = image * (1 - mask) if part == "background" else image * mask
        x.append(downscale_local_mean(kept, (size // 16, size // 16)).ravel())
        y.append(label)
    return np.asarray(x), np.asarray(y)


def test_the_background_shortcut_is_real_and_the_lungs_are_not_biased() -> None:
    """A classifier on the background alone aces test_biased and is at chance on unseen hospitals;
    one on the lungs alone scores about the same on both."""
    size = 64
    counts = {"training": 240, "test_biased": 90, "test_unbiased": 90}
    data: dict[str, list] = {s: [] for s in counts}
    for spec, image, mask in iter_phantoms(counts, size=size, seed=2024):
        data[spec.split].append((image, mask, CLASSES.index(spec.label)))
    scores = {}
    for part in ("background", "lungs"):
        x, y = _features(data["training"], part, size)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(x, y)
        for split in ("test_biased", "test_unbiased"):
            xt, yt = _features(data[split], part, size)
            scores[part, split] = balanced_accuracy_score(yt, model.predict(xt))
    chance = 1 / len(CLASSES)
    assert scores["background", "test_biased"] > 0.9, scores
    assert abs(scores["background", "test_unbiased"] - chance) < 0.12, scores
    assert scores["lungs", "test_biased"] > chance + 0.2, scores  # the findings are learnable
    assert abs(scores["lungs", "test_biased"] - scores["lungs", "test_unbiased"]) < 0.12, scores


def test_written_data_set_is_valid_and_dicom_matches_png(tmp_path: Path) -> None:
    written = write_phantoms(tmp_path / "ph", n=6, size=48, seed=1, progress=False)
    assert set(written) == {"datalist_dicom", "datalist_png", "grid"}
    assert written["grid"].stat().st_size > 10_000
    for key in ("datalist_dicom", "datalist_png"):
        assert validate_manifest(written[key], require_mask=True, check_readable=True) == []
    dicom = json.loads(written["datalist_dicom"].read_text())
    png = json.loads(written["datalist_png"].read_text())
    assert dicom["labels"] == list(CLASSES) and dicom["metadata"]["seed"] == 1
    assert [
        len(dicom[s]) for s in ("training", "validation", "test_biased", "test_unbiased", "test_deceiving")
    ] == [6] * 5

    photometrics, modalities = set(), set()
    for rec_d, rec_p in zip(
        dicom["training"] + dicom["test_unbiased"], png["training"] + png["test_unbiased"], strict=True
    ):
        path = written["datalist_dicom"].parent / rec_d["image"]
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.PatientID == rec_d["patient_id"] and ds.Modality in ("CR", "DX")
        assert 12 <= ds.BitsStored <= 16 and "RescaleSlope" in ds and "RescaleIntercept" in ds
        assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID
        photometrics.add(ds.PhotometricInterpretation)
        modalities.add(ds.Modality)
        a = LoadXray()(path)[0].numpy().ravel()
        b = LoadXray()(written["datalist_png"].parent / rec_p["image"])[0].numpy().ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.999  # the same picture, bright = dense in both
        meta_text = repr(dict(LoadXray()(path).meta))
        assert ds.PatientID not in meta_text and str(ds.PatientName) not in meta_text
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"} and modalities == {"CR", "DX"}

    again = write_phantoms(
        tmp_path / "ph2", n=6, size=48, seed=1, formats=["dicom"], grid=False, progress=False
    )
    first = written["datalist_dicom"].parent / dicom["training"][0]["image"]
    second = again["datalist_dicom"].parent / dicom["training"][0]["image"]
    assert first.read_bytes() == second.read_bytes()  # byte-identical for the same seed
    with pytest.raises(FileExistsError):
        write_phantoms(tmp_path / "ph", n=1, size=32, progress=False)
