"""A MONAI bundle's inference workflow as the deploy tools use it: its network with weights
loaded, class names, input size, preprocessing chain and metadata.

The workflow is ``configs/common.yaml`` followed by ``configs/inference.yaml`` (MONAI's composed
configs; a lone ``configs/inference.json``, the model-zoo layout, also works) and must define
``network_def``, ``ckpt_path``, ``image_size`` and ``class_names``. No training code is imported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tea_med.networks import load_weights

#: the inference workflow of a bundle: these files, merged in order (later ones override)
CONFIG_FILES = (Path("configs") / "common.yaml", Path("configs") / "inference.yaml")
#: a bundle with a single inference config (the MONAI model-zoo layout) is read too
LEGACY_CONFIG = Path("configs") / "inference.json"
#: ids every explainable bundle defines in its inference workflow
REQUIRED_IDS = ("network_def", "ckpt_path", "image_size", "class_names")


class BundleError(ValueError):
    """A bundle that cannot be used as asked (missing folder or config, unknown id or class)."""


class MissingCheckpointError(BundleError):
    """The bundle's ``ckpt_path`` does not exist; the message names it and the config that writes it."""


@dataclass(frozen=True)
class BundleNetwork:
    """The network of a bundle with its weights loaded, in eval mode."""

    network: nn.Module
    class_names: list[str]
    image_size: int
    ckpt_path: Path
    bundle_dir: Path
    #: the bundle's ``heatmap_eps`` (for the student: the geometric midpoint of its training ε range)
    heatmap_eps: float | None = None
    #: the workflow's config files, merged in this order
    config_files: tuple[Path, ...] = ()
    #: the parsed workflow (a ``monai.bundle.ConfigParser``; ``bundle_root`` and overrides set)
    parser: Any = field(default=None, repr=False, compare=False)

    def metadata(self) -> dict[str, Any]:
        """``configs/metadata.json`` of the bundle (``{}`` when it has none)."""
        path = self.bundle_dir / "configs" / "metadata.json"
        if not path.is_file():
            return {}
        try:
            return dict(json.loads(path.read_text()))
        except (ValueError, OSError) as err:
            raise BundleError(f"{path} is not valid JSON: {err}") from err

    def preprocessing(self) -> Any:
        """The workflow's ``preprocessing`` transform (records ``{"image": file}`` in, the network's
        input out), or :func:`tea_med.data.test_transforms` at ``image_size`` when it has none."""
        if self.parser is not None and "preprocessing" in self.parser:
            return self.parser.get_parsed_content("preprocessing")
        from tea_med.data import test_transforms

        return test_transforms(self.image_size)

    def config_value(self, key: str, default: Any = None) -> Any:
        """The parsed value of a workflow id, or ``default`` when the workflow lacks it."""
        if self.parser is None or key not in self.parser:
            return default
        return self.parser.get_parsed_content(key)


