"""The one exception type for bad input data."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Input data that tea_med refuses to use: the message names the file and the reason.

    Attributes:
        path: the offending file (``None`` when the problem is not tied to one file).
        reason: a short human-readable explanation, without the path.
    """

    def __init__(self, path: str | os.PathLike[str] | None, reason: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)

    def __reduce__(self) -> tuple[type[DataError], tuple[str | None, str]]:
        # keep the two-argument constructor picklable (DataLoader workers re-raise in the parent)
        return (type(self), (self.path, self.reason))
