"""``maskwatch-convert yunet``: YuNet (ONNX) -> Keras -> int8 ``models/STEM.tflite`` + sidecar + reports.

Steps, each printed as it runs:
  1. the Keras rebuild (:mod:`convert.ports.yunet_keras`), checked against ``cv2.FaceDetectorYN`` on real
     val images (same faces, boxes and keypoints within 0.5 px, scores within 1e-3), saved as the
     float master ``build/keras/STEM.keras``;
  2. post-training int8 with letterboxed train scenes as the representative set (the agent's
     letterbox, so calibration sees what the agent feeds);
  3. ``box_adjust`` fitted on train: the median shift and scale from YuNet's boxes (WIDER FACE's
     convention) to the scenes' annotators' boxes;
  4. float and int8 scored on val through the agent's own detector (faces >= 40 px, IoU >= 0.5):
     recall per label with intervals, false detections per image, the PR curve, float-vs-int8
     parity and latency;
  5. the model pair, its float master ``STEM.keras``, the parity report and
     ``build/yunet/STEM.report.json`` written (models/ only when every step passed).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from agent.pipeline.boxes import greedy_match, iou_matrix
from agent.pipeline.detect import adaptive_input_size
from convert.errors import ConvertError, input_size_type, int_at_least, open_fraction, run_command
from convert.tf import tf_threads
from convert.paths import DEFAULT_DATA_ROOT, REPO_ROOT

DEFAULT_MODELS = REPO_ROOT / "models"
DEFAULT_BUILD = REPO_ROOT / "build"
START, END = "<!-- detector-yunet:start -->", "<!-- detector-yunet:end -->"
PARITY_BOX_PX = 0.5  # the Keras rebuild against OpenCV: box and keypoint tolerance, input pixels
PARITY_SCORE = 1e-3


def add_arguments(p: argparse.ArgumentParser) -> None:
    _wh = input_size_type(32, "320x256")
    p.add_argument("--onnx", type=Path, default=None, help="YuNet ONNX file (default ../shared/models/yunet/yunet_n_dynamic.onnx)")
    p.add_argument("--input", type=_wh, default=(320, 256), help="model input WIDTHxHEIGHT, multiples of 32 (default 320x256: 4:3 frames)")
    p.add_argument("--stem", default="face_detector_yunet", help="output name: models/STEM.tflite + STEM.json")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder holding scenes-ilc2021/")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD, help="float master, reports and figures")
    p.add_argument("--calibration-images", type=int_at_least(1), default=300, help="train scenes in the representative set")
    p.add_argument("--parity-images", type=int_at_least(1), default=40, help="val scenes for the check against cv2.FaceDetectorYN")
    p.add_argument("--min-score", type=open_fraction, default=0.5, help="the sidecar's default_min_score")
    from agent.pipeline.detectors.nms import METHODS  # noqa: PLC0415
    from convert.ports.yunet_keras import NMS_IOU, NMS_METHOD  # noqa: PLC0415

    p.add_argument("--nms", choices=METHODS, default=NMS_METHOD,
                   help="the sidecar's decoding.nms.method: hard keeps each group's top box (OpenCV's, the authors'),"
                        " weighted averages the group's boxes by score")
    p.add_argument("--nms-iou", type=open_fraction, default=NMS_IOU, help="the sidecar's decoding.nms.iou_threshold")
    p.add_argument("--keras", type=Path, default=None,
                   help="a fine-tuned YuNet .keras to export instead of the ONNX weights (the ONNX check is skipped)")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow / LiteRT threads")
    p.add_argument("--no-write", action="store_true", help="score only; leave models/ untouched")
    p.add_argument("--float16", action="store_true",
                   help="also build the float16 variant (maskwatch-convert float16 --stem STEM) after writing")


def calibration_inputs(scenes: Sequence[Any], load: Callable[[Any], np.ndarray], input_wh: Tuple[int, int],
                       n: int, seed: int = 0) -> List[np.ndarray]:
    """Letterboxed BGR 0-255 float inputs (1, H, W, 3) of ``n`` seeded train scenes."""
    from agent.pipeline.detect import letterbox  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(scenes), size=min(n, len(scenes)), replace=False))
    return [letterbox(load(scenes[int(i)]), *input_wh)[0].astype(np.float32)[None] for i in pick]


class _Pair:
    """A candidate model pair in a temp folder, loadable by the agent."""

    def __init__(self, flat: bytes, side: Dict[str, Any]) -> None:
        from convert.export.sidecar import write_model_pair  # noqa: PLC0415

        self._dir = tempfile.TemporaryDirectory(prefix="maskwatch-yunet-")
        _, self.sidecar = write_model_pair(Path(self._dir.name), "candidate", flat, side)

    def model(self, threads: int = 1) -> Any:
        from agent.model import load_model  # noqa: PLC0415

        return load_model(self.sidecar, kind="detector", num_threads=threads)


def fit_box_adjust(model: Any, scenes: Sequence[Any], load: Callable[[Any], np.ndarray],
                   min_score: float = 0.5, min_height: float = 20.0) -> Dict[str, Any]:
    """box_adjust from the agent detector's faces (none applied) matched to annotated train faces."""
    from convert.evaluate import detector as de  # noqa: PLC0415
    from convert.export.face_detector import box_adjust_from_pairs  # noqa: PLC0415

    det = de.make_detector(model, min_score)
    det.box_adjust = (0.0, 0.0, 1.0, 1.0)
    dets, gts = [], []
    for s in scenes:
        boxes = np.array([f.box for f in det.detect(load(s))], np.float64).reshape(-1, 4)
        g = s.boxes[(s.boxes[:, 3] - s.boxes[:, 1]) >= min_height]
        for i, j in greedy_match(iou_matrix(boxes, g), 0.5):
            dets.append(boxes[i])
            gts.append(g[j])
    return box_adjust_from_pairs(np.asarray(dets), np.asarray(gts))


