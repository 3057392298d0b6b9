"""LRP-ε heatmaps of a bundle's predictions, one overlay PNG per image (``tea-med explain``).

Works with any bundle whose inference workflow, ``configs/common.yaml`` followed by
``configs/inference.yaml`` (MONAI's composed configs; a lone ``configs/inference.json`` also
works), defines ``network_def``, ``ckpt_path``, ``image_size`` and ``class_names``
(``tea_teacher``, ``tea_student``); a ``heatmap_eps`` there is the default LRP ε. A
:class:`~tea_med.networks.TeacherPipeline` is explained the way TEA explains it
(docs/method.md, section 5): through its classifier, on the masked input (lungs kept,
background replaced by seeded noise); any other network is explained directly. The explained
quantity is the raw logit of the predicted class (or of a chosen class), LRP-ε as in
docs/method.md, section 2.

No training code is imported here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tea_med.data import test_transforms
from tea_med.data.errors import DataError
from tea_med.deploy.bundle import (
    BundleError,
    BundleNetwork,
    MissingCheckpointError,
    check_class,
    load_bundle_network,
    parse_override,
)
from tea_med.explain import LRPEpsilon
from tea_med.networks import explained_input

#: LRP ε when the bundle defines no ``heatmap_eps``
DEFAULT_EPS = 1e-2


@dataclass(frozen=True)
class ExplainedImage:
    """One explained image. Tensors are on the CPU, float32, without batch dimension.

    Attributes:
        source: the input file.
        output: the written PNG (``None`` when no output folder was given).
        image: the preprocessed image ``[C, H, W]`` (``test_transforms(image_size)``).
        model_input: what the explained classifier saw: ``image`` for a plain classifier, the
            masked image (noise outside the lungs) for a teacher.
        heatmap: LRP-ε relevance ``[C, H, W]`` of the explained logit w.r.t. ``model_input``.
        mask: the teacher's binary lung mask ``[H, W]``, ``None`` for a plain classifier.
        probabilities: softmax of the logits ``[K]`` (same forward pass as the heatmap).
        predicted: name of the most probable class.
        explained: name of the class whose logit the heatmap explains.
        eps: the LRP ε.
    """

    source: Path
    output: Path | None
    image: torch.Tensor
    model_input: torch.Tensor
    heatmap: torch.Tensor
    mask: torch.Tensor | None
    probabilities: torch.Tensor
    predicted: str
    explained: str
    eps: float


def data_error(err: BaseException) -> DataError | None:
    """The :class:`DataError` behind ``err`` (MONAI wraps transform errors in ``RuntimeError``)."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, DataError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def preprocess(path: str | os.PathLike[str], image_size: int) -> torch.Tensor:
    """``test_transforms(image_size)`` of one file as a plain float32 tensor ``[C, H, W]``.

    Raises :class:`DataError` naming the file when it cannot be read.
    """
    try:
        data = test_transforms(image_size)({"image": str(path)})
    except Exception as err:
        found = data_error(err)
        if found is not None:
            raise found from err
        raise DataError(path, f"cannot be preprocessed ({err})") from err
    image = data["image"]
    return image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)


def explain_tensor(
    bundle: BundleNetwork,
    image: torch.Tensor,
    *,
    eps: float = 1e-2,
    class_index: int | None = None,
    seed: int = 0,
    lrp: LRPEpsilon | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, int]:
    """LRP-ε of one preprocessed image ``[C, H, W]``.

    Returns ``(model_input, heatmap, mask, probabilities, explained_index)`` on the CPU. For a
    teacher the background noise is drawn with ``torch.manual_seed(seed)`` inside a forked RNG
    (the caller's random state is untouched), so the same image always gets the same heatmap.
    """
    lrp = lrp or LRPEpsilon(eps)
    net = bundle.network
    device = next(net.parameters()).device
    x = image[None].to(device=device, dtype=torch.float32)
    cuda: list[int] = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(seed)
        model, x, mask = explained_input(net, x)
    target: Any = (lambda z: z.argmax(1)) if class_index is None else torch.tensor([class_index])
    result = lrp.explain(model, x, target, eps=eps)
    probs = torch.softmax(result.logits.detach().float(), dim=1)[0].cpu()
    mask_2d = None if mask is None else mask[0, 0].cpu()
    return x[0].detach().cpu(), result.heatmap[0].detach().cpu(), mask_2d, probs, int(result.target[0])


def _unique_name(source: Path, used: set[str]) -> str:
    stem = source.stem or source.name
    name, k = f"{stem}_lrp.png", 2
    while name in used:
        name, k = f"{stem}_{k}_lrp.png", k + 1
    used.add(name)
    return name


