"""Site crops: the labelled folders of a site folder (docs/site-data.md) that ``maskwatch collect``
wrote and ``maskwatch label`` sorted, read for fine-tuning; crops of one person (one track) stay on
one side of the holdout."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.tools.site import UNLABELED
from convert.data import classifier as cd
from convert.errors import ConvertError

Log = Callable[[str], None]
IGNORED_FOLDERS = (UNLABELED,)
# "<run>_t<track>_f<frame>.png" (agent.tools.collect): crops of one track are one person
_TRACK_NAME = re.compile(r"^(?P<track>.+_t\d+)_f\d+$")


@dataclass
class SiteCrops:
    """Labelled site crops, RGB uint8 at the model input size."""

    x: np.ndarray
    y: np.ndarray
    files: List[str]  # "<label>/<file name>", for messages only (never written to the outputs)
    groups: List[str]  # track key per crop: crops of one person share it
    skipped: List[str]  # unreadable crops (left where they are)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def counts(self, mask: Optional[np.ndarray] = None) -> Dict[str, int]:
        y = self.y if mask is None else self.y[mask]
        return {lab: int((y == i).sum()) for i, lab in enumerate(cd.LABELS)}


def track_key(file_name: str) -> str:
    """The person a crop belongs to: ``<run>_t<track>`` of agent.tools.collect's names, else the file stem."""
    stem = Path(file_name).stem
    m = _TRACK_NAME.match(stem)
    return m.group("track") if m else stem


def label_folders(folder: Path, labels: Sequence[str]) -> Iterator[Tuple[int, Path]]:
    """(label index, folder) of each label folder present; any other folder is an error."""
    if not folder.is_dir():
        raise ConvertError(f"{folder}: site data folder not found (made by `maskwatch collect --out DIR`)")
    unknown = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in labels
                     and p.name not in IGNORED_FOLDERS and not p.name.startswith("."))
    if unknown:
        raise ConvertError(
            f"{folder}: unknown label folder(s) {', '.join(unknown)}; expected only {', '.join(labels)} "
            f"(and {', '.join(IGNORED_FOLDERS)}, which is ignored): rename or move them out"
        )
    for i, lab in enumerate(labels):
        if (folder / lab).is_dir():
            yield i, folder / lab


@contextlib.contextmanager
def _opencv_quiet() -> Iterator[None]:
    """Silence OpenCV's own log while decoding: a broken PNG gets our one warning line, not its libpng chatter."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def read_site_crops(folder: Path, labels: Sequence[str], size: int, warn: Log) -> SiteCrops:
    """Every ``folder/<label>/*.png``, resized to ``size``; unreadable ones are warned about and skipped."""
    xs: List[np.ndarray] = []
    ys: List[int] = []
    files: List[str] = []
    skipped: List[str] = []
    for i, sub in label_folders(folder, labels):
        for p in sorted(sub.glob("*.png")):
            if p.name.startswith("."):
                continue
            with _opencv_quiet():
                bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is None or bgr.size == 0:
                warn(f"warning: {p}: not a readable PNG; skipped (left in place)")
                skipped.append(f"{sub.name}/{p.name}")
                continue
            if bgr.shape[0] != bgr.shape[1]:
                warn(f"warning: {p}: {bgr.shape[1]}x{bgr.shape[0]} is not square; stretched to {size}x{size}")
            small = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
            xs.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
            ys.append(i)
            files.append(f"{sub.name}/{p.name}")
    if not xs:
        bad = f" ({len(skipped)} unreadable)" if skipped else ""
        raise ConvertError(
            f"{folder}: no labelled crop{bad}: finetune reads {folder}/<label>/*.png for labels {', '.join(labels)}; "
            f"label crops first with `maskwatch label {folder}`"
        )
    x = np.stack(xs)
    return SiteCrops(x, np.asarray(ys, np.int64), files, [track_key(f) for f in files], skipped)


def check_collect_geometry(folder: Path, crop: Dict[str, Any], warn: Log) -> Optional[Dict[str, Any]]:
    """Warn when ``folder/collect.json`` says the crops were cut with another geometry than ``crop``."""
    path = folder / "collect.json"
    if not path.is_file():
        warn(f"warning: {path} not found: the crops' framing cannot be checked against the model's crop {crop}")
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warn(f"warning: {path}: not readable JSON ({exc}); crop framing not checked")
        return None
    got = meta.get("crop") if isinstance(meta, dict) else None
    if not isinstance(got, dict):
        warn(f"warning: {path} has no 'crop' geometry; crop framing not checked")
        return None
    diff = {k: (got.get(k), crop.get(k)) for k in ("scale", "align", "shift_y", "anchor", "anchor_side", "anchor_centre")
            if got.get(k) != crop.get(k)}
    if diff:
        warn(
            f"warning: {path}: crops were cut with " + ", ".join(f"{k}={a!r}" for k, (a, _) in diff.items())
            + " but the model's crop has " + ", ".join(f"{k}={b!r}" for k, (_, b) in diff.items())
            + ": the new model learns that framing while the agent cuts faces the model's way"
        )
    return got


def holdout_mask(groups: Sequence[str], fraction: float) -> np.ndarray:
    """True for crops kept aside: whole tracks, chosen by a hash of the track key (same split every run).

    With two or more tracks and 0 < fraction < 1, both sides get at least one track.
    """
    keys = sorted(set(groups))
    u = {k: int(hashlib.sha256(k.encode()).hexdigest()[:12], 16) / float(16 ** 12) for k in keys}
    held = {k for k in keys if u[k] < fraction}
    if 0 < fraction < 1 and len(keys) >= 2:
        if not held:
            held = {min(keys, key=u.get)}
        if held == set(keys):
            held.discard(max(keys, key=u.get))
    elif len(keys) < 2:
        held = set()
    return np.array([g in held for g in groups], bool)


__all__ = ["IGNORED_FOLDERS", "SiteCrops", "check_collect_geometry", "holdout_mask", "label_folders", "read_site_crops",
           "track_key"]
