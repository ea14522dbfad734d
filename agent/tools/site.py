"""The site folder (docs/site-data.md): what ``maskwatch collect`` writes and ``maskwatch label`` sorts.

:class:`SiteFolder` appends one collect run's crops and rows; :class:`SiteLabeller` moves crops into
label folders and back (no HTTP here: the label command serves it). ``convert``'s finetune reads the
same names.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import secrets
import signal
import threading
import time
from contextlib import contextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

import cv2
import numpy as np

from agent.pipeline.publish.stdout import iso_utc

log = logging.getLogger("maskwatch.label")

# --- the contract (docs/site-data.md); convert's finetune reads the same names
LABELS = ("mask", "incorrect_mask", "no_mask", "not_face")  # label folders, when collect.json names none
UNLABELED = "unlabeled"
CROPS_CSV = "crops.csv"
COLLECT_JSON = "collect.json"
FORMAT = "maskwatch-site-data/1"
CSV_COLUMNS = ["file", "source", "time", "frame", "track", "x1", "y1", "x2", "y2", "face_score", "label", "score",
               *(f"p_{label}" for label in LABELS)]


class SiteError(ValueError):
    """A mistake the user can fix (arguments, a site folder); the message names it and the fix."""



# --- writing: one collect run ------------------------------------------------------------------


def read_collect_json(folder: Path) -> Dict[str, Any]:
    """``DIR/collect.json`` as a dict; {} when there is none yet."""
    path = folder / COLLECT_JSON
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SiteError(f"{path}: not a readable collect.json ({exc}); fix: restore it, or collect into"
                        " another --out") from None
    if not isinstance(meta, dict):
        raise SiteError(f"{path}: not a collect.json (a JSON object); fix: collect into another --out")
    return meta


def site_labels(folder: Path) -> List[str]:
    """The label folders of a site: collect.json's ``labels`` (the classifier's), else :data:`LABELS`."""
    labels = read_collect_json(folder).get("labels")
    return [str(v) for v in labels] if isinstance(labels, list) and labels else list(LABELS)


class SiteFolder:
    """A site folder being written by one collect run (docs/site-data.md).

    :meth:`open` checks that the folder can take this run's crops (same size and crop geometry as
    earlier runs, the same CSV header), picks a run id unused in the folder and records the run in
    collect.json; :meth:`save` writes one crop (exclusive create: never overwrites) and its CSV row.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.unlabeled = self.path / UNLABELED
        self.run = ""
        self.meta: Dict[str, Any] = {}
        self._csv: Optional[TextIO] = None

    @staticmethod
    def check_path(path: Path) -> None:
        """Cheap checks before models load: --out and its unlabeled/ must be (or become) folders."""
        for p, what in ((path, "--out"), (path / UNLABELED, f"--out {path}: {UNLABELED}")):
            if p.exists() and not p.is_dir():
                raise SiteError(f"{what} {p} is a file, not a folder; fix: give a folder path (it is created"
                                " when missing)")

    def open(self, header: Dict[str, Any], run_info: Dict[str, Any]) -> None:
        """Create the folder (if new), check it against earlier runs and record this run.

        ``header``: ``size``, ``crop``, ``labels`` (which must match earlier runs'), ``detector`` and
        ``classifier``; ``run_info``: this run's settings, with its ``source``.
        """
        self.check_path(self.path)
        meta = read_collect_json(self.path)
        where = self.path / COLLECT_JSON
        for key, fix in (("size", f"--size {meta.get('size')}"), ("crop", "the classifier the earlier runs used"),
                         ("labels", "the classifier the earlier runs used")):
            if key in meta and meta[key] != header[key]:
                raise SiteError(f"{where}: earlier runs have {key} {meta[key]}, this one would have"
                                f" {header[key]}; the crops of one folder must match; fix: use {fix}, or"
                                " another --out")
        csv_path = self.path / CROPS_CSV
        try:
            self.unlabeled.mkdir(parents=True, exist_ok=True)
            if csv_path.exists() and csv_path.stat().st_size > 0:
                with open(csv_path, newline="", encoding="utf-8") as fh:
                    found = next(csv.reader(fh), [])
                if found != CSV_COLUMNS:
                    raise SiteError(f"{csv_path}:1: header is not {','.join(CSV_COLUMNS)}; fix: restore it, or"
                                    " collect into another --out")
            self.run = self._new_run_id(meta)
            self._csv = open(csv_path, "a", newline="", encoding="utf-8")
            if self._csv.tell() == 0:
                csv.writer(self._csv).writerow(CSV_COLUMNS)
                self._csv.flush()
        except OSError as exc:
            raise SiteError(f"--out {self.path}: cannot write there ({exc.strerror or exc}); fix: choose a"
                            " folder you can write") from None
        sources = list(meta.get("sources", []))
        if run_info["source"] not in sources:
            sources.append(run_info["source"])
        runs = [*meta.get("runs", []), {"run": self.run, **run_info,
                                        "detector": header["detector"], "classifier": header["classifier"]}]
        self.meta = {"format": FORMAT, **header, "sources": sources, "runs": runs}
        self.write_meta()

    def _new_run_id(self, meta: Dict[str, Any]) -> str:
        """A short id no earlier run and no file in the folder uses."""
        taken = {str(r.get("run")) for r in meta.get("runs", []) if isinstance(r, dict)}
        names = [p.name for sub in self.path.iterdir() if sub.is_dir() for p in sub.iterdir()]
        while True:
            run = secrets.token_hex(3)
            if run not in taken and not any(n.startswith(run + "_") for n in names):
                return run

    def write_meta(self) -> None:
        """Replace collect.json atomically (a crash leaves the old or the new one, never half)."""
        tmp = self.path / f".{COLLECT_JSON}.{self.run}.tmp"
        tmp.write_text(json.dumps(self.meta, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.path / COLLECT_JSON)

    def finish_run(self, fields: Dict[str, Any]) -> None:
        """Record this run's outcome in collect.json."""
        self.meta["runs"][-1].update(fields)
        self.write_meta()

    def save(self, name: str, crop: np.ndarray, row: Sequence[Any]) -> None:
        """Write ``unlabeled/name`` (lossless PNG, never over an existing file), then its CSV row."""
        ok, png = cv2.imencode(".png", crop)
        if not ok:
            raise SiteError(f"{name}: OpenCV could not encode the crop as PNG")
        try:
            with open(self.unlabeled / name, "xb") as fh:
                fh.write(png.tobytes())
        except FileExistsError:
            raise SiteError(f"{self.unlabeled / name}: already exists (another collect into the same --out?);"
                            " fix: run one collect per folder at a time") from None
        assert self._csv is not None
        csv.writer(self._csv).writerow(row)
        self._csv.flush()  # rows on disk as crops are: Ctrl-C or a crash leaves them in step

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = None



@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM (systemctl stop, a container stopping) acts as Ctrl-C does, so the
    site commands stop cleanly either way. Only the main thread can set handlers: elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)



