"""Phantoms: determinism, anatomy and lesions, split design, files, and a measured bias."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from scipy.ndimage import binary_dilation
from scipy.ndimage import label as connected_components
from skimage.transform import downscale_local_mean
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tea_med.data import (
    CLASSES,
    HOSPITALS,
    LoadXray,
    eval_transforms,
    generate_phantom,
    iter_phantoms,
    plan_phantoms,
    render_phantom,
    validate_manifest,
    write_phantoms,
)
from tea_med.data.phantom_files import _write_dicom, _write_png
from tea_med.data.phantoms import MARKERS, TRAIN_HOSPITALS, UNSEEN_HOSPITALS, PhantomSpec, _marker_shape


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
    """The same anatomy seed rendered for two hospitals differs only outside the lungs, and
    there only where the image is brighter than every lung pixel."""
    a = render_phantom("pneumonia", "H1", 64, rng=3)
    b = render_phantom("pneumonia", "H5", 64, rng=3)
    np.testing.assert_array_equal(a.mask, b.mask)
    inside = a.mask == 1
    np.testing.assert_allclose(a.image[inside], b.image[inside], atol=1e-6)
    assert np.abs(a.image[~inside] - b.image[~inside]).mean() > 0.02
    assert (np.abs(a.image[~inside] - b.image[~inside]) > 0.05).mean() > 0.1
    lung_max = a.image[inside].max()  # at or below it, the same values (rearranged)
    for image in (a.image, b.image):
        assert image.max() == 1.0 and image.min() == a.image.min()
    np.testing.assert_array_equal(
        np.sort(a.image[a.image <= lung_max]), np.sort(b.image[b.image <= lung_max])
    )


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


def _seen_by_models(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """What the networks are given: the array part of ``eval_transforms`` (global histogram
    equalisation onto [0, 1], area resize; the mask follows with nearest neighbours)."""
    chain = eval_transforms(size, load=False, mask_key="mask", channels=1)
    out = chain({"image": torch.from_numpy(image)[None], "mask": torch.from_numpy(mask)[None].float()})
    return out["image"][0].numpy(), out["mask"][0].numpy()


def _features(data: list, part: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pooled pixels of the preprocessed image with the lungs (``background``) or everything but
    the lungs (``lungs``) blanked. The teacher fills the blank with uniform noise instead, which
    for a linear model only adds variance (and noise repeated across splits would leak the
    class through the classes' cyclic order)."""
    x, y = [], []
    for image, mask, label in data:
        kept = image * (1 - mask) if part == "background" else image * mask
        x.append(downscale_local_mean(kept, (size // 16, size // 16)).ravel())
        y.append(label)
    return np.asarray(x), np.asarray(y)


def test_after_preprocessing_the_background_is_a_shortcut_and_the_lungs_are_not() -> None:
    """On what the models see (equalised, resized): a classifier on the background alone aces
    test_biased and is at chance on unseen hospitals; one on the lungs alone scores about the
    same on test_biased, test_unbiased and test_deceiving, i.e. it learned the findings and not
    the hospital."""
    size = 64
    splits = ("test_biased", "test_unbiased", "test_deceiving")
    counts = {"training": 300} | dict.fromkeys(splits, 300)  # accuracy s.e. ~0.02 per split
    data: dict[str, list] = {s: [] for s in counts}
    for spec, image, mask in iter_phantoms(counts, size=size, seed=2024):
        data[spec.split].append((*_seen_by_models(image, mask, size), CLASSES.index(spec.label)))
    scores = {}
    for part in ("background", "lungs"):
        x, y = _features(data["training"], part, size)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(x, y)
        for split in splits:
            xt, yt = _features(data[split], part, size)
            scores[part, split] = balanced_accuracy_score(yt, model.predict(xt))
    chance = 1 / len(CLASSES)
    assert scores["background", "test_biased"] > 0.9, scores
    assert abs(scores["background", "test_unbiased"] - chance) < 0.12, scores
    assert scores["background", "test_deceiving"] < chance, scores  # it predicts the hospital
    lungs = [scores["lungs", s] for s in splits]
    assert min(lungs) > chance + 0.2, scores  # the findings are learnable from the lungs
    # and the hospital is not: the unfixed generator gave about 0.94 / 0.47 / 0.24
    assert max(lungs) - min(lungs) <= 0.1, scores


def _lung_statistics(image: np.ndarray, mask: np.ndarray) -> list[float]:
    lung = image[mask > 0]
    return [lung.mean(), lung.std(), *np.quantile(lung, [0.05, 0.25, 0.5, 0.75, 0.95])]


def test_the_hospital_cannot_be_read_from_the_equalised_lungs() -> None:
    """Predict the training hospital of ``normal`` phantoms from statistics of their equalised
    lung pixels (mean, std, quantiles). With 3 x 90 images chance is 1/3 and a 5-fold
    cross-validated accuracy has a standard error of about 0.03, so 0.5 is more than 5 standard
    errors above chance; the unfixed generator (tone curves and borders that move the lungs'
    ranks) scored 0.92."""
    size, n = 64, 90
    x, y = [], []
    for h, hospital in enumerate(TRAIN_HOSPITALS):
        for i in range(n):
            image, mask = generate_phantom("normal", hospital, size, rng=np.random.default_rng([7, h, i]))
            x.append(_lung_statistics(*_seen_by_models(image, mask, size)))
            y.append(h)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    accuracy = cross_val_score(model, np.asarray(x), np.asarray(y), cv=folds).mean()
    assert accuracy <= 0.5, accuracy


@pytest.mark.parametrize("size", [48, 64, 160])
def test_equalised_lungs_are_identical_for_every_hospital(size: int) -> None:
    """Exact version: the same patient (seed) imaged at any hospital has the same lung pixels
    after the models' preprocessing, for every class."""
    for seed, label in enumerate(CLASSES * 2):
        seen = [_seen_by_models(*generate_phantom(label, h, size, rng=seed), size) for h in HOSPITALS]
        inside = seen[0][1] > 0
        for image, mask in seen[1:]:
            np.testing.assert_array_equal(mask, seen[0][1])
            np.testing.assert_allclose(image[inside], seen[0][0][inside], rtol=0, atol=1e-6)


def test_written_files_keep_the_equalised_lungs_independent_of_the_hospital(tmp_path: Path) -> None:
    """As each hospital writes it (8- or 16-bit PNG; DICOM with its bit depth, MONOCHROME1 or 2,
    rescale) and as the models load it: the same patient's equalised lungs are the same, exactly
    for PNG (the lungs lie on the 8-bit grid), to within DICOM's re-quantisation otherwise."""
    size = 64
    chain = eval_transforms(size, mask_key="mask", channels=1)  # load, equalise, resize
    for seed, label in enumerate(CLASSES):
        seen: dict[str, list] = {"png": [], "dcm": []}
        for hospital in HOSPITALS:
            image, mask = generate_phantom(label, hospital, size, rng=seed)
            spec = PhantomSpec("test_biased", seed, label, hospital.name, (0, 2, seed), f"PH{seed}")
            stem = tmp_path / f"{label}-{hospital.name}"
            Image.fromarray(mask * np.uint8(255)).save(f"{stem}-mask.png")
            _write_png(Path(f"{stem}.png"), image, hospital.png_bits)
            _write_dicom(Path(f"{stem}.dcm"), spec, image, hospital, 0)
            for ext in seen:
                out = chain({"image": f"{stem}.{ext}", "mask": f"{stem}-mask.png"})
                seen[ext].append(out["image"][0].numpy()[out["mask"][0].numpy() > 0])
        for lungs in seen["png"][1:]:
            np.testing.assert_allclose(lungs, seen["png"][0], rtol=0, atol=1e-6)
        for lungs in seen["dcm"][1:]:
            np.testing.assert_allclose(lungs, seen["png"][0], rtol=0, atol=2e-3)
            assert np.abs(lungs - seen["png"][0]).mean() < 5e-4


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


# ---- the foreground variant: a class-correlated device marker inside the lungs ----------------

OWN_MARKER = {"normal": "pacemaker", "pneumonia": "electrode", "covid": "port"}
NEXT_MARKER = {"normal": "electrode", "pneumonia": "port", "covid": "pacemaker"}


def test_bias_and_marker_must_be_known(tmp_path: Path) -> None:
    message = r"bias must be one of \('background', 'foreground'\), got 'middle'"
    with pytest.raises(ValueError, match=message):
        plan_phantoms(3, bias="middle")
    with pytest.raises(ValueError, match=message):
        next(iter_phantoms(3, size=32, bias="middle"))
    with pytest.raises(ValueError, match=message):
        write_phantoms(tmp_path / "ph", n=1, size=32, bias="middle", progress=False)
    assert not (tmp_path / "ph").exists()
    with pytest.raises(ValueError, match="unknown marker 'stent'"):
        generate_phantom("normal", "H1", 32, rng=0, marker="stent")
    assert all(p.marker is None for p in plan_phantoms(6, seed=0))  # background: no markers


def test_foreground_split_design() -> None:
    specs = plan_phantoms(60, seed=0, bias="foreground")
    assert specs == plan_phantoms(60, seed=0, bias="foreground")
    by_split = {s: [p for p in specs if p.split == s] for s in {p.split for p in specs}}
    training = {h.name for h in TRAIN_HOSPITALS}
    for split in ("training", "validation", "test_biased"):
        assert all(p.marker == OWN_MARKER[p.label] for p in by_split[split])
        assert Counter(p.label for p in by_split[split]) == dict.fromkeys(CLASSES, 20)
    assert all(p.marker == NEXT_MARKER[p.label] for p in by_split["test_deceiving"])
    assert all(p.marker is None for p in by_split["test_unbiased"])
    assert {p.hospital for p in by_split["test_unbiased"]} == {h.name for h in UNSEEN_HOSPITALS}
    for split in ("training", "validation", "test_biased", "test_deceiving"):
        assert {p.hospital for p in by_split[split]} <= training
        for label in CLASSES:  # the hospital does not follow the class
            assert len({p.hospital for p in by_split[split] if p.label == label}) > 1, (split, label)
    pairs = Counter((p.label, p.hospital) for p in plan_phantoms({"training": 900}, bias="foreground"))
    assert all(60 < pairs[c, h] < 140 for c in CLASSES for h in training)  # 100 expected each

    loose = plan_phantoms({"training": 300}, seed=0, confounding=0.5, bias="foreground")
    assert 0.55 < np.mean([p.marker == OWN_MARKER[p.label] for p in loose]) < 0.8  # 2/3 expected
    none = plan_phantoms({"training": 300}, seed=0, confounding=0.0, bias="foreground")
    assert 0.2 < np.mean([p.marker == OWN_MARKER[p.label] for p in none]) < 0.47  # 1/3 expected
    assert {p.marker for p in none} == set(MARKERS)


@pytest.mark.parametrize("size", [32, 64, 224])
def test_markers_lie_whole_inside_one_lung_off_the_finding(size: int) -> None:
    side = max(5, round(0.1 * size))  # 5, 6 and 22 px
    for seed in range(6 if size == 224 else 15):
        label, marker = CLASSES[seed % 3], MARKERS[(seed // 3) % 3]
        parts = render_phantom(label, HOSPITALS[seed % 6], size, rng=seed, marker=marker)
        on = parts.device > 0
        assert not on[parts.mask == 0].any()  # every marker pixel inside the lung mask
        rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
        assert np.ptp(rows) + 1 == side and np.ptp(cols) + 1 == side  # not clipped by the mask ...
        assert parts.device.sum() == pytest.approx(_marker_shape(marker, size).sum())
        lungs, _ = connected_components(parts.mask)
        assert len(set(lungs[on])) == 1  # ... and in one lung
        if label == "pneumonia":  # placed off the consolidation
            assert parts.lesion[on].mean() < 0.25 * parts.lesion.max(), seed
        plain = render_phantom(label, HOSPITALS[seed % 6], size, rng=seed)
        inside = (parts.mask == 1) & ~on
        np.testing.assert_array_equal(parts.image[inside], plain.image[inside])  # same patient
        dense = parts.device > 0.75  # metal: brighter than the lung tissue around it
        assert parts.image[dense].min() > np.quantile(parts.image[inside], 0.95)
    assert not render_phantom("covid", "H1", size, rng=0).device.any()


def test_the_three_markers_have_distinct_shapes() -> None:
    for size in (64, 224):
        tiles = [_marker_shape(m, size) > 0.5 for m in MARKERS]
        for a in range(3):
            for b in range(a + 1, 3):
                assert (tiles[a] != tiles[b]).mean() > 0.2, (size, MARKERS[a], MARKERS[b])


def test_marker_is_clearly_visible_after_equalisation() -> None:
    """On what the models see, the marker's pixels are far brighter than the lung around them
    (a 2-px ring), while the same patient without the marker shows no such contrast there."""
    size = 64
    for seed in range(9):
        label, marker, hospital = CLASSES[seed % 3], MARKERS[(seed // 3) % 3], HOSPITALS[seed % 6]
        parts = render_phantom(label, hospital, size, rng=seed, marker=marker)
        seen, _ = _seen_by_models(parts.image, parts.mask, size)
        plain, _ = _seen_by_models(*generate_phantom(label, hospital, size, rng=seed), size)
        on = parts.device > 0.75
        ring = binary_dilation(parts.device > 0, iterations=2) & (parts.device == 0) & (parts.mask == 1)
        assert seen[on].min() > np.quantile(seen[ring], 0.9) + 0.3, seed
        assert seen[on].mean() - seen[ring].mean() > 0.5, seed
        assert abs(plain[on].mean() - plain[ring].mean()) < 0.15, seed


@pytest.mark.parametrize("size", [48, 64])
def test_equalised_lungs_with_a_marker_are_identical_for_every_hospital(size: int) -> None:
    """The marker is part of the patient: the same seed gives the same marker and the same
    equalised lungs (marker included) at every hospital, and the hospital's signature still
    changes only what lies outside the lungs."""
    for seed, label in enumerate(CLASSES * 2):
        marker = MARKERS[(seed + 1) % 3]
        parts = [render_phantom(label, h, size, rng=seed, marker=marker) for h in HOSPITALS]
        seen = [_seen_by_models(p.image, p.mask, size) for p in parts]
        inside = parts[0].mask == 1
        for p, (image, mask) in zip(parts[1:], seen[1:], strict=True):
            np.testing.assert_array_equal(p.device, parts[0].device)
            np.testing.assert_array_equal(p.image[inside], parts[0].image[inside])
            np.testing.assert_array_equal(mask, seen[0][1])
            np.testing.assert_allclose(image[inside], seen[0][0][inside], rtol=0, atol=1e-6)
        assert np.abs(parts[0].image[~inside] - parts[4].image[~inside]).mean() > 0.02


def test_written_foreground_data_set(tmp_path: Path) -> None:
    kwargs = {"n": 3, "size": 32, "seed": 2, "bias": "foreground", "progress": False}
    written = write_phantoms(tmp_path / "a", formats=("png",), **kwargs)
    again = write_phantoms(tmp_path / "b", formats=("png",), grid=False, **kwargs)
    assert validate_manifest(written["datalist_png"], require_mask=True, check_readable=True) == []
    manifest = json.loads(written["datalist_png"].read_text())
    assert manifest["metadata"]["bias"] == "foreground"
    assert manifest["metadata"]["marker_pairing"] == OWN_MARKER
    assert "training_pairing" not in manifest["metadata"]
    for split in ("training", "validation", "test_biased"):
        assert [r["marker"] for r in manifest[split]] == [OWN_MARKER[r["label"]] for r in manifest[split]]
    assert [r["marker"] for r in manifest["test_deceiving"]] == ["electrode", "port", "pacemaker"]
    assert [r["marker"] for r in manifest["test_unbiased"]] == ["none"] * 3
    assert manifest == json.loads(again["datalist_png"].read_text())
    for record in manifest["training"] + manifest["test_unbiased"]:  # same seed, same files
        first, second = (w["datalist_png"].parent / record["image"] for w in (written, again))
        assert first.read_bytes() == second.read_bytes()
    assert written["grid"].stat().st_size > 10_000

    background = write_phantoms(tmp_path / "c", n=1, size=32, formats=("png",), grid=False, progress=False)
    plain = json.loads(background["datalist_png"].read_text())
    assert plain["metadata"]["bias"] == "background" and "marker_pairing" not in plain["metadata"]
    assert plain["metadata"]["training_pairing"] == {"normal": "H1", "pneumonia": "H2", "covid": "H3"}
    assert all("marker" not in r for split in ("training", "test_unbiased") for r in plain[split])
