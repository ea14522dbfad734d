"""What `detector.roi_zoom` buys: recall of faces inside a region of interest when the detector
looks at that region (plus its margin) instead of the whole frame.

Not a test: prints figures. On the `val` split of ../shared/datasets/scenes-ilc2021, for each roi,
the faces whose centre lies inside it are scored with convert/detector_eval.py's scorer (IoU >= 0.5,
greedy by score; the agent's own FaceDetector with the config's detector, no size filter), at the
detector's default threshold, with `roi_zoom` off and on.

    python bench/roi_zoom.py [--config config.yaml] [--data-root ../shared/datasets] [--roi X1 Y1 X2 Y2 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import List, Sequence

import cv2
import numpy as np

from agent.config import load
from agent.detect import FaceDetector
from convert import detector_eval as E
from convert.detector_data import Scene, read_scenes

ROIS = ([0.2, 0.2, 0.8, 0.8], [0.3, 0.1, 0.7, 0.9])


def score(detector: FaceDetector, scenes: Sequence[Scene], images: Sequence[np.ndarray]) -> List[E.ImageResult]:
    """Detections matched to the annotated faces centred inside the detector's roi."""
    x1, y1, x2, y2 = detector.cfg.roi
    results = []
    for s, image in zip(scenes, images):
        c = (s.boxes[:, :2] + s.boxes[:, 2:]) / 2
        inside = (c[:, 0] >= x1 * s.width) & (c[:, 0] <= x2 * s.width) & (c[:, 1] >= y1 * s.height) & (c[:, 1] <= y2 * s.height)
        gt = s.boxes[inside].astype(np.float64)
        faces = detector.detect(image)
        boxes = np.array([f.box for f in faces], np.float64).reshape(-1, 4)
        scores = np.array([f.face_score for f in faces], np.float64)
        kps = np.array([f.keypoints for f in faces], np.float32).reshape(len(faces), len(detector.keypoint_names) or 6, 2)
        order, matched = E.match(boxes, scores, gt)
        results.append(E.ImageResult(scores[order], matched, kps[order], boxes[order],
                                     tuple(lab for lab, k in zip(s.labels, inside) if k), gt[:, 3] - gt[:, 1], gt[:, 2] - gt[:, 0]))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--data-root", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--roi", type=float, nargs=4, action="append", metavar=("X1", "Y1", "X2", "Y2"),
                    help=f"roi to score (repeat; default {' and '.join(map(str, ROIS))})")
    a = ap.parse_args(argv)
    cfg = load(a.config)
    scenes = read_scenes(a.data_root, "val")
    images = [cv2.imread(str(s.path)) for s in scenes]
    print(f"val: {len(scenes)} images; detector {cfg.detector.model}; faces >= {E.MIN_HEIGHT:.0f} px centred in the roi")
    for roi in a.roi or ROIS:
        for zoom in (False, True):
            det_cfg = dataclasses.replace(cfg.detector, roi=list(roi), roi_zoom=zoom, min_face_px=0.0)
            detector = FaceDetector(det_cfg, num_threads=2)
            m = E.metrics_at(score(detector, scenes, images), detector.min_score)
            per = " ".join(f"{k} {v['found']}/{v['faces']} ({v['recall'] * 100:.1f} %)" for k, v in m["recall_ge40px"].items())
            print(f"roi {list(roi)} {'roi_zoom' if zoom else 'whole frame'}: {per}; all sizes "
                  f"{m['recall_all_sizes']['all']['recall'] * 100:.1f} %; false detections / image {m['false_per_image']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
