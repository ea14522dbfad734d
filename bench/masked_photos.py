"""Real photos outside ../shared with masks pasted on, through the whole pipeline (`maskwatch detect --json`).

Not a test: prints figures (and, with --gallery, a picture). No masked real photo outside
../shared is reachable offline, so bench/real_photos.py scores unmasked faces only. This puts
MaskTheFace's frontal templates (../shared/datasets/mask-templates, MIT) on those same faces
(insightface 0.7.3's t1.jpg, 6 faces; scikit-image's astronaut, 1 face; hand-drawn boxes from
bench/real_photos.py) at the three placements the classifier must tell apart: over nose and mouth
(`mask`), lowered under the nose and pulled onto the chin (`incorrect_mask`), each template on
every face, at the photos' own size and at half of it (faces ~50-65 px, a doorway camera's
distance). Mask anchors come from the original BlazeFace's keypoints (models/face_detector.json;
face_detector_door.json for faces it misses),
placed as convert.data.masks.paste_mask places the classifier's synthetic masks: synthetic
masks, so read the figures apart from real ones. For each placement it prints faces found
(IoU >= 0.5 with the hand-drawn box), the labels given, and what raises an alert
(config.yaml alert.labels: no_mask, incorrect_mask).

    python bench/masked_photos.py [--config config.yaml] [--gallery models/figures/classifier_probes.jpg]

The gallery shows the astronaut (public domain) only: the face as the pipeline found it, with the
label it gave, green when right and red when wrong.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from real_photos import FACES, config_with, detect_json, fetch  # noqa: E402  (a sibling script: with tests/ on sys.path, tests/bench is the package "bench")
from agent.tools.scoring import match_greedy  # noqa: E402
from convert.data.masks import MaskTemplate, load_mask_templates, paste_mask  # noqa: E402
from convert.evaluate.detector import make_detector  # noqa: E402
from convert.paths import DEFAULT_DATA_ROOT  # noqa: E402

PLACEMENTS = {"none": "no_mask", "correct": "mask", "under_nose": "incorrect_mask", "chin": "incorrect_mask"}
SCALES = (1.0, 0.5)


def face_keypoints(image: np.ndarray, boxes: Sequence[Tuple[float, ...]], sidecars: Sequence[Path]) -> List[Optional[np.ndarray]]:
    """Keypoints of each hand-drawn face from the first detector of ``sidecars`` that finds it (None: none does)."""
    from agent.model import load_model  # noqa: PLC0415

    out: List[Optional[np.ndarray]] = [None] * len(boxes)
    for sidecar in sidecars:
        faces = make_detector(load_model(sidecar, kind="detector"), 0.3).detect(image)
        hits = match_greedy([(tuple(f.box), f.face_score) for f in faces], [tuple(b) for b in boxes])
        out = [k if k is not None or i is None else np.asarray(faces[i].keypoints, np.float64) for k, i in zip(out, hits)]
    return out


def variants(image: np.ndarray, kps: Sequence[Optional[np.ndarray]], templates: Sequence[MaskTemplate],
             seed: int) -> List[Tuple[str, str, np.ndarray]]:
    """(placement, template, image): the photo as it is, then each template at each placement on every face."""
    out = [("none", "-", image)]
    for placement in ("correct", "under_nose", "chin"):
        for t in templates:
            rng = np.random.default_rng(seed)
            img = image
            for k in kps:
                if k is not None:
                    img = paste_mask(img, k, t, placement, rng)
            out.append((placement, t.name, img))
    return out


def matched_labels(result: dict, boxes: np.ndarray) -> List[Optional[dict]]:
    """The pipeline's face for each hand-drawn box (None: missed)."""
    faces = result["faces"]
    hits = match_greedy([(tuple(f["box"]), f["face_score"]) for f in faces], [tuple(b) for b in boxes])
    return [None if i is None else faces[i] for i in hits]


