"""Errors caused by user input.

The command line prints the message of a :class:`UserError` as one line on stderr and exits
with status 2, without a traceback. Messages name the thing that is wrong and how to fix it.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input (unknown id, malformed file, mismatched run directory, missing weights)."""


class UnknownIdError(UserError, KeyError):
    """An id that no registry entry has; the message carries a "did you mean" hint."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""
