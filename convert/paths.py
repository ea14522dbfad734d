"""Where convert/ finds the checkout and the data it reads, in one place.

The data lives outside the package: by default in ``shared/`` beside the checkout
(``../shared/datasets``, ``../shared/models``), or wherever ``$MASKWATCH_SHARED_DIR`` says; every
command that reads it takes ``--data-root`` (or its own path option) over this default.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_ROOT = Path(os.environ.get("MASKWATCH_SHARED_DIR") or REPO_ROOT.parent / "shared")
DEFAULT_DATA_ROOT = SHARED_ROOT / "datasets"

__all__ = ["DEFAULT_DATA_ROOT", "REPO_ROOT", "SHARED_ROOT"]