def failure_gallery(results: Sequence[Any], scenes: Sequence[Any], load: Callable[[Any], np.ndarray],
                    threshold: float, path: Path, n: int = 12, min_height: float = 40.0) -> Dict[str, int]:
    """A JPEG of the val faces >= ``min_height`` px the model misses (annotated box green, the
    model's boxes red) and its top-scored false detections (red), for the model card."""
    from agent.draw import contact_sheet, label_color  # noqa: PLC0415

    misses, false = [], []
    for r, s in zip(results, scenes):
        found = {int(j) for j in r.matched[r.scores >= threshold] if j >= 0}
        for j, (box, label) in enumerate(zip(s.boxes, s.labels)):
            if j not in found and box[3] - box[1] >= min_height:
                misses.append((float(box[3] - box[1]), s, r, box, f"missed {label}", label_color(label)))
        for k in np.flatnonzero((r.scores >= threshold) & (r.matched < 0)):
            false.append((float(r.scores[k]), s, r, r.boxes[k], f"false {r.scores[k]:.2f}", (60, 60, 200)))
    picked = sorted(misses, key=lambda t: -t[0])[:n] + sorted(false, key=lambda t: -t[0])[:n]
    tiles, captions, colors = [], [], []
    for _, scene, res, box, caption, color in picked:
        img = load(scene).copy()
        for b in res.boxes[res.scores >= threshold]:
            cv2.rectangle(img, tuple(int(v) for v in b[:2]), tuple(int(v) for v in b[2:]), (60, 60, 200), 2)
        for b in scene.boxes:
            cv2.rectangle(img, tuple(int(v) for v in b[:2]), tuple(int(v) for v in b[2:]), (60, 200, 60), 1)
        x1, y1, x2, y2 = (float(v) for v in box)
        side = 2.2 * max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        m = np.array([[160 / side, 0, 80 - 160 / side * cx], [0, 160 / side, 80 - 160 / side * cy]])
        tiles.append(cv2.warpAffine(img, m, (160, 160), borderValue=(24, 24, 24)))
        captions.append(caption)
        colors.append(color)
    if tiles:
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), contact_sheet(tiles, captions, colors, columns=6), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return {"misses": len(misses), "false": len(false)}


