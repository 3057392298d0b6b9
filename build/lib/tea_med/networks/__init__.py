"""LRP-ready networks, the lung segmenter, the teacher pipeline and the student.

Names are imported lazily (PEP 562, via ``lazy_loader``), so a workstation that runs only the
student imports neither the segmenter nor the teacher code.
"""

from __future__ import annotations

import lazy_loader

# The names and where each lives are listed once, in __init__.pyi (which type checkers read).
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
