"""Exceptions raised for bad user input. The CLI turns them into one line on stderr and exit code 2."""

from __future__ import annotations

__all__ = ["CheckpointError", "FastSAMError", "ImageError", "ImageTooLargeError", "UnsafeCheckpointError"]


class FastSAMError(ValueError):
    """Base class of the errors this package raises for bad input (files, images, options)."""


class CheckpointError(FastSAMError):
    """A weight file is missing, unreadable, truncated or does not fit the network."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint references code that is not on the allow-list; nothing was executed."""


class ImageError(FastSAMError):
    """An image is missing, unreadable, corrupt or of an unsupported kind."""


class ImageTooLargeError(ImageError):
    """An image has more pixels than the caller's limit (checked from the header, before decoding).

    Attributes:
        size: (width, height) the file declares.
        limit: the pixel limit it exceeds.
    """

    def __init__(self, message: str, size: tuple[int, int], limit: int) -> None:
        super().__init__(message)
        self.size, self.limit = size, limit
