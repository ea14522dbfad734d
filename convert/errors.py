"""The one error type convert/ raises for user-caused problems (bad file, bad data, bad flag).

The CLI turns it into one clear message and a non-zero exit, never a traceback.
"""

from __future__ import annotations


class ConvertError(Exception):
    """A user-caused conversion error; the message names the file, the key and the fix."""
