"""``maskwatch-convert finetune --data DIR``: adapt the mask classifier to one site's labelled crops.

    maskwatch-convert finetune --data site/ [--base models/mask_classifier.json] [--switch-config config.yaml]

Steps (docs/site-data.md describes DIR):

1. The float Keras model to start from: the base model's float master (the sidecar's
   ``provenance.float_model``, shipped beside it), or else the int8 model rebuilt as float
   (:mod:`convert.ports.tflite_keras`).
2. Site crops ``DIR/<label>/*.png`` are read and resized (INTER_AREA) to the model input. A part of
   them (``--holdout``) is kept aside, chosen by a hash of the crop's run and track, so one person's
   crops all land on the same side.
3. Base crops (scenes-ilc2021 train + val, cut by ``convert.data.classifier`` with the model's crop
   geometry, or its cache when made with the same settings) are trained on together with the site
   training crops, site crops weighted ``--site-weight`` times, at a low learning rate.
4. The temperature is refitted on the base ``val`` logits (see :func:`run`), the model converted to
   int8 (float logits) and both models, old and new, are scored through LiteRT on the held-out site
   crops and on the base ``val`` crops.
5. Only then is anything written: ``MODELS/<stem>.tflite`` + ``.json`` + ``.keras`` (its float
   master) (+ ``SHA256SUMS``) beside the
   old model, the comparison as ``<stem>.finetune.json`` / ``.md``, and, with ``--switch-config``,
   that config's ``classifier.model:`` line (the old file kept as ``FILE.bak``).

Bad input (no labelled crop, an unknown label folder, an existing output without ``--force``)
exits 2 with one message and writes nothing; unreadable crops are skipped, named and counted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from convert.data import classifier as cd
from convert.data.site import SiteCrops, check_collect_geometry, holdout_mask, read_site_crops
from convert.errors import ConvertError
from convert.tf import tf_threads
from convert.paths import DEFAULT_DATA_ROOT, REPO_ROOT

Log = Callable[[str], None]
DEFAULT_BASE = REPO_ROOT / "models" / "mask_classifier.json"


# ---------------------------------------------------------------- inputs


def read_sidecar(path: Path) -> Dict[str, Any]:
    """The base classifier's sidecar, checked for what fine-tuning relies on."""
    try:
        side = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConvertError(f"{path}: base classifier sidecar not found; pass --base models/NAME.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConvertError(f"{path}: not a readable sidecar ({exc})") from None
    if not isinstance(side, dict) or side.get("kind") != "classifier":
        raise ConvertError(f"{path}: 'kind' is {side.get('kind') if isinstance(side, dict) else None!r}, not 'classifier'; pass the classifier's sidecar")
    if list(side.get("labels", [])) != list(cd.LABELS):
        raise ConvertError(f"{path}: labels {side.get('labels')} differ from the trainer's {list(cd.LABELS)}; finetune cannot adapt this model")
    from convert.train.classifier import normalization

    norm = side.get("input", {}).get("normalization", {})
    if norm != normalization():
        raise ConvertError(f"{path}: input.normalization {norm} differs from the trainer's {normalization()}; finetune cannot adapt this model")
    if side.get("input", {}).get("height") != side.get("input", {}).get("width"):
        raise ConvertError(f"{path}: input is not square; finetune needs the square crops the trainer makes")
    model = Path(path).parent / str(side.get("model_file", ""))
    if not model.is_file():
        raise ConvertError(f"{model}: model file named by {path} (model_file) not found")
    return side


def base_crops(data_root: Path, cache: Path, cfg: cd.DataConfig, log: Log) -> Tuple[cd.CropSet, cd.CropSet, Dict[str, Any]]:
    """scenes-ilc2021 train and val crops with ``cfg``'s geometry: from ``cache`` when made the same way, else cut now."""
    if cache.is_file():
        tr, va, info = cd.load_crops(cache)
        made = info.get("config", {})
        if all(made.get(k, dflt) == v for k, v, dflt in (
                ("size", cfg.size, None), ("scale", cfg.scale, None), ("shift_y", cfg.shift_y, None), ("limit", cfg.limit, None),
                ("anchor", cfg.anchor, "box"), ("anchor_side", cfg.anchor_side, 2.2), ("anchor_centre", cfg.anchor_centre, 0.8))):
            log(f"base crops from {cache}: train {info['train_counts']}, val {info['val_counts']}")
            return tr, va, info
        log(f"base crop cache {cache} was made with other settings ({made}); cutting the crops again")
    how_many = "all images" if cfg.limit is None else f"at most {cfg.limit} images per split"
    log(f"cutting base crops from {data_root / 'scenes-ilc2021'} ({how_many}; not cached: the cache is train-classifier's)")
    try:
        return cd.build_crops(data_root, cfg, face_detector=None, log=log)
    except FileNotFoundError as exc:
        raise ConvertError(str(exc)) from None


def merge(base: cd.CropSet, site: SiteCrops, mask: np.ndarray, site_weight: float) -> Tuple[cd.CropSet, np.ndarray]:
    """Base train crops plus the site crops selected by ``mask``, and the per-crop loss weights."""
    n = int(mask.sum())
    merged = cd.CropSet(
        np.concatenate([base.x, site.x[mask]]), np.concatenate([base.y, site.y[mask]]),
        np.concatenate([base.source, np.full(n, "site")]),
        np.concatenate([base.image, np.asarray([g for g, m in zip(site.groups, mask) if m], dtype=str)]),
    )
    weights = np.concatenate([np.ones(len(base), np.float32), np.full(n, site_weight, np.float32)])
    return merged, weights


def site_set(site: SiteCrops, mask: np.ndarray) -> cd.CropSet:
    """The site crops selected by ``mask`` as a CropSet (for evaluation)."""
    return cd.CropSet(site.x[mask], site.y[mask], np.full(int(mask.sum()), "site"),
                      np.asarray([g for g, m in zip(site.groups, mask) if m], dtype=str))


# ---------------------------------------------------------------- config switch


def _yaml_scalar(value: str) -> str:
    return value if re.fullmatch(r"[A-Za-z0-9_./@+-]+", value) else json.dumps(value)


def switched_config_text(text: str, value: str, file: str) -> str:
    """``text`` with the value of ``classifier.model`` set to ``value``; every other line and comment kept.

    The ``model:`` line of the top-level ``classifier:`` block is edited in place (its comment
    kept); without one, a ``model:`` line is added under ``classifier:`` (or the block appended).
    """
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if re.match(r"classifier\s*:\s*(#.*)?$", ln.rstrip("\r\n"))), None)
    if start is None:
        if re.search(r"^classifier\s*:", text, re.M):
            raise ConvertError(f"{file}: `classifier:` is written inline ({{...}}); set classifier.model by hand")
        sep = "" if not text or text.endswith("\n") else "\n"
        return text + sep + f"classifier:\n  model: {_yaml_scalar(value)}\n"
    indent = None
    for i in range(start + 1, len(lines)):
        ln = lines[i].rstrip("\r\n")
        if not ln.strip() or ln.lstrip().startswith("#"):
            continue
        lead = len(ln) - len(ln.lstrip())
        if lead == 0:
            break  # next top-level key: the block ended without a model line
        indent = lead if indent is None else indent
        m = re.match(r"^(?P<pre>\s+model\s*:[ \t]*)(?P<val>\"[^\"]*\"|'[^']*'|[^#\s][^#]*?)?(?P<post>[ \t]*(?:#.*)?)$", ln)
        if m and lead == indent:
            post = m.group("post") or ""
            if post and not post[0].isspace():
                post = " " + post
            eol = lines[i][len(ln):]
            lines[i] = m.group("pre") + _yaml_scalar(value) + post + eol
            return "".join(lines)
    eol = "\r\n" if lines[start].endswith("\r\n") else "\n"
    lines.insert(start + 1, " " * (indent or 2) + f"model: {_yaml_scalar(value)}" + eol)
    return "".join(lines)


