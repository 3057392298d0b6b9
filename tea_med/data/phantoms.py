"""Synthetic chest X-ray phantoms from several "hospitals" with a background or foreground shortcut.

Each phantom has a body outline, two lung fields of varied shape, ribs, clavicles, spine,
a heart shadow, vessel texture and noise, an exact lung mask, and one of three findings:
``normal``, ``pneumonia`` (a focal consolidation in one lung) or ``covid`` (bilateral,
peripheral, lower-zone ground-glass). Findings are confined to the lungs.

Each hospital stamps a signature on everything *outside* the lungs: a burned-in text marker,
a laterality letter, a collimation border, its own tone curve and noise level. The lungs are
rendered identically for every hospital, so a classifier that sees only the lungs cannot tell
hospitals apart, while the background identifies the hospital.

That must survive the models' preprocessing (docs/method.md, section 7): global histogram
equalisation (:class:`tea_med.data.transforms.HistogramEqualize`) is rank-based over the whole
image, so a lung pixel's equalised value depends on how many pixels of the image are darker
than it, and on the image's minimum and maximum, which set the bins. So the hospital only
decides the *order* of the background pixels that are at most as bright as the lungs
(brightest lung value plus a margin of at least five 256-bin histogram bins, ``cut``); their
values are exactly the hospital-independent ones (:func:`_keep_lung_ranks`). Its tone curve maps
``[cut, 1]`` onto itself; its collimation border, noise and text change values only above
``cut`` and below it merely reorder pixels (where the text covers air, the body's outline gives
up as many pixels to the air); the brightest pixel is exactly 1;
and the patient image lies on the 8-bit grid, the coarsest any hospital stores. For the same
patient seed the equalised lung pixels are then identical for every hospital, in memory and in
the PNG files (DICOM: to within its re-quantisation, about 1e-4), while the body, bones,
borders, text and noise texture still identify the hospital.

Two variants of the shortcut (``bias``, :data:`BIASES`):

- ``"background"`` (the default): training, validation and ``test_biased`` pair each class with
  one training hospital (confounding strength configurable), ``test_unbiased`` uses hospitals
  never seen in training (independent of the class) and ``test_deceiving`` permutes the
  class-hospital pairing. A lung segmenter removes this shortcut.
- ``"foreground"``: the hospital is independent of the class in every split, and the shortcut is
  a device marker drawn on the patient *inside* a lung, which no lung segmenter removes: a
  pacemaker (a rounded can with a lead), an ECG electrode (a ring with a centre snap and a wire)
  or a port (a cross), one per class (:data:`MARKERS`), each about a tenth of the image side,
  entirely inside the lung mask and placed off the finding where the lung leaves room. Training,
  validation and ``test_biased`` carry the class's own marker (with probability
  ``confounding``, else a random class's), ``test_unbiased`` carries none and ``test_deceiving``
  carries the next class's. The marker is metal-dense (:data:`_MARKER_DENSITY`, brighter than
  the lungs and, nearly everywhere, their findings) and part of the patient before any
  hospital's processing, so it counts as lung for the rank bookkeeping above: the same patient
  seed still gives the same equalised lungs, marker included, at every hospital, and after
  equalisation the marker stays far brighter than the lung around it.

Everything is vectorised numpy; one 224-px phantom takes about 15 ms on one CPU core. Images are
float32 in ``[0, 1]`` in the MONOCHROME2 convention (bright = dense).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import distance_transform_edt, gaussian_filter
from scipy.signal import fftconvolve

__all__ = [
    "BIASES",
    "CLASSES",
    "HOSPITALS",
    "MARKERS",
    "SPLITS",
    "TRAIN_HOSPITALS",
    "UNSEEN_HOSPITALS",
    "Hospital",
    "PhantomParts",
    "PhantomSpec",
    "generate_phantom",
    "get_hospital",
    "iter_phantoms",
    "plan_phantoms",
    "render_phantom",
]

CLASSES = ("normal", "pneumonia", "covid")
SPLITS = ("training", "validation", "test_biased", "test_unbiased", "test_deceiving")
#: where the class-correlated shortcut lies: outside the lungs (the hospital) or inside (a marker)
BIASES = ("background", "foreground")
#: device markers of the foreground variant; with full confounding CLASSES[i] carries MARKERS[i]
MARKERS = ("pacemaker", "electrode", "port")


@dataclass(frozen=True)
class Hospital:
    """A synthetic site: its background signature and how its scanner writes files."""

    name: str
    institution: str
    marker: str  # burned-in text
    marker_corner: str  # "tl", "tr", "bl" or "br"
    laterality: str  # lead letter "L" or "R"
    laterality_pos: tuple[float, float]  # (row, column) as fractions of the image side
    border_sides: str  # collimation border on these sides: subset of "tblr"
    border_width: float  # fraction of the side
    border_value: float  # 0 = black shutter, ~1 = unexposed (white) collimator edge
    gamma: float  # tone curve of the background brighter than the lungs
    noise: float  # noise standard deviation outside the lungs (ranks only, up to the lungs)
    modality: str  # "CR" or "DX"
    photometric: str  # "MONOCHROME1" or "MONOCHROME2"
    bits_stored: int
    rescale_slope: float
    rescale_intercept: float
    field_of_view_mm: float
    png_bits: int  # 8 or 16


HOSPITALS: tuple[Hospital, ...] = (
    Hospital("H1", "Hospital A (synthetic)", "A-CXR", "tl", "R", (0.12, 0.10), "", 0.0, 0.0,
             0.75, 0.010, "CR", "MONOCHROME1", 12, 1.0, 0.0, 380.0, 8),
    Hospital("H2", "Hospital B (synthetic)", "PORTABLE", "tr", "L", (0.10, 0.88), "lr", 0.07, 0.95,
             1.00, 0.035, "DX", "MONOCHROME2", 14, 0.5, -100.0, 400.0, 16),
    Hospital("H3", "Hospital C (synthetic)", "ICU 3", "bl", "R", (0.88, 0.88), "tb", 0.08, 0.0,
             1.35, 0.020, "DX", "MONOCHROME2", 16, 1.0, -32768.0, 360.0, 16),
    Hospital("H4", "Hospital D (synthetic)", "ERECT", "br", "L", (0.12, 0.12), "tblr", 0.04, 0.9,
             0.90, 0.015, "CR", "MONOCHROME1", 12, 2.0, -1024.0, 420.0, 8),
    Hospital("H5", "Hospital E (synthetic)", "SUPINE", "tr", "R", (0.85, 0.10), "t", 0.10, 0.0,
             1.15, 0.028, "DX", "MONOCHROME1", 15, 1.0, 0.0, 350.0, 16),
    Hospital("H6", "Hospital F (synthetic)", "ER 6", "bl", "L", (0.50, 0.92), "r", 0.06, 0.95,
             1.05, 0.040, "CR", "MONOCHROME2", 12, 1.0, 0.0, 430.0, 8),
)  # fmt: skip
#: training hospitals; with full confounding CLASSES[i] comes from TRAIN_HOSPITALS[i]
TRAIN_HOSPITALS = HOSPITALS[:3]
#: hospitals never seen in training (test_unbiased)
UNSEEN_HOSPITALS = HOSPITALS[3:]
_LUNG_NOISE = 0.012  # the same for every hospital
#: peak added density of each finding, drawn uniformly per image
_LESION_AMPLITUDE = {"pneumonia": (0.50, 0.65), "covid": (0.35, 0.45)}
#: hospital-specific intensities stay this far above the brightest lung value: more than two
#: bins of a 256-bin equalisation, so no lung pixel's equalised value can depend on them
_RANK_MARGIN = 0.02
#: patient-image value of a device marker: metal, denser than lung tissue and nearly all findings
_MARKER_DENSITY = 0.9
#: a marker's side as a fraction of the image side (at least 5 px)
_MARKER_SIDE = 0.10


def get_hospital(hospital: Hospital | str) -> Hospital:
    """Look a hospital up by name (``"H1"`` ... ``"H6"``)."""
    if isinstance(hospital, Hospital):
        return hospital
    for h in HOSPITALS:
        if h.name == hospital:
            return h
    raise ValueError(f"unknown hospital {hospital!r}; choose one of {[h.name for h in HOSPITALS]}")


@dataclass(frozen=True)
class PhantomParts:
    """A rendered phantom and its pieces (``lesion`` is what the finding added)."""

    image: np.ndarray  # float32 (S, S) in [0, 1]
    mask: np.ndarray  # uint8 (S, S), 1 = lung
    lesion: np.ndarray  # float32 (S, S), zero outside the lungs
    device: np.ndarray  # float32 (S, S), the device marker's coverage in [0, 1]; zero outside the lungs


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates ``(u, v)`` in ``[-1, 1]`` (u: columns, v: rows)."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2 - 1
    v, u = np.meshgrid(c, c, indexing="ij")
    return u, v


@lru_cache(maxsize=64)
def _glyph(text: str, px: int) -> np.ndarray:
    """The text rendered white on black as a float array in [0, 1]."""
    font = ImageFont.load_default(size=max(px, 6))
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    canvas = Image.new("L", (max(int(right - left), 1), max(int(bottom - top), 1)))
    ImageDraw.Draw(canvas).text((-left, -top), text, fill=255, font=font)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _stamp(img: np.ndarray, glyph: np.ndarray, row: int, col: int, value: float) -> None:
    """Blend ``glyph`` into ``img`` with its top-left corner at (row, col), clipped to the image."""
    size = img.shape[0]
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + glyph.shape[0], size), min(col + glyph.shape[1], size)
    if r1 <= r0 or c1 <= c0:
        return
    g = glyph[r0 - row : r1 - row, c0 - col : c1 - col]
    img[r0:r1, c0:c1] = img[r0:r1, c0:c1] * (1 - g) + value * g


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field."""
    field = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def _anatomy(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hospital-independent anatomy ``(image, lung mask)``; the image is blurred, the mask exact."""
    u, v = _grid(size)
    # body: an ellipse that widens from the neck to the shoulders
    half_width = 0.90 + rng.uniform(-0.05, 0.04)
    flank = np.clip(1 - np.abs((v - 0.15) / 1.12) ** 4, 0, 1) ** 0.25 * half_width
    shoulders = 0.24 + (half_width - 0.2) * np.clip((v + 1.02) / 0.3, 0, 1) ** 0.6
    body = np.abs(u) < np.minimum(flank, shoulders + 0.2 * np.clip((v + 0.72) / 0.5, 0, 1))
    thickness = np.sqrt(np.clip(1 - (u / half_width) ** 2, 0, 1))
    img = np.where(body, 0.40 + 0.20 * thickness, 0.03).astype(np.float32)

    # spine and mediastinum
    spine = np.exp(-((u / 0.075) ** 2)) * (0.88 + 0.12 * np.cos(v * np.pi * 11))
    img += body * (0.16 * spine + 0.06 * np.exp(-((u / 0.2) ** 2)))

    # ribs (posterior, curving down laterally) and clavicles, on both sides
    ribs = np.zeros_like(img)
    for side in (-1.0, 1.0):
        lateral = np.clip(side * u - 0.06, 0, None)
        on_side = side * u > 0.06
        spacing = 0.13 + rng.uniform(-0.01, 0.01)
        for k in range(10):
            centre = -0.74 + k * spacing + rng.uniform(-0.01, 0.01) + 0.42 * lateral**2 + 0.05 * lateral
            ribs += on_side * np.clip(1 - ((v - centre) / 0.03) ** 2, 0, 1)
        clavicle = -0.64 + 0.18 * lateral - 0.15 * lateral**2 + rng.uniform(-0.02, 0.02)
        ribs += (on_side & (lateral < 0.55)) * 1.4 * np.clip(1 - ((v - clavicle) / 0.032) ** 2, 0, 1)
    ribs *= body * np.clip((0.62 - v) / 0.15, 0, 1)

    # lungs: deformed, apex-narrowed ellipses above domed hemidiaphragms
    lungs = np.zeros(img.shape, dtype=bool)
    for side in (-1.0, 1.0):
        cx = side * (0.40 + rng.uniform(-0.03, 0.03))
        cy = -0.10 + rng.uniform(-0.04, 0.04)
        ax, ay = 0.29 + rng.uniform(-0.03, 0.03), 0.58 + rng.uniform(-0.05, 0.05)
        dx, dy = (u - cx) / ax, (v - cy) / ay
        taper = 0.4 + 0.6 * np.sqrt(np.clip((dy + 1) / 2, 0, 1))
        theta = np.arctan2(dy, dx)
        radius = 1.0 + sum(
            rng.uniform(0, 0.05) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)
        )
        dome = (0.86 if side < 0 else 0.92) + rng.uniform(-0.05, 0.05) - 0.35 * dx**2
        lungs |= ((dx / taper) ** 2 + dy**2 < radius**2) & (dy < dome) & (side * u > 0.09)
    # heart shadow, on the patient's left (image right), hides the medial left lung
    hx, hy = 0.10 + rng.uniform(-0.03, 0.03), 0.27 + rng.uniform(-0.03, 0.03)
    hax, hay, angle = 0.30 + rng.uniform(-0.03, 0.03), 0.23 + rng.uniform(-0.02, 0.02), -0.35
    du, dv = u - hx, v - hy
    heart = ((du * np.cos(angle) + dv * np.sin(angle)) / hax) ** 2 + (
        (-du * np.sin(angle) + dv * np.cos(angle)) / hay
    ) ** 2 < 1
    img += body * gaussian_filter(heart.astype(np.float32), size / 100) * 0.10
    mask = lungs & ~heart & body

    # lung fields: dark air, vessels fanning out from the hila, ribs on top
    base = np.clip((v + 0.6) / 1.2, 0, 1)
    hila = sum(np.exp(-(((u - s * 0.16) / 0.12) ** 2) - ((v + 0.02) / 0.22) ** 2) for s in (-1.0, 1.0))
    vessels = np.abs(_smooth_noise(rng, size, size / 90))
    lung_value = 0.13 + 0.03 * base + 0.10 * hila + 0.035 * vessels * (0.4 + hila)
    img = np.where(mask, lung_value, img) + 0.07 * ribs
    img = gaussian_filter(img, 0.7 * size / 224)
    return img.astype(np.float32), mask


def _lesion(label: str, mask: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The finding's added density, exactly zero outside the lung mask."""
    u, v = _grid(size)
    if label == "normal":
        return np.zeros(mask.shape, dtype=np.float32)
    if label == "pneumonia":  # focal consolidation in one lung
        side = rng.choice([-1.0, 1.0])
        target = mask & (side * u > 0)
        if not target.any():
            target = mask
        idx = rng.choice(np.flatnonzero(target))
        uc, vc = u.flat[idx], v.flat[idx]
        r = rng.uniform(0.09, 0.16)
        blob = np.exp(-(((u - uc) ** 2 + (v - vc) ** 2) / r**2))
        texture = 0.75 + 0.25 * np.tanh(_smooth_noise(rng, size, size / 40))
        lesion = rng.uniform(*_LESION_AMPLITUDE[label]) * blob * texture * target
    elif label == "covid":  # bilateral, peripheral, lower-zone ground glass
        depth = distance_transform_edt(mask) * (2.0 / size)
        peripheral = np.exp(-depth / 0.08)
        lower = 0.35 + 0.65 * np.clip((v + 0.6) / 1.2, 0, 1)
        patchy = 1 / (1 + np.exp(-3 * _smooth_noise(rng, size, size / 30) - 1))
        lesion = rng.uniform(*_LESION_AMPLITUDE[label]) * peripheral * lower * patchy * mask
    else:
        raise ValueError(f"unknown class {label!r}; choose one of {CLASSES}")
    return lesion.astype(np.float32)


def _check_marker(marker: str | None) -> None:
    if marker is not None and marker not in MARKERS:
        raise ValueError(f"unknown marker {marker!r}; choose one of {MARKERS} or None")


@lru_cache(maxsize=32)
def _marker_shape(marker: str, size: int) -> np.ndarray:
    """The marker's coverage on its own ``(s, s)`` tile, ``s = max(5, round(0.1 * size))``,
    drawn at 4x and averaged down (soft edges, every part at least a pixel wide)."""
    _check_marker(marker)
    side = max(5, round(_MARKER_SIDE * size))
    k = 4
    n = side * k
    wire = max(k, round(0.15 * n))
    canvas = Image.new("L", (n, n))
    draw = ImageDraw.Draw(canvas)
    if marker == "pacemaker":  # a rounded can with a short lead leaving its top
        draw.rounded_rectangle((0, 0.38 * n, n - 1, n - 1), radius=0.2 * n, fill=255)
        draw.line([(0.7 * n, 0.45 * n), (0.7 * n, 0.18 * n), (n - 1, 0.0)], fill=255, width=wire)
    elif marker == "electrode":  # a ring with its snap in the centre and a wire
        draw.ellipse((0, 0.3 * n, 0.7 * n - 1, n - 1), outline=255, width=max(k, round(0.16 * n)))
        draw.ellipse((0.25 * n, 0.55 * n, 0.45 * n, 0.75 * n), fill=255)
        draw.line([(0.58 * n, 0.42 * n), (n - 1, 0.0)], fill=255, width=wire)
    else:  # port: a cross
        arm = (0.5 - 0.13) * n, (0.5 + 0.13) * n
        draw.rectangle((0, arm[0], n - 1, arm[1]), fill=255)
        draw.rectangle((arm[0], 0, arm[1], n - 1), fill=255)
    tile = np.asarray(canvas, dtype=np.float32).reshape(side, k, side, k).mean(axis=(1, 3)) / 255.0
    tile.setflags(write=False)
    return tile


def _device(marker: str, mask: np.ndarray, lesion: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The marker's coverage on the image: the whole shape inside the lung mask (so inside one
    lung), at a random position, preferring positions where it covers little of the finding."""
    size = mask.shape[0]
    tile = _marker_shape(marker, size)
    footprint = (tile > 0).astype(np.float32)
    # by top-left corner: mask pixels and finding under the footprint
    inside = fftconvolve(mask.astype(np.float32), footprint[::-1, ::-1], mode="valid")
    fits = inside > footprint.sum() - 0.5
    if fits.any():
        under = fftconvolve(lesion, footprint[::-1, ::-1], mode="valid")
        clear = fits & (under <= 0.2 * float(lesion.max()) * footprint.sum() + 1e-6)
        where = clear if clear.any() else fits
    else:  # lungs too small for the marker anywhere: the best-covered position, clipped below
        where = inside >= inside.max() - 0.5
    row, col = np.unravel_index(int(rng.choice(np.flatnonzero(where))), where.shape)
    device = np.zeros(mask.shape, dtype=np.float32)
    device[row : row + tile.shape[0], col : col + tile.shape[1]] = tile
    return device * mask


def _border_region(size: int, hospital: Hospital) -> np.ndarray:
    """Boolean map of the hospital's collimation border."""
    region = np.zeros((size, size), dtype=bool)
    width = round(hospital.border_width * size)
    if width:
        for side in hospital.border_sides:
            region[
                {
                    "t": np.s_[:width, :],
                    "b": np.s_[-width:, :],
                    "l": np.s_[:, :width],
                    "r": np.s_[:, -width:],
                }[side]
            ] = True
    return region


def _lung_range(base: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """``(floor, cut)``: the darkest lung value and the brightest + :data:`_RANK_MARGIN`."""
    lungs = base[mask]
    return float(lungs.min()), min(float(lungs.max()) + _RANK_MARGIN, 1.0)


def _background(
    base: np.ndarray, mask: np.ndarray, hospital: Hospital, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hospital's view of the patient: tone curve, collimation, noise, burned-in text.

    With ``cut`` the lungs' brightest value plus a margin, everything brighter than ``cut`` goes
    through the hospital's tone curve, a monotone map of ``[cut, 1]`` onto itself, and under the
    collimation border becomes the border value (``0``: black shutter, ``~1``: white collimator
    edge) mapped into ``[cut, 1]``. Soft tissue no brighter than ``cut`` is darkened under a
    black shutter and brightened up to ``cut`` under a white edge; air stays air. The noise is
    the hospital's; the burned-in text is a noise-free digital overlay with values up to 1.
    :func:`_keep_lung_ranks` turns this view into pixel values without moving the lungs' ranks.

    Returns:
        ``(clean, noisy, stamped)``: the view without and with the hospital's noise, and where
        the text lies.
    """
    size = base.shape[0]
    floor, cut = _lung_range(base, mask)
    clean = base.copy()
    upper = clean > cut
    clean[upper] = cut + (1 - cut) * ((clean[upper] - cut) / (1 - cut)) ** hospital.gamma
    border = _border_region(size, hospital)
    clean[border & upper] = cut + (1 - cut) * hospital.border_value
    tissue = border & ~upper & (base >= floor)
    if hospital.border_value >= 0.5:
        clean[tissue] = cut
    else:
        clean[tissue] = floor + (clean[tissue] - floor) * 0.5
    noisy = clean + rng.normal(0.0, hospital.noise, clean.shape).astype(np.float32)
    stamped = np.zeros((size, size), dtype=np.float32)
    width = round(hospital.border_width * size)
    jitter = max(1, size // 50)
    text = _glyph(hospital.marker, max(6, round(size / 15)))
    margin = width + max(2, size // 40)
    row = margin if hospital.marker_corner[0] == "t" else size - margin - text.shape[0]
    col = margin if hospital.marker_corner[1] == "l" else size - margin - text.shape[1]
    row += int(rng.integers(-jitter, jitter + 1))
    col += int(rng.integers(-jitter, jitter + 1))
    for img, value in ((clean, 0.97), (noisy, 0.97), (stamped, 1.0)):
        _stamp(img, text, row, col, value)
    letter = _glyph(hospital.laterality, max(7, round(size / 9)))
    row = round(hospital.laterality_pos[0] * size - letter.shape[0] / 2) + int(
        rng.integers(-jitter, jitter + 1)
    )
    col = round(hospital.laterality_pos[1] * size - letter.shape[1] / 2) + int(
        rng.integers(-jitter, jitter + 1)
    )
    for img in (clean, noisy, stamped):
        _stamp(img, letter, row, col, 1.0)
    return clean, noisy, stamped > 0


def _keep_lung_ranks(
    base: np.ndarray, clean: np.ndarray, noisy: np.ndarray, stamped: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Give the hospital's view of the background pixel values that leave the lungs' ranks alone.

    Let ``cut`` be the brightest lung value + :data:`_RANK_MARGIN` and ``k`` the number of
    background pixels of ``base`` at or below ``cut`` (air, the body's edge, soft tissue as dense
    as the lungs). Exactly ``k`` background pixels receive exactly those ``k`` values of
    ``base``, in the order of the hospital's ``noisy`` view: the pixels whose ``clean`` view is
    at or below ``cut``, then, as the text brightened some of them, as many body pixels, nearest
    to the dark ones first (the body's outline shrinks by the text's area). All other background
    pixels get the ``noisy`` view mapped by an increasing affine map onto ``[cut, 1]`` (the
    brightest to exactly 1). So the image's minimum (``base``'s), its maximum (1) and every bin
    of a 256-bin histogram up to two bins above the lungs do not depend on the hospital, and
    neither do the equalised lung pixels.
    """
    background = ~mask
    _, cut = _lung_range(base, mask)
    dark = background & (base <= cut)
    values, view = base[background], noisy[background]
    lower = np.sort(values[dark[background]])
    stays_dark = dark[background] & (clean[background] <= cut)
    kept = np.flatnonzero(stays_dark)
    order = kept[np.argsort(view[kept], kind="stable")]
    if order.size < lower.size:  # the text brightened some dark pixels: the body makes way
        text = stamped[background]
        body = np.flatnonzero(~stays_dark & ~text)
        depth = distance_transform_edt(~dark)[background][body]
        body = body[np.argsort(depth, kind="stable")]
        text = np.flatnonzero(~stays_dark & text)
        order = np.concatenate([order, body, text[np.argsort(view[text], kind="stable")]])[: lower.size]
    out = np.empty_like(values)
    out[order] = lower
    bright = np.ones(values.size, dtype=bool)
    bright[order] = False
    bright = np.flatnonzero(bright)
    if bright.size:
        hospital_view = view[bright].astype(np.float64)
        lo, hi = min(float(hospital_view.min()), cut), float(hospital_view.max())
        if hi > lo:
            scaled = np.clip(cut + (1 - cut) * (hospital_view - lo) / (hi - lo), cut, 1.0)
        else:
            scaled = np.ones_like(hospital_view)
        out[bright] = np.where(hospital_view >= hi, 1.0, scaled)
    image = base.copy()
    image[background] = out
    return image


def render_phantom(
    label: str,
    hospital: Hospital | str,
    size: int = 224,
    rng: np.random.Generator | int | None = None,
    *,
    marker: str | None = None,
) -> PhantomParts:
    """Render one phantom with its parts; see :func:`generate_phantom`."""
    if label not in CLASSES:
        raise ValueError(f"unknown class {label!r}; choose one of {CLASSES}")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")
    _check_marker(marker)
    hospital = get_hospital(hospital)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    anatomy, mask = _anatomy(size, rng)
    lesion = _lesion(label, mask, size, rng)
    # the patient as any hospital would see it before its own processing; all random draws
    # for the hospital come after, so the same seed gives the same patient everywhere
    base = anatomy + lesion + rng.normal(0.0, _LUNG_NOISE, anatomy.shape).astype(np.float32)
    device = np.zeros(base.shape, dtype=np.float32)
    if marker is not None:  # metal on the patient, inside a lung: lung pixels for every hospital
        device = _device(marker, mask, lesion, rng)
        base = base * (1 - device) + _MARKER_DENSITY * device
    # on the 8-bit grid, the coarsest any hospital stores: every file then holds the lungs (and
    # all that is as dark) exactly, so the files' equalised lungs do not depend on the hospital
    base = (np.rint(np.clip(base, 0, 1) * 255) / 255).astype(np.float32)
    image = _keep_lung_ranks(base, *_background(base, mask, hospital, rng), mask)
    return PhantomParts(image.astype(np.float32), mask.astype(np.uint8), lesion, device)


def generate_phantom(
    label: str,
    hospital: Hospital | str,
    size: int = 224,
    rng: np.random.Generator | int | None = None,
    *,
    marker: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One chest X-ray phantom: ``(image, mask)``.

    Args:
        label: ``"normal"``, ``"pneumonia"`` or ``"covid"``.
        hospital: a :class:`Hospital` or its name (``"H1"`` ... ``"H6"``).
        size: side in pixels.
        rng: a numpy Generator or a seed; the same seed gives the same phantom.
        marker: a device marker from :data:`MARKERS` drawn inside one lung, or ``None``. Without
            one the phantom is the same as before markers existed; with one, the same seed gives
            the same patient up to the marker's pixels in the lungs.

    Returns:
        ``image``: float32 ``(size, size)`` in ``[0, 1]``, bright = dense (MONOCHROME2);
        ``mask``: uint8 ``(size, size)``, 1 inside the lungs (exact: findings never leave it,
        the hospital's signature never enters it).
    """
    parts = render_phantom(label, hospital, size, rng, marker=marker)
    return parts.image, parts.mask


@dataclass(frozen=True)
class PhantomSpec:
    """What one phantom of a data set will be: its split, class, hospital, seed and device marker
    (``None``: none, always so in the background variant)."""

    split: str
    index: int
    label: str
    hospital: str
    seed: tuple[int, int, int]
    patient_id: str
    marker: str | None = None


def _patient_id(seed: int, split: str, index: int) -> str:
    digest = hashlib.sha256(f"tea_med-phantom/{seed}/{split}/{index}".encode()).hexdigest()
    return f"PH{digest[:10].upper()}"


def _check_bias(bias: str) -> None:
    if bias not in BIASES:
        raise ValueError(f"bias must be one of {BIASES}, got {bias!r}")


def plan_phantoms(
    n: int | Mapping[str, int] = 60,
    *,
    seed: int = 0,
    confounding: float = 1.0,
    splits: tuple[str, ...] = SPLITS,
    bias: str = "background",
) -> list[PhantomSpec]:
    """Decide class, hospital and marker of every phantom, deterministically for a seed.

    Classes cycle through :data:`CLASSES` (balanced). With ``bias="background"`` the hospital is
    the shortcut and no phantom carries a marker:

    - ``training``, ``validation``, ``test_biased``: with probability ``confounding`` the
      class's paired training hospital (``TRAIN_HOSPITALS[class index]``), otherwise one of the
      training hospitals uniformly at random (``confounding=0`` removes the correlation);
    - ``test_unbiased``: the unseen hospitals in rotation, independent of the class;
    - ``test_deceiving``: the pairing permuted (class ``i`` from training hospital ``i + 1``).

    With ``bias="foreground"`` the device marker is the shortcut and the hospital is independent
    of the class: a training hospital uniformly at random per image (``test_unbiased``: the
    unseen hospitals in rotation). Markers:

    - ``training``, ``validation``, ``test_biased``: with probability ``confounding`` the
      class's own marker (``MARKERS[class index]``), otherwise that of a uniformly random class;
    - ``test_unbiased``: none;
    - ``test_deceiving``: the next class's (class ``i`` carries ``MARKERS[i + 1]``).

    Args:
        n: images per split, or a mapping split -> count.
        seed: the data set seed; each image gets its own seed ``(seed, split, index)``.
        confounding: class-hospital (background) or class-marker (foreground) correlation
            strength in ``[0, 1]``.
        splits: which splits to plan (from :data:`SPLITS`).
        bias: ``"background"`` or ``"foreground"`` (:data:`BIASES`).
    """
    _check_bias(bias)
    if not 0.0 <= confounding <= 1.0:
        raise ValueError(f"confounding must be in [0, 1], got {confounding}")
    counts = {s: n for s in splits} if isinstance(n, int) else dict(n)
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; choose from {SPLITS}")
    specs = []
    for split, count in counts.items():
        if count < 0:
            raise ValueError(f"the number of images for {split!r} must be >= 0, got {count}")
        code = SPLITS.index(split)
        for i in range(count):
            c = i % len(CLASSES)
            marker = None
            if split == "test_unbiased":
                hospital = UNSEEN_HOSPITALS[(i // len(CLASSES)) % len(UNSEEN_HOSPITALS)]
            elif bias == "foreground":
                pick = np.random.default_rng([seed, code, i, 1])
                hospital = TRAIN_HOSPITALS[int(pick.integers(len(TRAIN_HOSPITALS)))]
                if split == "test_deceiving":
                    marker = MARKERS[(c + 1) % len(MARKERS)]
                else:
                    paired = pick.random() < confounding
                    marker = MARKERS[c if paired else int(pick.integers(len(MARKERS)))]
            elif split == "test_deceiving":
                hospital = TRAIN_HOSPITALS[(c + 1) % len(TRAIN_HOSPITALS)]
            else:
                pick = np.random.default_rng([seed, code, i, 1])
                paired = pick.random() < confounding
                hospital = TRAIN_HOSPITALS[c if paired else int(pick.integers(len(TRAIN_HOSPITALS)))]
            specs.append(
                PhantomSpec(
                    split, i, CLASSES[c], hospital.name, (seed, code, i), _patient_id(seed, split, i), marker
                )
            )
    return specs


def iter_phantoms(
    n: int | Mapping[str, int] = 60,
    *,
    size: int = 224,
    seed: int = 0,
    confounding: float = 1.0,
    splits: tuple[str, ...] = SPLITS,
    bias: str = "background",
) -> Iterator[tuple[PhantomSpec, np.ndarray, np.ndarray]]:
    """Generate a data set in memory: ``(spec, image, mask)`` per phantom (see :func:`plan_phantoms`)."""
    for spec in plan_phantoms(n, seed=seed, confounding=confounding, splits=splits, bias=bias):
        image, mask = generate_phantom(
            spec.label, spec.hospital, size, np.random.default_rng(spec.seed), marker=spec.marker
        )
        yield spec, image, mask
