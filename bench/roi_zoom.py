"""What `detector.roi_zoom` buys: recall of faces inside a region of interest when the detector
looks at that region (plus its margin) instead of the whole frame.

Not a test: prints figures. On the `val` split of ../shared/datasets/scenes-ilc2021, for each roi,
the faces whose centre lies inside it are scored with convert/evaluate/detector.py's scorer (IoU >= 0.5,
greedy by score; the agent's own FaceDetector with the config's detector, no size filter), at the
detector's default threshold, with `roi_zoom` off and on.

    python bench/roi_zoom.py [--config config.yaml] [--data-root ../shared/datasets] [--roi X1 Y1 X2 Y2 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from agent.config import load
from agent.pipeline.detect import FaceDetector, centred_in_roi
from convert.evaluate import detector as E
from convert.data.detector import Scene, read_scenes

ROIS = ([0.2, 0.2, 0.8, 0.8], [0.3, 0.1, 0.7, 0.9])


def inside(scene: Scene, roi: Sequence[float]) -> Scene:
    """The scene with only its faces centred inside ``roi`` (fractions of the image)."""
    c = (scene.boxes[:, :2] + scene.boxes[:, 2:]) / 2
    keep = centred_in_roi(c[:, 0], c[:, 1], roi, scene.width, scene.height)
    return dataclasses.replace(scene, boxes=scene.boxes[keep], labels=tuple(np.asarray(scene.labels, object)[keep]))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--data-root", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--roi", type=float, nargs=4, action="append", metavar=("X1", "Y1", "X2", "Y2"),
                    help=f"roi to score (repeat; default {' and '.join(map(str, ROIS))})")
    a = ap.parse_args(argv)
    cfg = load(a.config)
    scenes = read_scenes(a.data_root, "val")
    images = {s.image: cv2.imread(str(s.path)) for s in scenes}
    print(f"val: {len(scenes)} images; detector {cfg.detector.model}; faces >= {E.MIN_HEIGHT:.0f} px centred in the roi")
    for roi in a.roi or ROIS:
        for zoom in (False, True):
            det_cfg = dataclasses.replace(cfg.detector, roi=list(roi), roi_zoom=zoom, min_face_px=0.0)
            detector = FaceDetector(det_cfg, num_threads=2)
            results = E.run_detector(detector, [inside(s, roi) for s in scenes], lambda s: images[s.image])
            m = E.metrics_at(results, detector.min_score)
            per = " ".join(f"{k} {v['found']}/{v['faces']} ({v['recall'] * 100:.1f} %)" for k, v in m["recall_ge40px"].items())
            print(f"roi {list(roi)} {'roi_zoom' if zoom else 'whole frame'}: {per}; all sizes "
                  f"{m['recall_all_sizes']['all']['recall'] * 100:.1f} %; false detections / image {m['false_per_image']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
