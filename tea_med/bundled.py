"""The MONAI bundles that ship with tea_med, wherever tea_med is installed.

In a checkout they are the repository's ``bundles/`` folder; installed from a wheel they are the
package ``tea_med.bundles``. Either way :func:`bundle_dir` finds them, and :func:`copy_bundles`
copies them into a folder of the user's (bundles write their weights under ``models/``).
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

BUNDLES = ("tea_teacher", "tea_student")
_SHIPPED = ("configs", "docs", "models", "LICENSE")


def bundles_root() -> Path:
    """The folder that holds the shipped bundles (and their ``schema/``)."""
    root = Path(str(resources.files("tea_med.bundles")))
    if not (root / BUNDLES[0] / "configs").is_dir():
        raise FileNotFoundError(f"the tea_med bundles are missing from {root}; reinstall tea_med")
    return root


def bundle_dir(name: str) -> Path:
    """The shipped bundle ``name`` (one of :data:`BUNDLES`)."""
    if name not in BUNDLES:
        raise ValueError(f"unknown bundle {name!r}; tea_med ships {', '.join(BUNDLES)}")
    return bundles_root() / name


def copy_bundles(dest: str | Path, names: tuple[str, ...] = BUNDLES, overwrite: bool = False) -> list[Path]:
    """Copy the bundles ``names`` (configs, docs, licence; no weights) into ``dest/<name>`` and
    the metadata schema into ``dest/schema``. Refuses to replace an existing bundle folder
    unless ``overwrite``. Returns the bundle folders written."""
    dest = Path(dest)
    targets = [dest / n for n in names]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; choose another destination or pass --overwrite")
    dest.mkdir(parents=True, exist_ok=True)
    root = bundles_root()
    written = []
    for name, target in zip(names, targets, strict=True):
        source = bundle_dir(name)
        target.mkdir(exist_ok=True)
        for part in _SHIPPED:
            src = source / part
            if src.is_dir():
                shutil.copytree(
                    src,
                    target / part,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.pt", "*.ts", "*.onnx"),
                )
            elif src.is_file():
                shutil.copy2(src, target / part)
        written.append(target)
    shutil.copytree(root / "schema", dest / "schema", dirs_exist_ok=True)
    return written


def set_common_values(bundle: str | Path, values: dict[str, object]) -> Path:
    """Set top-level scalar keys of ``bundle/configs/common.yaml`` in place, keeping every comment
    (e.g. ``{"image_size": 64}`` for a bundle trained at 64 px). Each key must already be a
    top-level key of the file; values are written as YAML scalars."""
    import json
    import re

    path = Path(bundle) / "configs" / "common.yaml"
    text = path.read_text()
    for key, value in values.items():
        pattern = re.compile(rf"^({re.escape(key)}:[ \t]*)([^#\n]*?)([ \t]*(#.*)?)$", re.MULTILINE)
        if not pattern.search(text):
            raise KeyError(f"{path} has no top-level key {key!r}")
        scalar = json.dumps(value) if isinstance(value, str) else str(value)

        def replace(m: re.Match[str], scalar: str = scalar) -> str:
            return f"{m.group(1)}{scalar}{m.group(3)}"

        text = pattern.sub(replace, text, count=1)
    path.write_text(text)
    return path


__all__ = ["BUNDLES", "bundle_dir", "bundles_root", "copy_bundles", "set_common_values"]