def explain_images(
    bundle_dir: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    *,
    eps: float | None = None,
    class_name: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    on_written: Callable[[ExplainedImage], None] | None = None,
    on_error: Callable[[Path, DataError], None] | None = None,
) -> list[ExplainedImage]:
    """Explain each image with the bundle's network and (with ``out_dir``) write overlay PNGs.

    Args:
        bundle_dir: the MONAI bundle (``configs/common.yaml`` + ``configs/inference.yaml``,
            ``models/model.pt``).
        images: DICOM/PNG/JPEG files.
        eps: LRP ε (> 0); ``None``: the bundle's ``heatmap_eps`` (the student's: the geometric
            midpoint of its training range), else ``DEFAULT_EPS``.
        class_name: explain this class instead of the predicted one (one of ``class_names``).
        overrides: config ids to replace, e.g. ``{"image_size": 32, "segmenter_profile": "small"}``.
        out_dir: folder for ``<stem>_lrp.png`` per image (created); ``None`` writes nothing.
        device: torch device for the network.
        seed: seed of the teacher's background noise (the same for every image).
        on_written: called after each PNG is written.
        on_error: called for an unreadable image, which is then skipped; without it the
            :class:`DataError` is raised.
    """
    if eps is not None and not eps > 0:
        raise BundleError(f"eps must be > 0 (LRP-ε), got {eps!r}")
    bundle = load_bundle_network(bundle_dir, overrides, device)
    if eps is None:
        eps = DEFAULT_EPS if bundle.heatmap_eps is None else bundle.heatmap_eps
    class_index = check_class(class_name, bundle.class_names)
    lrp = LRPEpsilon(eps)
    out = None if out_dir is None else Path(out_dir)
    used: set[str] = set()
    results = []
    for item in images:
        source = Path(item)
        try:
            image = preprocess(source, bundle.image_size)
        except DataError as err:
            if on_error is None:
                raise
            on_error(source, err)
            continue
        model_input, heatmap, mask, probs, target = explain_tensor(
            bundle, image, eps=eps, class_index=class_index, seed=seed, lrp=lrp
        )
        explained = ExplainedImage(
            source=source,
            output=None if out is None else out / _unique_name(source, used),
            image=image.float(),
            model_input=model_input,
            heatmap=heatmap,
            mask=mask,
            probabilities=probs,
            predicted=bundle.class_names[int(probs.argmax())],
            explained=bundle.class_names[target],
            eps=float(eps),
        )
        if explained.output is not None:
            save_overlay(explained, explained.output)
            if on_written is not None:
                on_written(explained)
        results.append(explained)
    return results


def _relevance_limit(h: np.ndarray) -> float:
    """Symmetric colour limit: the 99.5th percentile of |relevance| (a few pixels often dominate)."""
    a = np.abs(h)
    lim = float(np.percentile(a, 99.5)) if a.size else 0.0
    return lim or float(a.max()) or 1.0


def save_overlay(result: ExplainedImage, path: str | os.PathLike[str]) -> Path:
    """Write the figure of one explained image: the image (lung mask outlined for a teacher), the
    classifier's input for a teacher, and the heatmap over the image (red = relevance for the
    explained class, blue = against; channels summed; colour limit at the 99.5th percentile).
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    img = result.image.numpy().mean(0)
    heat = result.heatmap.numpy().astype(np.float64).sum(0)
    mask = None if result.mask is None else result.mask.numpy()
    panels = 3 if mask is not None else 2
    fig = Figure(figsize=(3.0 * panels, 3.5))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    axes[0].imshow(img, cmap="gray", vmin=0.0, vmax=1.0)
    axes[0].set_title("image" + (" + lung mask" if mask is not None else ""), fontsize=9)
    if mask is not None:
        axes[1].imshow(result.model_input.numpy().mean(0), cmap="gray", vmin=0.0, vmax=1.0)
        axes[1].set_title("classifier input", fontsize=9)
    lim = _relevance_limit(heat)
    ax = axes[-1]
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, alpha=0.5)
    shown = ax.imshow(heat, cmap="bwr", vmin=-lim, vmax=lim, alpha=0.75)
    ax.set_title(f"LRP-ε {result.eps:g}: {result.explained}", fontsize=9)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    if mask is not None and 0 < mask.sum() < mask.size:
        for a in (axes[0], axes[-1]):
            a.contour(mask, levels=[0.5], colors="lime", linewidths=0.8)
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    p_pred = float(result.probabilities.max())
    fig.suptitle(f"{result.source.name}: predicted {result.predicted} (p = {p_pred:.2f})", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


__all__ = [
    "BundleError",
    "BundleNetwork",
    "ExplainedImage",
    "MissingCheckpointError",
    "check_class",
    "explain_images",
    "explain_tensor",
    "load_bundle_network",
    "parse_override",
    "preprocess",
    "save_overlay",
]