def _export_flags(report: Mapping[str, Any]) -> str:
    """``maskwatch-convert yunet`` flags that differ from its defaults, as the report recorded them."""
    from convert.ports.yunet_keras import NMS_IOU, NMS_METHOD  # noqa: PLC0415

    nms = report.get("nms", {"method": NMS_METHOD, "iou_threshold": NMS_IOU})
    flags = [f"--nms {nms['method']}"] if nms["method"] != NMS_METHOD else []
    return " ".join(flags + ([f"--nms-iou {nms['iou_threshold']}"] if nms["iou_threshold"] != NMS_IOU else []))


# What a .train.json written before train-yunet recorded its own command holds of the options.
RECORDED_TRAIN_OPTIONS = ("steps", "batch", "lr", "seed", "box_loss", "box_weight")


def _train_command(train: Mapping[str, Any]) -> str:
    """The training command of a run's .train.json: the line train-yunet recorded, else (older runs)
    every option its config holds, spelled out, which trains the same weights whatever the defaults."""
    if train.get("command"):
        return str(train["command"])
    cfg = train["config"]
    return " ".join(["maskwatch-convert train-yunet", *(f"--{k.replace('_', '-')} {cfg[k]}" for k in RECORDED_TRAIN_OPTIONS if k in cfg)])


def _rebuild(report: Mapping[str, Any], threshold: float) -> str:
    """The card's rebuild line: the training command (from the run's .train.json) and the export command."""
    train = report.get("training")
    export = " ".join(f"maskwatch-convert yunet {_export_flags(report)}".split())
    if not train:
        return f"Rebuild: `{export}` (writes this section, the figures and the model pair)."
    return (f"Training: {train['steps']} steps of {train['config']['batch']} views in {train['seconds'] / 60:.0f} min"
            f" on this 2-core CPU, {train['train_images']} train images ({train['held_out_images']} held out). Rebuild:"
            f" `{_train_command(train)}` then `{export} --keras"
            f" build/yunet/yunet_ft.keras --min-score {threshold}` (writes this section, the figures and the model pair).")


def _opencv_check(parity: Mapping[str, Any]) -> str:
    """How the Keras rebuild compared with cv2.FaceDetectorYN, for the card."""
    check = parity.get("keras_vs_opencv")
    if not check:
        return ("checked against `cv2.FaceDetectorYN` running the ONNX file by `maskwatch-convert yunet` without"
                " --keras and by tests/convert/ports/test_yunet_keras.py")
    d = check["max_abs_diff"]
    return (f"against `cv2.FaceDetectorYN` on {check['images']} real val images: {check['paired']} of"
            f" {check['faces_opencv']} faces paired, max |diff| box {d['box_px']:.1e} px, keypoints"
            f" {d['keypoint_px']:.1e} px, score {d['score']:.1e}")


def _pct(r: Mapping[str, Any]) -> str:
    return f"{r['recall'] * 100:.1f} % ({r['found']}/{r['faces']}, {r['interval95'][0] * 100:.1f}-{r['interval95'][1] * 100:.1f})"


