"""``maskwatch evaluate``: whole-pipeline metrics (detector + classifier) against annotated face boxes.

Annotations are a boxes CSV, Pascal VOC, YOLO or COCO, read by :mod:`agent.tools.annotations` (labels
through its built-in synonyms and ``--label-map``). Only images that appear in the annotations AND among the IMAGES given are
scored (matched by file name); ``--split NAME`` further keeps the images of one split of a
``image,...,split`` CSV (``--split-csv``, default ``images.csv`` beside the boxes file). Each image goes
through the same :class:`agent.tools.detect.Detector` as ``maskwatch detect``; detections are matched to
annotated faces greedily by detector score at IoU >= ``--iou`` (0.5, the usual rule), one detection per
face. A lower ``--iou`` scores against annotations drawn to another box convention than the
detector's (e.g. a turned face boxed around its visible part): what it adds is faces found whose
box is drawn otherwise, not faces missed.

``--classifier SIDECAR`` (repeatable) compares classifiers: each image is detected once (the
config's detector) and classified by every given model; the tables are printed side by side, one
column group per model (named by its sidecar's name and version), and all are saved in ``--json``.

``--stream SECONDS`` scores people instead of photos: each photo becomes a short clip run through
the tracker and alert policy, as deployed (:mod:`agent.tools.evaluate_stream`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from agent.tools.annotations import LABELS, AnnotationError, Boxes, LabelMap, load
from agent.tools.scoring import MATCH_IOU, UNMASKED, EvaluateError, pct, read_annotated_photo, score_image


def _group(faces: List[Dict[str, Any]]) -> Dict[str, Any]:
    rows: Dict[str, Any] = {}
    for label in LABELS + ("all",):
        sel = [f for f in faces if label == "all" or f["label"] == label]
        found = [f for f in sel if f["predicted"] is not None]
        correct = sum(f["predicted"] == f["label"] for f in found)
        rows[label] = {"faces": len(sel), "found": len(found), "found_pct": pct(len(found), len(sel)),
                       "correct": correct, "correct_pct": pct(correct, len(found))}
    unmasked = [f for f in faces if f["label"] in UNMASKED]
    masked = [f for f in faces if f["label"] == "mask"]
    caught = sum(f["predicted"] in UNMASKED for f in unmasked)
    alerted = sum(f["predicted"] in UNMASKED for f in masked)
    rows["unmasked_caught"] = {"count": caught, "of": len(unmasked), "pct": pct(caught, len(unmasked))}
    rows["masked_falsely_alerted"] = {"count": alerted, "of": len(masked), "pct": pct(alerted, len(masked))}
    # masks worn under the nose or on the chin alert as incorrect_mask or no_mask alike; also of those found
    worn_badly = [f for f in faces if f["label"] == "incorrect_mask"]
    bad_alerted = sum(f["predicted"] in UNMASKED for f in worn_badly)
    bad_found = sum(f["predicted"] is not None for f in worn_badly)
    rows["incorrect_alerted"] = {"count": bad_alerted, "of": len(worn_badly), "pct": pct(bad_alerted, len(worn_badly)),
                                 "found": bad_found, "found_pct": pct(bad_alerted, bad_found)}
    return rows


def summarize(per_image: Dict[str, Dict[str, Any]], min_size: float = 40, iou_thr: float = MATCH_IOU) -> Dict[str, Any]:
    """Metrics over :func:`score_image` outcomes, for all faces and for faces >= ``min_size`` px tall.

    ``correct_pct`` is of the found faces; the confusion matrix (true label -> predicted label or
    ``missed``) covers all faces; spurious detections are unmatched detections of any size.
    """
    faces = [f for r in per_image.values() for f in r["faces"]]
    spurious = sum(r["spurious"] for r in per_image.values())
    spurious_unmasked = sum(r.get("spurious_unmasked", 0) for r in per_image.values())
    confusion = {t: {p: 0 for p in LABELS + ("missed",)} for t in LABELS}
    for f in faces:
        confusion[f["label"]][f["predicted"] or "missed"] += 1
    return {
        "images": len(per_image), "iou": iou_thr, "min_size": min_size,
        "all": _group(faces),
        "min_size_faces": _group([f for f in faces if f["height"] >= min_size]),
        "spurious": spurious, "spurious_per_image": round(spurious / len(per_image), 3) if per_image else None,
        "spurious_unmasked": spurious_unmasked,
        "confusion": confusion,
    }


def format_table(summary: Dict[str, Any]) -> str:
    """The summary as a plain-text table."""
    def cell(v: Optional[float]) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = [f"{summary['images']} images, IoU >= {summary['iou']}"]
    for key, title in (("all", "all faces"), ("min_size_faces", f"faces >= {summary['min_size']:g} px tall")):
        g = summary[key]
        lines += ["", title, f"  {'label':<16}{'faces':>7}{'found':>7}{'found %':>9}{'correct %':>11}"]
        for label in LABELS + ("all",):
            r = g[label]
            lines.append(f"  {label:<16}{r['faces']:>7}{r['found']:>7}{cell(r['found_pct']):>9}{cell(r['correct_pct']):>11}")
        for name, what in (("unmasked_caught", "unmasked caught"), ("masked_falsely_alerted", "masked falsely alerted")):
            r = g[name]
            lines.append(f"  {what}: {r['count']}/{r['of']} ({cell(r['pct'])} %)")
        r = g["incorrect_alerted"]
        lines.append(f"  incorrectly worn alerted: {r['count']}/{r['of']} ({cell(r['pct'])} %; {cell(r['found_pct'])} % of {r['found']} found)")
    lines += ["", f"spurious detections: {summary['spurious']} ({summary['spurious_per_image']} per image),"
              f" {summary.get('spurious_unmasked', 0)} of them called unmasked (would alert)",
              "", "confusion (rows: true, columns: predicted)",
              "  " + f"{'':<16}" + "".join(f"{p:>16}" for p in LABELS + ("missed",))]
    for t, row in summary["confusion"].items():
        lines.append(f"  {t:<16}" + "".join(f"{v:>16}" for v in row.values()))
    return "\n".join(lines)


def save_confusion_png(summary: Dict[str, Any], path: str) -> None:
    """The confusion matrix as a PNG (needs matplotlib, imported only here)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EvaluateError("--confusion-png needs matplotlib (pip install matplotlib)") from None
    cols = list(LABELS) + ["missed"]
    data = [[summary["confusion"][t][p] for p in cols] for t in LABELS]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center")
    ax.set_title(f"{summary['images']} images, IoU >= {summary['iou']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- command ----------------------------------------------------------------------------------


def load_split(path: str, split: str) -> List[str]:
    """File names of the images whose ``split`` column is ``split`` in a CSV with ``image`` and ``split``."""
    if not os.path.isfile(path):
        raise EvaluateError(f"{path}: split file not found (give --split-csv)")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = csv.DictReader(fh)
        if not rows.fieldnames or not {"image", "split"} <= set(rows.fieldnames):
            raise EvaluateError(f"{path}:1: needs 'image' and 'split' columns")
        names = [r["image"] for r in rows if r["split"] == split]
    if not names:
        raise EvaluateError(f"{path}: no image in split {split!r}")
    return names


def add_arguments(sp: argparse.ArgumentParser) -> None:
    """The ``evaluate`` subcommand's options (``--config`` is added by the CLI)."""
    sp.add_argument("--boxes", required=True, metavar="PATH",
                    help="annotations: an image,xmin,ymin,xmax,ymax,label .csv, a Pascal VOC folder of .xml, a YOLO"
                         " data.yaml or labels/ folder (images/ beside it), or a COCO .json")
    sp.add_argument("--label-map", action="append", default=[], metavar="FROM=TO,...",
                    help="name the annotations' labels: TO is mask, incorrect_mask or no_mask (e.g."
                         " helmet_mask=mask); ignore=LABEL skips those boxes. Common spellings (with_mask,"
                         " without_mask, mask_weared_incorrect, ...) need no map. May repeat")
    sp.add_argument("--min-size", type=float, default=40.0, metavar="PX",
                    help="also report faces at least this many pixels tall (default 40)")
    sp.add_argument("--iou", type=float, default=MATCH_IOU, metavar="X",
                    help="least overlap (IoU) of a detection with an annotated face to count it found (default"
                         f" {MATCH_IOU}; lower for annotations boxed otherwise than the detector)")
    sp.add_argument("--boxes-on", choices=("upright", "stored"), default="upright",
                    help="the photos the boxes were drawn on: upright (default) by their EXIF orientation, as viewers,"
                         " CVAT, Roboflow and Ultralytics show them; stored: their stored pixels (labelImg ignores"
                         " the tag). Photos are scored upright either way; boxes that fit only the other frame name the fix")
    sp.add_argument("--json", metavar="OUT", help="save the metrics and per-face outcomes as JSON")
    sp.add_argument("--confusion-png", metavar="OUT", help="save the confusion matrix as a PNG (needs matplotlib)")
    sp.add_argument("--force", action="store_true", help="overwrite existing --json / --confusion-png files")
    sp.add_argument("--split", metavar="NAME", help="score only the images of this split (see --split-csv)")
    sp.add_argument("--split-csv", metavar="FILE",
                    help="image,...,split CSV naming each image's split (default: images.csv beside --boxes)")
    sp.add_argument("--classifier", action="append", dest="classifiers", metavar="SIDECAR",
                    help="compare classifiers: score the same detections with each of these sidecars (repeat the"
                         " option); tables side by side, all saved in --json")
    sp.add_argument("--stream", type=float, metavar="SECONDS",
                    help="score as deployed: each photo becomes a clip of this many seconds at source.fps (noise,"
                         " jitter, exposure drift) run through the tracker and alert policy; per-person alerts")
    sp.add_argument("--seed", type=int, default=0, help="with --stream: seed of the clips' noise (default 0)")
    sp.add_argument("paths", nargs="+", metavar="IMAGES",
                    help="image files, folders or globs; only those named in --boxes are scored")


def _annotated_images(args: argparse.Namespace, boxes: Boxes) -> Dict[str, str]:
    """File name -> path of each given image that is annotated in ``boxes``."""
    from agent.tools.detect import inputs  # late: the detect tool loads OpenCV and the model runtime

    images: Dict[str, str] = {}
    for path, kind in inputs(args.paths):
        if kind in ("missing", "empty-folder"):
            raise EvaluateError(f"{path}: " + ("no such file" if kind == "missing" else "no image in folder"))
        if kind == "video" or not os.path.isfile(path):
            raise EvaluateError(f"{path}: " + ("videos cannot be evaluated" if kind == "video" else "no such file"))
        if os.path.basename(path) in boxes:
            images.setdefault(os.path.basename(path), path)
    if not images:
        raise EvaluateError(f"{args.boxes}: none of the given images is annotated there")
    return images


def run(args: argparse.Namespace) -> int:
    """Run detect + classify on each annotated image and print the metrics table."""
    from agent.config import load_config
    from agent.tools.detect import Detector, face_json

    try:
        for out in (args.json, args.confusion_png):
            if out and os.path.exists(out) and not args.force:
                raise EvaluateError(f"{out}: already exists (use --force to overwrite)")
        # Options that conflict first: installing matplotlib would not mend them.
        if args.stream is not None and (args.confusion_png or getattr(args, "classifiers", None)):
            raise EvaluateError("--stream scores people, one model pair: leave out --confusion-png and --classifier")
        if not 0 < args.iou <= 1:
            raise EvaluateError(f"--iou {args.iou:g}: give the least overlap of a detection with an annotated face,"
                                f" more than 0 and at most 1 ({MATCH_IOU} is the usual rule)")
        if not 0 <= args.min_size < 1e5:  # also refuses nan
            raise EvaluateError(f"--min-size {args.min_size:g}: give the face height in pixels from which the second"
                                " block counts faces, 0 or more (40 is the usual line)")
        if args.stream is not None and not 0 < args.stream <= 60:
            raise EvaluateError(f"--stream {args.stream:g}: give the seconds of clip per photo, more than 0 and at"
                                f" most 60 (a few seconds is what a person spends in view)")
        if args.confusion_png and getattr(args, "classifiers", None):
            raise EvaluateError("--confusion-png draws one model: leave it out with --classifier (the confusion"
                                " matrices are printed and saved in --json)")
        if args.confusion_png and importlib.util.find_spec("matplotlib") is None:
            raise EvaluateError("--confusion-png needs matplotlib (pip install matplotlib)")
        boxes = load(args.boxes, LabelMap.parse(args.label_map))
        if args.split:
            keep = set(load_split(args.split_csv or str(Path(args.boxes).parent / "images.csv"), args.split))
            boxes = {k: v for k, v in boxes.items() if k in keep}
        images = _annotated_images(args, boxes)
        cfg = load_config(args.config)
        if args.stream is not None:
            from agent.tools.evaluate_stream import cmd_stream  # late: it imports this module

            return cmd_stream(args, cfg, boxes, images)
        if getattr(args, "classifiers", None):
            return _compare(args, cfg, boxes, images)
        run = Detector(cfg)
        per_image: Dict[str, Dict[str, Any]] = {}
        for name, path in sorted(images.items()):
            image, gts = read_annotated_photo(path, cfg, boxes[name], args.boxes_on)
            faces, _ = run(image)
            h, w = image.shape[:2]
            per_image[name] = score_image([face_json(f, w, h) for f in faces], gts, args.iou)
        summary = summarize(per_image, args.min_size, args.iou)
        print(format_table(summary))
        if args.confusion_png:
            save_confusion_png(summary, args.confusion_png)
        if args.json:
            Path(args.json).write_text(json.dumps({**summary, "per_image": per_image}, indent=1) + "\n")
    except (EvaluateError, AnnotationError) as exc:  # reported here, not via cli.UsageError, so `python -m agent.cli` works too
        print(f"maskwatch: {exc}", file=sys.stderr)
        return 2
    return 0


# --- comparing classifiers --------------------------------------------------------------------


def _compare(args: argparse.Namespace, cfg: Any, boxes: Boxes, images: Dict[str, str]) -> int:
    """Detect each image once, classify it with every ``--classifier``, print and save the tables side by side."""
    from agent.pipeline.classify import MaskClassifier
    from agent.pipeline.detect import FaceDetector
    from agent.pipeline.loop import set_image_threads
    from agent.tools.detect import face_json
    from agent.variants import choose_model

    threads = cfg.runtime.num_threads
    set_image_threads(threads)
    # the detector runs as the agent would (runtime.precision); each --classifier file as named
    detector = FaceDetector(cfg.detector, threads, model=choose_model(cfg.detector.model, "detector", threads,
                                                                      cfg.runtime.precision).model)
    # the config's thresholds / batching apply to every model; only the sidecar changes
    classifiers = [MaskClassifier(dataclasses.replace(cfg.classifier, model=os.path.abspath(p)), threads)
                   for p in args.classifiers]
    per_model: List[Dict[str, Dict[str, Any]]] = [{} for _ in classifiers]
    for name, path in sorted(images.items()):
        image, gts = read_annotated_photo(path, cfg, boxes[name], args.boxes_on)
        found = detector.detect(image)
        h, w = image.shape[:2]
        for k, clf in enumerate(classifiers):
            faces = clf.classify(image, found)
            per_model[k][name] = score_image([face_json(f, w, h) for f in faces], gts, args.iou)
    models = [{"sidecar": p, "name": c.model.name, "version": c.model.version,
               **summarize(per_image, args.min_size, args.iou), "per_image": per_image}
              for p, c, per_image in zip(args.classifiers, classifiers, per_model)]
    print(format_compare(models))
    if args.json:
        Path(args.json).write_text(json.dumps({"images": len(images), "detector": cfg.detector.model,
                                               "models": models}, indent=1) + "\n")
    return 0


def format_compare(models: Sequence[Dict[str, Any]]) -> str:
    """Summaries of several classifiers (same images, same detections) as side-by-side tables.

    ``models``: each a :func:`summarize` result plus ``name`` and ``version``; one column group each.
    """
    def cell(v: Optional[float]) -> str:
        return "-" if v is None else f"{v:.1f}"

    first = models[0]
    widths = [max(27, len(m["name"]), len(m["version"])) + 3 for m in models]
    pad = 25  # label column + faces column

    def row(left: str, cells: Sequence[str]) -> str:
        return (left.ljust(pad) + "".join(c.rjust(w) for c, w in zip(cells, widths))).rstrip()

    lines = [f"{first['images']} images, IoU >= {first['iou']}; same detections, one column group per classifier",
             row("", [m["name"] for m in models]), row("", [m["version"] for m in models])]
    for key, title in (("all", "all faces"), ("min_size_faces", f"faces >= {first['min_size']:g} px tall")):
        lines += ["", title, row(f"  {'label':<16}{'faces':>7}", [f"{'found':>7}{'found %':>9}{'correct %':>11}"] * len(models))]
        for label in LABELS + ("all",):
            rs = [m[key][label] for m in models]
            lines.append(row(f"  {label:<16}{rs[0]['faces']:>7}",
                             [f"{r['found']:>7}{cell(r['found_pct']):>9}{cell(r['correct_pct']):>11}" for r in rs]))
        for name, what in (("unmasked_caught", "unmasked caught"), ("masked_falsely_alerted", "masked falsely alerted")):
            lines.append(row(f"  {what}", [f"{m[key][name]['count']}/{m[key][name]['of']} ({cell(m[key][name]['pct'])} %)"
                                            for m in models]))
        lines.append(row("  incorrectly worn alerted", [
            f"{m[key]['incorrect_alerted']['count']}/{m[key]['incorrect_alerted']['of']}"
            f" ({cell(m[key]['incorrect_alerted']['found_pct'])} % of found)" for m in models]))
    lines += ["", row("spurious detections", [f"{m['spurious']} ({m['spurious_per_image']}/image)" for m in models]),
              row("  called unmasked", [f"{m.get('spurious_unmasked', 0)}" for m in models])]
    for m in models:
        lines += ["", f"confusion of {m['name']} {m['version']} (rows: true, columns: predicted)",
                  "  " + f"{'':<16}" + "".join(f"{p:>16}" for p in LABELS + ("missed",))]
        for t, r in m["confusion"].items():
            lines.append(f"  {t:<16}" + "".join(f"{v:>16}" for v in r.values()))
    return "\n".join(lines)
