"""Errors meant for people: each names the input, the problem and what to do next.

The CLI maps :class:`UsageError` to exit code 2 and :class:`InvalidDataError` to exit code 1 and prints
the message on one line, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class CloudMRIError(Exception):
    """Base class of expected errors: bad input rather than a bug."""

    exit_code = 1

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class UsageError(CloudMRIError):
    """The command was asked for something impossible: missing file, wrong option, unknown format."""

    exit_code = 2


class InvalidDataError(CloudMRIError):
    """The input exists but its content is not valid MRI raw data of the expected kind."""

    exit_code = 1