def card_section(report: Mapping[str, Any], side: Mapping[str, Any], stem: str) -> str:
    """The detector's section of MODEL_CARD.md, markers included (``maskwatch-convert yunet`` rewrites it)."""
    q, f = report["val"]["int8"], report["val"]["float"]
    par = report["parity"]
    thr = report["min_score"]
    rows = []
    for label in ("mask", "no_mask", "incorrect_mask", "all"):
        rows.append(f"| {label} | {_pct(q['recall_ge40px'][label])} | {_pct(f['recall_ge40px'][label])} |"
                    f" {q['recall_all_sizes'][label]['recall'] * 100:.1f} % |")
    fit = report["box_adjust_fit"]
    lat = par["latency_ms"]
    prov = side["provenance"]
    lines = [
        START,
        f"## Face detector (shipped default): `{stem}.tflite`",
        "",
        f"YuNet-n (ShiqiYu/libfacedetection.train, Apache-2.0, weights trained on WIDER FACE; `NOTICE`), source"
        f" `{prov['source_model']}` (ONNX sha256 {str(prov.get('source_model_sha256', ''))[:16]}...), rebuilt as Keras"
        f" from the ONNX file's own graph (`convert/ports/yunet_keras.py`; {_opencv_check(par)})"
        + (", fine-tuned here on scenes-ilc2021 train (`convert/train/yunet.py`: the untouched model as teacher on"
           " everything but labelled faces, positives chosen by its boxes, low learning rate)"
           if "fine-tuned" in str(prov["source_model"]) else "")
        + f", int8 at"
        f" {report['input'][0]}x{report['input'][1]}, with height and width left open (`input.adaptive_multiple`"
        f" {side['input'].get('adaptive_multiple')}: the agent runs it on a frame's letterbox without the padding,"
        f" rounded up to that multiple: {par.get('latency_ms_16x9', {}).get('input', 'smaller')} for a 16:9 frame)"
        f" (BGR 0-255 in, outputs `scores` (cls, obj), `boxes`, `keypoints`;"
        f" 5 keypoints: eyes, nose tip, mouth corners). {par['size_bytes'] // 1024} KB. The float master ships beside it"
        f" (`{stem}.keras`). `box_adjust` {fit['box_adjust']} (fitted on train: median IoU with the annotators' boxes"
        f" {fit['median_iou_before']} -> {fit['median_iou_after']}); `default_min_score` {thr}; NMS"
        f" {side['decoding']['nms']['method']} at IoU {side['decoding']['nms']['iou_threshold']}"
        + (" (each overlapping group's boxes and keypoints averaged by score)"
           if side['decoding']['nms']['method'] == "weighted" else "") + ".",
        "",
        f"### Metrics (scenes-ilc2021 `val`, {q['images']} images, faces >= 40 px, IoU >= 0.5, score >= {thr})",
        "",
        "| label | int8 recall (found/faces, 95 % interval) | float recall | int8, all sizes |",
        "|---|---|---|---|",
        *rows,
        "",
        f"False detections: int8 {q['false_per_image']:.2f} per image ({q['false']}), float {f['false_per_image']:.2f};"
        f" by their best IoU with an annotated face: {q['false_kinds']} (most `background` ones are real faces nobody"
        f" boxed: see the failures figure).",
        f"int8 against float on val: {par['kept_fraction'] * 100:.1f} % of the float model's faces kept at IoU >= 0.9,"
        f" {par['kept_fraction_iou50'] * 100:.1f} % at 0.5; score difference mean {par['score_diff_mean']}, max"
        f" {par['score_diff_max']}. LiteRT invoke at the build ({lat}; at"
        f" {par.get('latency_ms_16x9', {}).get('input')}: { {k: v for k, v in par.get('latency_ms_16x9', {}).items() if k != 'input'} };"
        " a shared host: compare speeds with"
        " `python bench/peer.py`, which times the models interleaved).",
        "",
        f"![recall against false detections per image]({'figures/' + stem + '_pr.png'})",
        "",
        f"Failures at {thr} (`figures/{stem}_failures.jpg`: the biggest missed faces >= 40 px, then the top-scored"
        " false detections; green = annotated, red = detected):",
        "",
        f"![misses and false detections](figures/{stem}_failures.jpg)",
        "",
        _rebuild(report, thr),
        END,
    ]
    return "\n".join(lines) + "\n"


def _brief(m: Mapping[str, Any]) -> str:
    r = m["recall_ge40px"]
    return (", ".join(f"{k} {r[k]['recall'] * 100:.1f} % [{r[k]['interval95'][0] * 100:.1f}-{r[k]['interval95'][1] * 100:.1f}]"
                      for k in ("mask", "no_mask", "incorrect_mask"))
            + f"; {m['false_per_image']:.2f} false detections / image")


