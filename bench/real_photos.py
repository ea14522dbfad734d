"""Real photos outside ../shared, through the whole pipeline (`maskwatch detect --json`).

Not a test: prints figures. The photos come from PyPI packages (fetched once with `pip download`
into .cache/, never committed, never installed): the insightface 0.7.3 source package's
`t1.jpg` (a group photo, 6 unmasked faces; MIT package) and scikit-image's astronaut (1 unmasked
face). The face boxes below were drawn by hand on the photos. No masked real photo outside
../shared is reachable offline, so this scores unmasked faces only: found (IoU >= 0.5 with the
hand-drawn box, matched by convert/evaluate/detector.py's scorer) and called `no_mask` (an alert would be
raised).

    python bench/real_photos.py [--config config.yaml] [--detector models/X.json ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import yaml

from convert.fetch import pip_download
from convert.evaluate.detector import match
from convert.errors import ConvertError

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "insightface-0.7.3"
PACKAGE = "insightface==0.7.3"
MEMBER = "insightface-0.7.3/insightface/data/images/t1.jpg"

Box = Tuple[float, float, float, float]
# Hand-drawn face boxes (x1, y1, x2, y2, px), forehead to chin, ear to ear as the annotators of
# scenes-ilc2021 draw them; every face is unmasked.
FACES: Dict[str, List[Box]] = {
    "t1.jpg": [(73, 286, 157, 389), (274, 163, 363, 271), (470, 285, 573, 412),
               (739, 347, 830, 460), (888, 70, 995, 200), (1137, 287, 1234, 405)],
    "astronaut.png": [(172, 62, 278, 180)],
}


def fetch(dest: Path = CACHE) -> Path:
    """t1.jpg from the insightface source package (pip download, no install), cached."""
    out = dest / "t1.jpg"
    if out.is_file():
        return out
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            archive = pip_download(PACKAGE, tmp, source=True)  # insightface 0.7.3 has no wheel
        except ConvertError as exc:
            raise SystemExit(f"error: {exc}") from None
        with tarfile.open(archive) as tar:
            f = tar.extractfile(MEMBER)
            if f is None:
                raise SystemExit(f"error: {MEMBER} not in {archive.name}")
            out.write_bytes(f.read())
    return out


def config_with(config: Path, out: Path, detector: Optional[Path] = None, classifier: Optional[Path] = None) -> Path:
    """``config`` with another detector and/or classifier sidecar, written to ``out``; every model
    path made absolute (the copy lives elsewhere)."""
    data = yaml.safe_load(config.read_text()) or {}
    for key, path in (("detector", detector), ("classifier", classifier)):
        section = data.setdefault(key, {})
        if path is not None:
            section["model"] = str(Path(path).resolve())
        elif "model" in section:
            section["model"] = str((config.parent / section["model"]).resolve())
    out.write_text(yaml.safe_dump(data))
    return out


def detect_json(config: Path, paths: Sequence[Path]) -> Dict[str, dict]:
    """`maskwatch detect --json` once over ``paths``: its JSON object per image path."""
    cmd = [sys.executable, "-m", "agent.cli", "detect", "--json", "--config", str(config), *map(str, paths)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[:6])} ... exited {res.returncode}: {res.stderr.strip()[-400:]}")
    return {json.loads(line)["image"]: json.loads(line) for line in res.stdout.splitlines() if line.strip()}


def score(config: Path, images: Dict[str, Path]) -> Dict[str, object]:
    """Run `maskwatch detect --json` once over the photos and match its faces to FACES."""
    by_path = detect_json(config, list(images.values()))
    found = alerted = extra = 0
    for name, path in images.items():
        faces = by_path[str(path)]["faces"]
        boxes = np.array([f["box"] for f in faces], np.float64).reshape(-1, 4)
        order, matched = match(boxes, np.array([f["face_score"] for f in faces]), np.array(FACES[name], np.float64))
        hits = [faces[i] for i, j in zip(order, matched) if j >= 0]
        found += len(hits)
        alerted += sum(f["label"] == "no_mask" for f in hits)
        extra += len(faces) - len(hits)
    n = sum(len(v) for v in FACES.values())
    return {"faces": n, "found": found, "called_no_mask": alerted, "other_detections": extra}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=REPO / "config.yaml")
    p.add_argument("--detector", action="append", default=[], help="detector sidecar(s) to compare (default: the config's)")
    a = p.parse_args(argv)
    from agent.tools.demo import astronaut_bgr  # noqa: PLC0415 - scikit-image is the demo extra

    with tempfile.TemporaryDirectory() as tmp:
        astro = Path(tmp) / "astronaut.png"
        cv2.imwrite(str(astro), astronaut_bgr())
        images = {"t1.jpg": fetch(), "astronaut.png": astro}
        rows = []
        for det in a.detector or [None]:
            cfg = a.config if det is None else config_with(a.config, Path(tmp) / f"config-{len(rows)}.yaml", detector=det)
            r = score(cfg, images)
            rows.append((det or "config", r))
    print("| detector | unmasked faces | found (IoU >= 0.5) | called no_mask | other detections |")
    print("|---|---|---|---|---|")
    for det, r in rows:
        print(f"| {det} | {r['faces']} | {r['found']} ({100 * r['found'] / r['faces']:.0f} %) |"
              f" {r['called_no_mask']} ({100 * r['called_no_mask'] / r['faces']:.0f} %) | {r['other_detections']} |")
    print("photos: insightface 0.7.3 t1.jpg (6 faces), scikit-image astronaut (1 face); boxes drawn by hand;"
          " no masked real photo outside ../shared is reachable offline (bench/masked_photos.py pastes masks on these)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