def parse_override(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(KEY, VALUE)``; VALUE is parsed as JSON when it is JSON, else kept as text.

    ``image_size=32`` gives ``32``; ``segmenter_profile=small`` and ``segmenter_profile="small"``
    give ``"small"``; nested ids use MONAI's ``#`` separator (``network_def#threshold=0.5``).
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise BundleError(f"override {text!r} is not KEY=VALUE (e.g. image_size=32)")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _saved_filenames(config: Any) -> set[str]:
    """Every ``key_metric_filename`` of the ``CheckpointSaver``s in a config's content."""
    if isinstance(config, dict):
        found = {str(config["key_metric_filename"])} if "key_metric_filename" in config else set()
        return found.union(*(_saved_filenames(v) for v in config.values()))
    if isinstance(config, list):
        return set().union(*(_saved_filenames(v) for v in config))
    return set()


def _train_commands(bundle_dir: Path, ckpt_name: str) -> list[str]:
    """The command of each ``configs/train*`` workflow of the bundle that saves ``ckpt_name``."""
    from monai.bundle import ConfigParser

    configs = bundle_dir / "configs"
    common = configs / CONFIG_FILES[0].name
    commands = []
    for c in sorted(configs.glob("train*.*")):
        if c.suffix not in (".yaml", ".yml", ".json"):
            continue
        try:
            saved = _saved_filenames(ConfigParser.load_config_file(c))
        except (ValueError, OSError):
            continue
        if ckpt_name in saved:
            files = (
                [f"configs/{common.name}", f"configs/{c.name}"] if common.is_file() else [f"configs/{c.name}"]
            )
            arg = '"[' + ",".join(f"'{f}'" for f in files) + ']"' if len(files) > 1 else files[0]
            commands.append(f"python -m monai.bundle run --config_file {arg}")
    return commands


def _missing_checkpoint(ckpt: Path, bundle_dir: Path) -> str:
    writers = _train_commands(bundle_dir, ckpt.name)
    if writers:
        how = " or ".join(f"`{w}`" for w in writers)
        hint = f"train the bundle first: {how} in {bundle_dir}"
    else:
        hint = f"no configs/train* workflow in {bundle_dir} writes it; copy a trained {ckpt.name} there"
    docs = bundle_dir / "docs" / "README.md"
    if docs.is_file():
        hint += f" (steps: {docs})"
    return f"checkpoint {ckpt} does not exist; {hint}"


def load_bundle_network(
    bundle_dir: str | os.PathLike[str],
    overrides: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> BundleNetwork:
    """Build ``network_def`` from the bundle's inference workflow and load ``ckpt_path``.

    The workflow is ``configs/common.yaml`` + ``configs/inference.yaml`` (or a lone
    ``configs/inference.json``).

    ``bundle_root`` is set to ``bundle_dir``; ``overrides`` replace config ids (which must exist).
    The caller's (CPU) random state is left as it was.
    Raises :class:`BundleError` for a missing folder, config or id, :class:`MissingCheckpointError`
    for a missing checkpoint, and
    ``RuntimeError`` (from :func:`~tea_med.networks.load_weights`) for a checkpoint that does not
    fit the network.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_dir)
    wanted = " + ".join(str(c) for c in CONFIG_FILES)
    if not root.is_dir():
        raise BundleError(f"bundle folder {root} does not exist (expected a MONAI bundle with {wanted})")
    files = [root / c for c in CONFIG_FILES if (root / c).is_file()]
    if (root / CONFIG_FILES[-1]) not in files:
        files = [root / LEGACY_CONFIG] if (root / LEGACY_CONFIG).is_file() else []
    if not files:
        raise BundleError(
            f"{root / CONFIG_FILES[-1]} does not exist: {root} is not a MONAI bundle with an inference "
            f"workflow ({wanted})"
        )
    config = " + ".join(str(f) for f in files)
    parser = ConfigParser()
    try:
        parser.read_config([str(f) for f in files])
    except (ValueError, OSError) as err:
        raise BundleError(f"{config} cannot be read: {err}") from err
    missing = [key for key in REQUIRED_IDS if key not in parser]
    if missing:
        raise BundleError(f"{config} lacks {', '.join(missing)} (needs {', '.join(REQUIRED_IDS)})")
    parser["bundle_root"] = str(root)
    for key, value in (overrides or {}).items():
        if key not in parser:
            known = ", ".join(k for k in parser.get() if not k.startswith("_"))
            raise BundleError(f"override {key!r} is not an id of {config}; ids: {known}")
        parser[key] = value
    class_names = [str(c) for c in parser.get_parsed_content("class_names")]
    image_size = int(parser.get_parsed_content("image_size"))
    heatmap_eps = float(parser.get_parsed_content("heatmap_eps")) if "heatmap_eps" in parser else None
    ckpt = Path(parser.get_parsed_content("ckpt_path"))
    with torch.random.fork_rng(devices=[]):  # random init before loading: keep the caller's RNG
        network = parser.get_parsed_content("network_def")
    if not isinstance(network, nn.Module):
        raise BundleError(f"network_def of {config} is a {type(network).__name__}, not a torch module")
    if not ckpt.is_file():
        raise MissingCheckpointError(_missing_checkpoint(ckpt, root))
    load_weights(network, ckpt)
    network = network.to(device).eval().requires_grad_(False)
    return BundleNetwork(network, class_names, image_size, ckpt, root, heatmap_eps, tuple(files), parser)


def check_class(class_name: str | None, class_names: Sequence[str]) -> int | None:
    """Index of ``class_name`` in ``class_names`` (``None`` stays ``None``: the predicted class)."""
    if class_name is None:
        return None
    if class_name not in class_names:
        raise BundleError(f"unknown class {class_name!r}; allowed: {', '.join(class_names)}")
    return list(class_names).index(class_name)