def run(a: argparse.Namespace, log: Callable[[str], None] = print) -> int:
    """Execute ``maskwatch-convert yunet``."""
    from convert.evaluate import detector as de  # noqa: PLC0415
    from convert.ports import yunet_keras as yk  # noqa: PLC0415
    from convert.data.detector import bgr_loader, read_scenes  # noqa: PLC0415
    from convert.export.parity import write_parity_report  # noqa: PLC0415
    from convert.litert import latency_ms  # noqa: PLC0415
    from convert.export.quantize import open_input_size, quantize_int8  # noqa: PLC0415
    from convert.export.sidecar import require_models_dir, write_model_pair  # noqa: PLC0415

    if not a.no_write:  # found now, not after minutes of work
        require_models_dir(a.models_dir, " (or --no-write to score only)")
    t0 = time.time()
    tf_threads(a.threads)
    onnx_path = a.onnx or yk.DEFAULT_ONNX
    train, val = read_scenes(a.data_root, "train"), read_scenes(a.data_root, "val")
    load = bgr_loader()
    w, h = a.input
    stem_dir = a.build_dir / "yunet"
    stem_dir.mkdir(parents=True, exist_ok=True)

    log(f"[1/5] Keras YuNet at {w}x{h} from {onnx_path}")
    model, sha = yk.build_keras(onnx_path, (h, w))
    source = onnx_path.name
    check: Optional[Dict[str, Any]] = None
    if a.keras is not None:
        import keras  # noqa: PLC0415

        try:
            tuned = keras.models.load_model(a.keras)
        except (OSError, ValueError) as exc:
            raise ConvertError(f"{a.keras}: not a loadable .keras model ({str(exc).splitlines()[0][:200]});"
                               " fix: give the file maskwatch-convert train-yunet wrote") from None
        shapes = [tuple(t.shape[1:]) for t in (*model.inputs, *model.outputs)]
        if [tuple(t.shape[1:]) for t in (*tuned.inputs, *tuned.outputs)] != shapes:
            raise ConvertError(f"{a.keras}: not a YuNet at {w}x{h} (input and outputs should be {shapes}); fix: give"
                               " --input the size it was trained at, or a model maskwatch-convert train-yunet wrote")
        model = tuned
        source = f"{a.keras.name} (fine-tuned from {onnx_path.name})"
        log(f"  exporting the fine-tuned {a.keras}")
    else:
        check = yk.parity_vs_opencv(model, onnx_path, [load(s) for s in val[: a.parity_images]])
        d = check["max_abs_diff"]
        log(f"  against cv2.FaceDetectorYN on {check['images']} val images: {check['paired']} of"
            f" {check['faces_opencv']} faces paired ({check['faces_keras']} found), max |diff| box"
            f" {d['box_px']:.2e} px, keypoints {d['keypoint_px']:.2e} px, score {d['score']:.2e}")
        if (check["paired"] != check["faces_opencv"] or check["faces_keras"] != check["faces_opencv"]
                or max(d["box_px"], d["keypoint_px"]) > PARITY_BOX_PX or d["score"] > PARITY_SCORE):
            raise ConvertError(f"the Keras rebuild of {onnx_path} does not match cv2.FaceDetectorYN: {check}")
    keras_dir = a.build_dir / "keras"
    keras_dir.mkdir(parents=True, exist_ok=True)
    master = a.keras if a.keras is not None else keras_dir / f"{a.stem}.keras"
    if a.keras is None:
        model.save(master)

    log(f"[2/5] int8: {a.calibration_images} letterboxed train scenes as the representative set")
    # Height and width left open (input.adaptive_multiple): calibrated at the full size, the int8
    # model then runs on the letterboxed frame alone (320x192 for 16:9) without the padding.
    model = open_input_size(model)
    flat = quantize_int8(model, calibration_inputs(train, load, a.input, a.calibration_images))
    side = yk.sidecar_template(a.input, source, sha, a.min_score, nms=a.nms, nms_iou=a.nms_iou)

    log(f"[3/5] box_adjust on {len(train)} train scenes (int8)")
    fit = fit_box_adjust(_Pair(flat, side).model(a.threads), train, load, a.min_score)
    log(f"  {fit['box_adjust']} from {fit['pairs']} faces; median IoU {fit['median_iou_before']} ->"
        f" {fit['median_iou_after']}")
    side["decoding"]["box_adjust"] = fit["box_adjust"]

    log(f"[4/5] scoring float and int8 on {len(val)} val scenes (faces >= 40 px, IoU >= 0.5)")
    int8_model = _Pair(flat, side).model(a.threads)
    float_model = de.KerasModel(model, side, name="float")
    scores: Dict[str, Any] = {}
    for name, m in (("int8", int8_model), ("float", float_model)):
        low = de.run_detector(de.make_detector(m, de.LOW_SCORE), val, load)
        at = de.run_detector(de.make_detector(m, a.min_score), val, load)
        metrics = de.metrics_at(at, a.min_score)
        metrics["false_kinds"] = de.false_detection_kinds(at, val, a.min_score)
        metrics["recall_by_input_px"] = de.recall_by_input_size(at, val, a.min_score, a.input)
        scores[name] = {"metrics": metrics, "curve": de.curve(low), "results": at}
        log(f"  {name} at {a.min_score}: {_brief(metrics)}")
    parity = de.face_parity(float_model, int8_model, val, load, a.min_score)
    parity["latency_ms"] = latency_ms(flat, input_shape=(1, h, w, 3))
    # what a 16:9 frame runs at: the input shrinks to the letterbox (input.adaptive_multiple)
    wide = adaptive_input_size(16, 9, w, h, int(side["input"]["adaptive_multiple"]))
    parity["latency_ms_16x9"] = {"input": f"{wide[0]}x{wide[1]}",
                                 **latency_ms(flat, input_shape=(1, wide[1], wide[0], 3))}
    parity["size_bytes"] = len(flat)
    if check is not None:
        parity["keras_vs_opencv"] = check
    parity["box_adjust_fit"] = fit
    log(f"  int8 vs float faces: {parity['kept_fraction'] * 100:.1f} % kept at IoU >= 0.9; invoke"
        f" {parity['latency_ms']}")
    fig = a.build_dir / "yunet" / f"{a.stem}_pr.png"
    de.plot_curves({n: (s["curve"], a.min_score) for n, s in scores.items()}, fig,
                   title=f"{a.stem} on scenes-ilc2021 val")
    info = a.keras.with_suffix(".train.json") if a.keras is not None else None
    training = json.loads(info.read_text()) if info is not None and info.is_file() else None
    if training:
        training.pop("history", None)
        training.pop("holdout", None)
    report = {"input": list(a.input), "source": source, "min_score": a.min_score, "box_adjust_fit": fit,
              "nms": dict(side["decoding"]["nms"]),
              "training": training,
              "val": {n: s["metrics"] for n, s in scores.items()}, "parity": parity,
              "curve_int8": {k: v.tolist() for k, v in scores["int8"]["curve"].items()},
              "seconds": round(time.time() - t0)}
    (stem_dir / f"{a.stem}.report.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"  report: {stem_dir / f'{a.stem}.report.json'}, PR curve: {fig}")

    if a.no_write:
        log("[5/5] --no-write: models/ left unchanged")
        return 0
    side.setdefault("metrics", {})["val_ge40px_int8"] = scores["int8"]["metrics"]["recall_ge40px"]
    side["metrics"]["false_per_image_int8"] = scores["int8"]["metrics"]["false_per_image"]
    side["metrics"]["parity"] = {k: v for k, v in parity.items() if k != "box_adjust_fit"}
    side["provenance"]["representative_data"] = f"{a.calibration_images} letterboxed scenes-ilc2021 train images"
    # The float master ships beside the int8 model: what fine-tuning and the parity report start from.
    side["provenance"]["float_model"] = f"{a.stem}.keras"
    log(f"[5/5] writing {a.models_dir / a.stem}.tflite + .json + .keras + parity report")
    write_model_pair(a.models_dir, a.stem, flat, side, extra={f"{a.stem}.keras": master.read_bytes()})
    write_parity_report(a.models_dir, a.stem, {"kind": "detector", **parity})
    from convert.evaluate.card import update_card  # noqa: PLC0415

    figures = a.models_dir / "figures"
    figures.mkdir(exist_ok=True)
    (figures / f"{a.stem}_pr.png").write_bytes(fig.read_bytes())
    gallery = failure_gallery(scores["int8"]["results"], val, load, a.min_score, figures / f"{a.stem}_failures.jpg")
    log(f"  failures figure: {gallery['misses']} misses, {gallery['false']} false detections on val")
    update_card(a.models_dir / "MODEL_CARD.md", card_section(report, side, a.stem), START, END)
    if a.float16:  # the rewritten sidecar no longer pins the old variant: build the new master's
        from convert.export.float16 import build  # noqa: PLC0415

        build(a.models_dir, a.stem, a.data_root, threads=a.threads, log=log)
    log(f"done in {time.time() - t0:.0f} s")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command("maskwatch-convert yunet", __doc__.splitlines()[0], add_arguments, run, argv)


__all__ = ("add_arguments", "calibration_inputs", "fit_box_adjust", "main", "run")