# --- sorting: the labelling of one folder ------------------------------------------------------

LABEL_LOG = "label_log.jsonl"


class LabelError(ValueError):
    """A request that cannot be done; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = int(status)


def plain_name(name: Any) -> bool:
    """True for a bare crop file name (``x.png``): no folder part, no hidden file, no traversal."""
    return (isinstance(name, str) and 0 < len(name) <= 255 and name.endswith(".png") and not name.startswith(".")
            and "/" not in name and "\\" not in name and "\0" not in name and os.path.basename(name) == name)


class SiteLabeller:
    """The labelling of one site folder, without HTTP: what to show next, file, undo.

    Thread-safe (the server answers requests in threads). The undo stack is rebuilt from
    ``label_log.jsonl`` at start and kept in step with it.
    """

    def __init__(self, folder: os.PathLike | str) -> None:
        self.path = Path(folder)
        self.unlabeled = self.path / UNLABELED
        if not self.path.is_dir():
            raise SiteError(f"{self.path}: no such folder; fix: give the --out folder of `maskwatch collect`")
        if not self.unlabeled.is_dir():
            raise SiteError(f"{self.path}: has no {UNLABELED}/ folder, so it was not made by `maskwatch collect`;"
                            " fix: give the --out folder of `maskwatch collect`")
        self.labels: List[str] = site_labels(self.path)
        self.log_path = self.path / LABEL_LOG
        self._lock = threading.RLock()  # state() is also called with it held
        self._stack: List[Tuple[str, str]] = self._replay_log()  # (file, label), last filed last
        self._rows: Dict[str, Dict[str, str]] = {}
        self._order: Dict[str, int] = {}
        self._csv_stamp: Optional[Tuple[float, int]] = None
        self.filed = 0  # crops filed by this labeller
        self.undone = 0  # filings it moved back

    # --- state -----------------------------------------------------------------------------

    def _replay_log(self) -> List[Tuple[str, str]]:
        stack: List[Tuple[str, str]] = []
        if not self.log_path.exists():
            return stack
        with open(self.log_path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                try:
                    entry = json.loads(line)
                    action, item = entry["action"], (str(entry["file"]), str(entry["label"]))
                except (ValueError, KeyError, TypeError):
                    log.warning("%s:%d: unreadable line skipped", self.log_path, n)  # e.g. cut by a crash
                    continue
                if action == "label":
                    stack.append(item)
                elif action == "undo" and item in stack:
                    del stack[len(stack) - 1 - stack[::-1].index(item)]
        return stack

    def _load_rows(self) -> None:
        """crops.csv by file name (re-read when it changed: a collect may still be appending)."""
        path = self.path / CROPS_CSV
        try:
            st = path.stat()
        except OSError:
            return
        if self._csv_stamp == (st.st_mtime, st.st_size):
            return
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("file")]
        self._rows = {r["file"]: r for r in rows}
        self._order = {r["file"]: i for i, r in enumerate(rows)}
        self._csv_stamp = (st.st_mtime, st.st_size)

    def _waiting(self) -> List[str]:
        """Unlabeled crops in the order collect saved them (others after, by name)."""
        names = [p.name for p in self.unlabeled.iterdir() if plain_name(p.name) and p.is_file()]
        return sorted(names, key=lambda n: (self._order.get(n, len(self._order)), n))

    def _count(self, folder: Path) -> int:
        return sum(1 for p in folder.iterdir() if plain_name(p.name)) if folder.is_dir() else 0

    def state(self, show: Optional[str] = None, message: str = "") -> Dict[str, Any]:
        """What the page shows: ``file`` (None when nothing is left; ``show`` when it is still
        waiting), ``guess`` (``label``, ``score`` from crops.csv, or None), ``counts`` per label and
        ``unlabeled``, ``labels`` in key order, ``undo`` (the filing ``u`` would undo, or None)."""
        with self._lock:
            return self._state(show, message)

    def _state(self, show: Optional[str], message: str) -> Dict[str, Any]:
        self._load_rows()
        waiting = self._waiting()
        file = show if show in waiting else (waiting[0] if waiting else None)
        row = self._rows.get(file or "")
        guess = None
        if row and row.get("label"):
            try:
                score: Optional[float] = float(row.get("score") or "")
            except ValueError:
                score = None  # (JSON has no NaN)
            guess = {"label": row["label"], "score": score}
        counts = {label: self._count(self.path / label) for label in self.labels}
        counts[UNLABELED] = len(waiting)
        last = self._stack[-1] if self._stack else None
        return {"file": file, "image": f"/crops/{file}" if file else None, "guess": guess, "counts": counts,
                "labels": self.labels, "folder": str(self.path), "message": message,
                "undo": {"file": last[0], "label": last[1]} if last else None}

    # --- actions ---------------------------------------------------------------------------

    def crop_path(self, name: Any) -> Path:
        """``unlabeled/name`` for a plain name that is there; LabelError (400) otherwise."""
        if not plain_name(name):
            raise LabelError(f"file {name!r}: must be a plain crop file name (x.png) from {UNLABELED}/")
        path = self.unlabeled / name
        if not path.is_file():
            raise LabelError(f"file {name!r}: not in {UNLABELED}/ (already labelled?)")
        return path

    def _append_log(self, action: str, file: str, label: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"time": iso_utc(time.time()), "action": action, "file": file, "label": label}) + "\n")

    def _move(self, src: Path, dst: Path) -> None:
        """Move a crop within the site folder (a rename: nothing is copied)."""
        try:
            dst.parent.mkdir(exist_ok=True)
            os.replace(src, dst)
        except OSError as exc:  # a label "folder" that is a file, a read-only disk
            raise LabelError(f"cannot move {src.name} to {dst.parent.name}/ ({exc.strerror or exc})",
                             HTTPStatus.INTERNAL_SERVER_ERROR) from None

    def label(self, file: Any, label: Any) -> Dict[str, Any]:
        """Move ``unlabeled/file`` into ``label/``; returns the new state."""
        with self._lock:
            if label not in self.labels:
                raise LabelError(f"label {label!r}: unknown; expected one of {', '.join(self.labels)}")
            src = self.crop_path(file)
            dst_dir = self.path / label
            dst = dst_dir / file
            if dst.exists():
                raise LabelError(f"{label}/{file} already exists; not overwritten", HTTPStatus.CONFLICT)
            self._move(src, dst)
            self._append_log("label", file, label)
            self._stack.append((file, label))
            self.filed += 1
            return self.state(message=f"{file} -> {label}")

    def undo(self) -> Dict[str, Any]:
        """Move the last filed crop back to unlabeled/; the state then shows it again."""
        with self._lock:
            if not self._stack:
                raise LabelError("nothing to undo", HTTPStatus.CONFLICT)
            file, label = self._stack[-1]
            src, dst = self.path / label / file, self.unlabeled / file
            if dst.exists():
                raise LabelError(f"{UNLABELED}/{file} already exists; not overwritten", HTTPStatus.CONFLICT)
            self._stack.pop()
            self._append_log("undo", file, label)
            if not src.is_file():  # moved away by hand: drop it from the stack, so the next u goes on
                raise LabelError(f"{label}/{file} is gone; nothing moved", HTTPStatus.CONFLICT)
            self._move(src, dst)
            self.undone += 1
            return self.state(show=file, message=f"{file} back from {label}")


__all__ = ["COLLECT_JSON", "CROPS_CSV", "CSV_COLUMNS", "FORMAT", "LABELS", "LABEL_LOG", "LabelError", "SiteError",
           "SiteFolder", "SiteLabeller", "UNLABELED", "plain_name", "read_collect_json", "sigterm_as_interrupt",
           "site_labels"]