def plan_config_switch(config: Path, sidecar: Path) -> Tuple[str, str]:
    """(new text, value written) for ``config`` pointing ``classifier.model`` at ``sidecar``; checks it loads."""
    from agent.config import ConfigError, parse

    try:
        text = config.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConvertError(f"{config}: config file not found (--switch-config)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvertError(f"{config}: cannot read the config ({exc})") from None
    if not os.access(config.parent, os.W_OK) or not os.access(config, os.W_OK):
        raise ConvertError(f"{config}: not writable (--switch-config); run as a user who may edit it")
    base = config.resolve().parent
    target = sidecar.resolve()
    # relative paths resolve against the config's folder: keep it relative when the model lies below it
    value = str(target.relative_to(base)) if target.is_relative_to(base) else str(target)
    new = switched_config_text(text, value, str(config))
    try:
        cfg = parse(new, str(config), base)
    except ConfigError as exc:
        raise ConvertError(f"{config}: the config does not load, so it is left alone: {str(exc).splitlines()[0]}") from None
    if Path(cfg.classifier.model).resolve() != target:
        raise ConvertError(f"{config}: could not point classifier.model at {target}; edit it by hand")
    return new, value


def apply_config_switch(config: Path, new_text: str) -> Path:
    """Back the config up as ``FILE.bak``, then replace it atomically (same permissions)."""
    backup = config.with_name(config.name + ".bak")
    tmp_bak = config.with_name(f".{config.name}.bak.tmp{os.getpid()}")
    tmp = config.with_name(f".{config.name}.tmp{os.getpid()}")
    try:
        shutil.copy2(config, tmp_bak)
        os.replace(tmp_bak, backup)
        tmp.write_text(new_text, encoding="utf-8")
        shutil.copymode(config, tmp)
        os.replace(tmp, config)
    finally:
        for t in (tmp, tmp_bak):
            if t.exists():
                t.unlink()
    return backup


# ---------------------------------------------------------------- comparison report


def scores(tflite_bytes: bytes, crops: cd.CropSet, temperature: float, normalization: Dict[str, Any],
           model=None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(accuracy (all classes and faces only) and per-class recall, convert.evaluate.classifier's full metrics)
    of an int8 model on ``crops`` (pixels normalized as the sidecar's ``normalization``), through LiteRT."""
    from convert.evaluate import classifier as ev

    with warnings.catch_warnings():  # a set without faces gives an empty mean: reported as null
        warnings.simplefilter("ignore", RuntimeWarning)
        m = ev.evaluate_bytes(tflite_bytes, crops, temperature, normalization, model=model)
    cm = np.asarray(m["confusion"])
    n = int(cm.sum())
    k = int(np.trace(cm))
    out = {
        "n": n,
        "accuracy": ev.rounded(k / n) if n else None,
        "accuracy_ci95": [ev.rounded(v) for v in ev.wilson(k, n)],
        "face_accuracy": ev.rounded(m["face_accuracy"]),
        "recall": {lab: {"n": pc["n"], "recall": ev.rounded(pc["recall"])} for lab, pc in m["per_class"].items()},
        "confusion": m["confusion"],
    }
    if "int8_float_agreement" in m:
        out["int8_float_agreement"] = ev.rounded(m["int8_float_agreement"])
    return out, m


def _cell(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _delta(a: Optional[float], b: Optional[float]) -> str:
    return "-" if a is None or b is None else f"{100 * (b - a):+.1f}"


def _rows(report: Dict[str, Any]) -> List[Tuple[str, List[Tuple[str, str, str, str]]]]:
    """(row name, per data set (n, old, new, delta)) for the comparison tables."""
    rows = []
    sets = list(report["sets"].values())
    for key, title in (("accuracy", "accuracy"), ("face_accuracy", "face accuracy")):
        cells = []
        for s in sets:
            o, nw = s["old"][key], s["new"][key]
            n = s["old"]["n"] if key == "accuracy" else sum(s["old"]["recall"][lab]["n"] for lab in cd.LABELS[:3])
            cells.append((str(n), _cell(o), _cell(nw), _delta(o, nw)))
        rows.append((title, cells))
    for lab in cd.LABELS:
        cells = []
        for s in sets:
            o, nw = s["old"]["recall"][lab]["recall"], s["new"]["recall"][lab]["recall"]
            cells.append((str(s["old"]["recall"][lab]["n"]), _cell(o), _cell(nw), _delta(o, nw)))
        rows.append((f"recall {lab}", cells))
    return rows


def format_report(report: Dict[str, Any]) -> str:
    """The old-vs-new comparison as a plain-text table (percent; delta in points)."""
    head = [f"old: {report['old']['name']} {report['old']['version']} ({report['old']['file']})",
            f"new: {report['new']['name']} {report['new']['version']} ({report['new']['file']})",
            "int8 models through LiteRT; % and the change in points", ""]
    titles = list(report["sets"])
    w = 30
    line1 = f"{'':<24}" + "".join(f"{t:<{w}}" for t in titles)
    line2 = f"{'':<24}" + "".join(f"{'n':>6}{'old':>7}{'new':>7}{'delta':>7}   " for _ in titles)
    out = head + [line1.rstrip(), line2.rstrip()]
    for name, cells in _rows(report):
        out.append(f"{name:<24}" + "".join(f"{n:>6}{o:>7}{nw:>7}{d:>7}   " for n, o, nw, d in cells).rstrip())
    return "\n".join(out)


def markdown_report(report: Dict[str, Any]) -> str:
    """The comparison as Markdown, saved beside the new model (like models/*.parity.md)."""
    titles = list(report["sets"])
    lines = [
        f"# Site fine-tuning: {report['new']['file']} vs {report['old']['file']}", "",
        f"- old: `{report['old']['name']}` {report['old']['version']} (sha256 {report['old']['sha256'][:12]}…)",
        f"- new: `{report['new']['name']}` {report['new']['version']} (sha256 {report['new']['sha256'][:12]}…), "
        f"temperature {report['new']['temperature']}",
        f"- site crops: train {json.dumps(report['site']['train'])}, held out {json.dumps(report['site']['held_out'])}, "
        f"unreadable {report['site']['unreadable']}; site weight {report['training']['site_weight']}, "
        f"{report['training']['epochs']} epoch(s), lr {report['training']['lr']}",
        "- int8 models through LiteRT; percent, delta in points. Held-out site crops are whole tracks never trained on.", "",
        "| | " + " | ".join(f"{t}: n | old | new | delta" for t in titles) + " |",
        "|---|" + "---|---|---|---|" * len(titles),
    ]
    for name, cells in _rows(report):
        lines.append(f"| {name} | " + " | ".join(" | ".join(c) for c in cells) + " |")
    lines.append("")
    for t, s in report["sets"].items():
        for who in ("old", "new"):
            lo, hi = s[who]["accuracy_ci95"]
            lines.append(f"- {t}, {who}: accuracy 95 % CI {_cell(lo)}-{_cell(hi)} %")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="site data folder (DIR/<label>/*.png; docs/site-data.md)")
    p.add_argument("--base", type=Path, default=DEFAULT_BASE, help="sidecar of the classifier to adapt (its .tflite beside it)")
    p.add_argument("--out-stem", default="mask_classifier_site", help="new model: MODELS/STEM.tflite + STEM.json")
    p.add_argument("--models-dir", type=Path, default=None, help="where the new model goes (default: the base sidecar's folder)")
    p.add_argument("--force", action="store_true", help="overwrite an existing model of that stem")
    p.add_argument("--epochs", type=int, default=3, help="passes over base + site training crops (default 3)")
    p.add_argument("--batch", type=int, default=64, help="crops per training step")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (training from scratch used 3e-3)")
    p.add_argument("--site-weight", type=float, default=4.0, help="loss weight of a site crop relative to a base crop (default 4)")
    p.add_argument("--holdout", type=float, default=0.25, help="fraction of site tracks kept aside for the comparison (default 0.25)")
    p.add_argument("--base-limit", type=int, default=None, metavar="N", help="at most N base images per split (tiny runs)")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder holding scenes-ilc2021/ (base crops)")
    p.add_argument("--crops", type=Path, default=cd.DEFAULT_CROPS, help="base crop cache, used when cut with the same settings")
    p.add_argument("--seed", type=int, default=0, help="seed of training, base crops and calibration sample")
    p.add_argument("--switch-config", type=Path, metavar="FILE", help="also point FILE's classifier.model at the new model (FILE.bak keeps the old)")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow intra/inter-op threads")


def _check_args(a: argparse.Namespace) -> None:
    for name, ok, want in (("--epochs", a.epochs >= 1, ">= 1"), ("--batch", a.batch >= 1, ">= 1"),
                           ("--lr", a.lr > 0, "> 0"), ("--site-weight", a.site_weight > 0, "> 0"),
                           ("--holdout", 0 <= a.holdout < 1, "in [0, 1)"),
                           ("--base-limit", a.base_limit is None or a.base_limit >= 1, ">= 1")):
        if not ok:
            raise ConvertError(f"{name} must be {want}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", a.out_stem):
        raise ConvertError(f"--out-stem {a.out_stem!r}: use letters, digits, '_', '-' and '.' only")


def _outputs(a: argparse.Namespace, base_sidecar: Path, base_model: Path) -> Tuple[Path, Path, Path]:
    """(models folder, new .tflite, new .json); refuses the base model itself and, without --force, any existing file."""
    from convert.export.sidecar import require_models_dir  # noqa: PLC0415

    models_dir = require_models_dir(a.models_dir or base_sidecar.parent)
    out_model, out_side = models_dir / f"{a.out_stem}.tflite", models_dir / f"{a.out_stem}.json"
    if out_side.resolve() == base_sidecar.resolve() or out_model.resolve() == base_model.resolve():
        raise ConvertError(f"--out-stem {a.out_stem}: that is the base model itself; choose another stem")
    existing = [p for p in (out_model, out_side, models_dir / f"{a.out_stem}.keras") if p.exists()]
    if existing and not a.force:
        raise ConvertError(f"{existing[0]}: already exists; pass --force to overwrite it or another --out-stem")
    return models_dir, out_model, out_side


def base_float_model(base_side: Dict[str, Any], base_model: Path, step: Log) -> Any:
    """The float Keras model to fine-tune: the float master the sidecar names
    (``provenance.float_model``, beside it) when it is there, else ``base_model`` rebuilt as float
    from its int8 flatbuffer (:mod:`convert.ports.tflite_keras`, chain-shaped classifiers only)."""
    from convert.evaluate.classifier import float_master

    path = float_master(base_model, base_side)
    if path is not None:
        if path.is_file():
            from convert.ports.blazeface_keras import load_keras  # registers the custom layers a master may use

            model = load_keras(path)
            step(f"float master {path.name} ({model.count_params()} parameters)")
            return model
        step(f"warning: float master {path} named by the sidecar is missing; rebuilding from {base_model.name}")
    from convert.ports.tflite_keras import keras_from_tflite

    model = keras_from_tflite(base_model)
    step(f"rebuilt {base_model.name} as a float Keras model ({model.count_params()} parameters)")
    return model


def keras_bytes(model: Any) -> bytes:
    """The model as a ``.keras`` file's bytes, weights only (no optimizer state): the float master."""
    import tempfile

    # Rebuilt from its config, not clone_model: Keras 3 clones a compiled model's optimizer too,
    # and its state (AdamW: two slots per weight) would triple the file.
    clone = model.__class__.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "master.keras"
        clone.save(path)
        return path.read_bytes()


def _train_and_convert(a: argparse.Namespace, base_side: Dict[str, Any], base_model: Path, train_set: cd.CropSet,
                       weights: np.ndarray, val: cd.CropSet, step: Log) -> Tuple[Any, bytes, float, Dict[str, Any]]:
    """Fine-tune the float rebuild of ``base_model``; returns (float model, int8 bytes, temperature, history)."""
    from convert.export import quantize
    from convert.train import classifier as tc

    model = base_float_model(base_side, base_model, step)
    with warnings.catch_warnings():  # Keras warns that fit()'s shuffle does not apply to a tf.data set
        warnings.simplefilter("ignore", UserWarning)
        model, history = tc.train(train_set, val, a.epochs, a.batch, a.lr, 1.0, a.seed, log=step, init_model=model,
                                  sample_weight=weights, checkpoint=None)
    # Temperature from base val: logits of crops never trained on. Site training crops were trained
    # on (over-confident logits would pull T down); the held-out site crops are kept for the comparison.
    temperature = tc.fit_temperature(model.predict(tc.normalize(val.x), batch_size=256, verbose=0), val.y)
    step(f"temperature refitted on {len(val)} base val crops: {temperature:.3f}")
    rep = np.random.default_rng(a.seed).permutation(len(train_set))[:300]
    step("converting to int8")
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # TF prints its SavedModel signature
        warnings.simplefilter("ignore", UserWarning)
        tfl = quantize.quantize_int8(model, (tc.normalize(train_set.x[k : k + 1]) for k in rep), float_outputs=("logits",))
    return model, tfl, temperature, history


def run(a: argparse.Namespace, log: Log = print, warn: Optional[Log] = None) -> int:
    """Execute ``finetune`` with parsed options; raises ConvertError for user errors (nothing written).

    Every check that can fail on user input runs before training, and nothing is written before
    the new model is converted and scored.
    """
    warn = warn or (lambda m: print(m, file=sys.stderr, flush=True))
    t_start = time.time()

    def step(msg: str) -> None:
        log(f"[{time.time() - t_start:5.0f} s] {msg}")

    _check_args(a)
    base_side = read_sidecar(a.base)
    base_model = a.base.parent / base_side["model_file"]
    base_bytes = base_model.read_bytes()
    base_sha = hashlib.sha256(base_bytes).hexdigest()
    if base_side.get("model_sha256") not in (None, base_sha):
        warn(f"warning: {base_model}: sha256 differs from its sidecar's model_sha256; using the file as it is")
    models_dir, out_model, out_side = _outputs(a, a.base, base_model)
    switch = plan_config_switch(a.switch_config, out_side) if a.switch_config else None

    size = int(base_side["input"]["height"])
    crop = dict(base_side.get("crop", {}))
    step(f"reading site crops from {a.data}")
    site = read_site_crops(a.data, cd.LABELS, size, warn)
    check_collect_geometry(a.data, crop, warn)
    held = holdout_mask(site.groups, a.holdout)
    site_info = {
        "train": site.counts(~held), "held_out": site.counts(held), "tracks": len(set(site.groups)),
        "held_out_tracks": len({g for g, h in zip(site.groups, held) if h}), "unreadable": len(site.skipped),
    }
    step(f"site crops: {len(site)} from {site_info['tracks']} track(s) {site.counts()}; held out {int(held.sum())} "
         f"{site_info['held_out']}; unreadable {len(site.skipped)}")
    if a.holdout > 0 and not held.any():
        warn("warning: fewer than 2 site tracks: nothing held out, the site comparison is skipped")

    tf_threads(a.threads)
    cfg = cd.DataConfig.from_crop(size, crop, seed=a.seed, limit=a.base_limit)
    tr, va, base_info = base_crops(a.data_root, a.crops, cfg, step)
    train_set, weights = merge(tr, site, ~held, a.site_weight)
    step(f"training set: {len(tr)} base + {int((~held).sum())} site crops (site weight {a.site_weight}); base val {len(va)}")
    model, new_bytes, temperature, history = _train_and_convert(a, base_side, base_model, train_set, weights, va, step)

    step("scoring old and new int8 models")
    old_temp = float(base_side["output"].get("temperature", 1.0))
    norm = base_side["input"]["normalization"]  # checked by read_sidecar; the new model keeps it
    sets: Dict[str, Dict[str, Any]] = {}
    held_set = site_set(site, held)
    if len(held_set):
        sets["site held-out"] = {"old": scores(base_bytes, held_set, old_temp, norm)[0],
                                  "new": scores(new_bytes, held_set, temperature, norm)[0]}
    new_val, new_val_full = scores(new_bytes, va, temperature, norm, model=model)
    sets["base val"] = {"old": scores(base_bytes, va, old_temp, norm)[0], "new": new_val}
    training = {"epochs": a.epochs, "batch": a.batch, "lr": a.lr, "site_weight": a.site_weight, "holdout": a.holdout,
                "seed": a.seed, "base_limit": a.base_limit, "base_train_counts": base_info.get("train_counts"),
                "base_val_counts": base_info.get("val_counts"),
                "loss": [round(float(v), 4) for v in history.get("loss", [])]}
    sidecar = derived_sidecar(base_side, base_model.name, base_sha, temperature, site_info, training, new_val_full, sets)

    # everything is computed: write the pair (+ SHA256SUMS), the report, then the config
    from convert.export.sidecar import write_files_atomically, write_model_pair

    master = f"{a.out_stem}.keras"  # the new float master, so the next finetune starts from float weights
    sidecar["provenance"]["float_model"] = master
    paths = write_model_pair(models_dir, a.out_stem, new_bytes, sidecar, extra={master: keras_bytes(model)})
    written = json.loads(paths[1].read_text())
    report = {
        "old": {"file": base_model.name, "name": base_side.get("name"), "version": base_side.get("version"),
                "sha256": base_sha, "temperature": old_temp},
        "new": {"file": out_model.name, "name": written.get("name"), "version": written.get("version"),
                "sha256": written["model_sha256"], "temperature": round(temperature, 4)},
        "site": site_info, "training": training, "sets": sets, "date": written["provenance"]["date"],
    }
    report_json, report_md = models_dir / f"{a.out_stem}.finetune.json", models_dir / f"{a.out_stem}.finetune.md"
    write_files_atomically({report_json: (json.dumps(report, indent=1) + "\n").encode(),
                                     report_md: markdown_report(report).encode()})
    log("\n" + format_report(report) + "\n")
    log(f"wrote {paths[0]} ({len(new_bytes)} bytes), {paths[1]}, {report_md.name}, {report_json.name}")
    if switch is not None:
        backup = apply_config_switch(a.switch_config, switch[0])
        log(f"switched {a.switch_config}: classifier.model: {switch[1]} (old file kept as {backup})")
    else:
        log(f"config unchanged; to use the new model set classifier.model: {paths[1]} (or rerun with --switch-config FILE)")
    step("done")
    return 0


def derived_sidecar(base: Dict[str, Any], base_file: str, base_sha: str, temperature: float, site: Dict[str, Any],
                    training: Dict[str, Any], val_metrics: Dict[str, Any], sets: Dict[str, Any]) -> Dict[str, Any]:
    """The new model's sidecar: the base one with a new temperature, provenance and metrics.

    Files, hashes, tensor dtypes/quantization and the version (a new UTC timestamp) are filled by
    :func:`convert.export.sidecar.write_model_pair`; the base version is kept in ``provenance.base_model``.
    """
    from convert.evaluate import classifier as ev

    side = json.loads(json.dumps(base))
    for k in ("model_file", "model_sha256"):
        side.pop(k, None)
    side["output"]["temperature"] = round(float(temperature), 4)
    prov = dict(base.get("provenance", {}))
    base_crops_info = prov.pop("crops", None)  # what the base model was trained on, kept under base_model
    prov.update({
        "source_model": f"{base_file} (version {base.get('version')}) fine-tuned on site crops by convert/train/finetune.py",
        "source_model_sha256": base_sha,
        "base_model": {"file": base_file, "sha256": base_sha, "version": base.get("version"), "crops": base_crops_info},
        "datasets": list(prov.get("datasets", [])) + ["site crops of one camera (maskwatch collect + label; counts in site_data)"],
        "site_data": site,
        "finetune": training,
        "representative_data": "300 training crops (base and site), normalized as input.normalization",
    })
    side["provenance"] = prov
    metrics = ev.sidecar_metrics(val_metrics)
    if "site held-out" in sets:
        metrics["site_holdout"] = {k: v for k, v in sets["site held-out"]["new"].items() if k != "confusion"}
    side["metrics"] = metrics
    return side


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="maskwatch-convert finetune", description=__doc__.splitlines()[0])
    add_arguments(p)
    a = p.parse_args(argv)
    try:
        return run(a, log=lambda m: print(m, flush=True))
    except ConvertError as exc:
        print(f"maskwatch-convert finetune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; models/ and the config left unchanged", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
