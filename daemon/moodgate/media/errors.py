"""The one error type the media room raises: a short machine reason and a readable message."""

from __future__ import annotations


class MediaError(Exception):
    """Media that cannot be handled safely: corrupt, truncated, too large, or not media at all."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # short, stable: "corrupt", "too-large", "not-an-image", ...

    def __str__(self) -> str:
        return f"{self.reason}: {self.args[0]}"