def tile(image: np.ndarray, box: Sequence[float], face: Optional[dict], expected: str, caption: str, size: int = 112) -> np.ndarray:
    """The face region with the label the pipeline gave: green border when ``expected``, red otherwise."""
    x1, y1, x2, y2 = box
    cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * 1.35
    h, w = image.shape[:2]
    a, b = int(max(0, cx - s / 2)), int(max(0, cy - s / 2))
    crop = cv2.resize(image[b: int(min(h, cy + s / 2)), a: int(min(w, cx + s / 2))], (size, size), interpolation=cv2.INTER_AREA)
    label = "missed" if face is None else f"{face['label']} {face['score']:.2f}"
    ok = face is not None and face["label"] == expected
    out = cv2.copyMakeBorder(crop, 4, 36, 4, 4, cv2.BORDER_CONSTANT, value=(60, 170, 60) if ok else (40, 40, 220))
    for row, text in enumerate((caption, label)):
        cv2.putText(out, text, (6, size + 18 + 16 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=REPO / "config.yaml")
    p.add_argument("--classifier", type=Path, default=None, help="another classifier sidecar (default: the config's)")
    p.add_argument("--keypoints-from", type=Path, action="append", default=None,
                   help="detector sidecar(s) whose keypoints place the masks, first match wins (default: the original"
                        " BlazeFace, then the fine-tuned face_detector_door for faces it misses)")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--gallery", type=Path, default=None, help="write the astronaut's tiles here (.jpg or .png)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    a.keypoints_from = a.keypoints_from or [REPO / "models" / "face_detector.json", REPO / "models" / "face_detector_door.json"]
    from agent.tools.demo import astronaut_bgr  # noqa: PLC0415 - scikit-image is the demo extra

    templates = load_mask_templates(a.data_root)
    photos = {"t1.jpg": cv2.imread(str(fetch())), "astronaut.png": astronaut_bgr()}
    rows: Dict[Tuple[str, float], Counter] = {}
    tiles: List[Tuple[str, np.ndarray]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = a.config.resolve() if a.classifier is None else config_with(a.config, Path(tmp) / "config.yaml", classifier=a.classifier)
        alert = set((yaml.safe_load(config.read_text()) or {}).get("alert", {}).get("labels", ["no_mask", "incorrect_mask"]))
        jobs = []  # (path, photo name, placement, template, scale, image)
        for name, image in photos.items():
            kps = face_keypoints(image, FACES[name], a.keypoints_from)
            missing = [i for i, k in enumerate(kps) if k is None]
            if missing:
                print(f"note: {name}: no keypoints for faces {missing} (left unmasked, not scored)", file=sys.stderr)
            for placement, tname, img in variants(image, kps, templates, a.seed):
                for scale in SCALES:
                    im = img if scale == 1.0 else cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                    path = Path(tmp) / f"{Path(name).stem}_{placement}_{tname}_{scale:g}.png"
                    cv2.imwrite(str(path), im)
                    jobs.append((path, name, placement, tname, scale, im, missing))
        results = detect_json(config, [j[0] for j in jobs])
    for path, name, placement, tname, scale, im, missing in jobs:
        boxes = np.array(FACES[name], np.float64) * scale
        for i, face in enumerate(matched_labels(results[str(path)], boxes)):
            if i in missing and placement != "none":
                continue
            c = rows.setdefault((placement, scale), Counter())
            c["faces"] += 1
            c["missed" if face is None else face["label"]] += 1
            if name == "astronaut.png" and scale == 1.0:
                tiles.append((placement, tile(im, boxes[i], face, PLACEMENTS[placement], f"{placement} {tname}")))
    print("| placement (expected label) | photo scale | faces | found | mask | incorrect_mask | no_mask | raises an alert |")
    print("|---|---|---|---|---|---|---|---|")
    for (placement, scale), c in rows.items():
        n = c["faces"]
        found = n - c["missed"]
        alerts = sum(c[label] for label in alert)
        pct = lambda k: f"{k} ({100 * k / max(1, n):.0f} %)"  # noqa: E731
        print(f"| {placement} ({PLACEMENTS[placement]}) | {scale:g} | {n} | {pct(found)} | {pct(c['mask'])} |"
              f" {pct(c['incorrect_mask'])} | {pct(c['no_mask'])} | {pct(alerts)} |")
    print(f"photos: insightface 0.7.3 t1.jpg (6 faces) and scikit-image's astronaut (1 face), hand-drawn boxes;"
          f" masks: {len(templates)} MaskTheFace templates ({', '.join(t.name for t in templates)}) pasted from"
          f" the keypoints of {' then '.join(k.name for k in a.keypoints_from)}; config {a.config}"
          + (f", classifier {a.classifier}" if a.classifier else ""))
    if a.gallery and tiles:
        order = ["none", "correct", "under_nose", "chin"]
        grid_rows = []
        width = max(sum(1 for p, _ in tiles if p == r) for r in order)
        for r in order:
            row = [t for p, t in tiles if p == r]
            row += [np.full_like(row[0], 255)] * (width - len(row))
            grid_rows.append(np.hstack(row))
        a.gallery.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(a.gallery), np.vstack(grid_rows), [cv2.IMWRITE_JPEG_QUALITY, 88])
        print(f"wrote {a.gallery}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
