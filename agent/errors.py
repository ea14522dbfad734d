"""Exit codes and the command-line mistake every command may raise."""

from __future__ import annotations

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command-line mistake; exits 2 with the message."""


__all__ = ["EXIT_OK", "EXIT_SOME_FAILED", "EXIT_USAGE", "UsageError"]
