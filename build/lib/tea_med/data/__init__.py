"""tea_med.data: X-ray loading, preprocessing, manifests and synthetic phantoms.

- Loading: :class:`LoadXray` / :class:`LoadXrayd` (DICOM, PNG, JPEG), :class:`LoadMask`
  (PNG, NIfTI); bad input raises :class:`DataError` naming the file and the reason.
- Preprocessing (docs/method.md, section 7): :func:`train_transforms`, :func:`eval_transforms`,
  :func:`test_transforms`, :func:`preprocess_transforms`, and the teacher's
  :class:`MaskBackgroundNoise`.
- Manifests: :func:`validate_manifest` (every problem at once), :func:`load_datalist`
  (``skip_bad`` quarantines into a report), :func:`xray_dataset`, :func:`split_by_patient`.
- Phantoms: :func:`generate_phantom`, :func:`iter_phantoms`, :func:`write_phantoms`.

Imports are lazy (PEP 562): ``tea_med.data.manifest`` works without loading torch or MONAI, so
``tea-med manifest validate`` starts quickly.
"""

from __future__ import annotations

import lazy_loader

# The names and where each lives are listed once, in __init__.pyi (which type checkers read).
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
