"""``maskwatch label DIR``: sort the crops of a site folder into label folders in a local web page.

One page (agent/tools/label_page.html) on 127.0.0.1 only -- it shows faces -- served by the stdlib's
http.server (agent/tools/label_http.py, imported only when the command runs: every ``maskwatch``
invocation builds this module's parser, and the service must not load http.server and ssl), so
labelling needs no new dependency. The page shows one crop of ``DIR/unlabeled`` at
a time with the model's guess from ``crops.csv``; keys 1-4 (or the buttons) move it into
``DIR/<label>``, ``u`` moves the last one back. Crops are moved (``os.replace`` within DIR), never
copied, and never moved over an existing file.

Every move is appended to ``DIR/label_log.jsonl``: that log is the undo stack, so undo works
across page reloads and restarts.

JSON API (every answer is the page's state, see :meth:`SiteLabeller.state`; errors are
``{"error": message}`` with 400 for a bad file name or label, 409 when a move would overwrite or
there is nothing to undo):

* ``GET /api/next`` -- the crop to label next, the model's guess, counts per label;
* ``POST /api/label`` ``{"file": NAME, "label": LABEL}`` -- file one crop;
* ``POST /api/undo`` -- move the last filed crop back to unlabeled/;
* ``GET /crops/NAME`` -- an unlabeled crop (PNG).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from agent.tools.collect import CROPS_CSV, UNLABELED, SiteError, sigterm_as_interrupt, site_labels
from agent.pipeline.publish.stdout import iso_utc

log = logging.getLogger("maskwatch.label")

LABEL_LOG = "label_log.jsonl"
DEFAULT_PORT = 8089  # the preview uses 8088


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


# --- command -----------------------------------------------------------------------------------


def open_browser(url: str) -> None:
    """Open the page in the desktop's browser, when there is a desktop (a console browser would take
    over the terminal the server prints to)."""
    if sys.platform in ("darwin", "win32") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        import webbrowser

        webbrowser.open(url)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    """The ``label`` subcommand's options (``--config`` is added by the CLI and not used)."""
    sp.description = ("Label the crops of a `maskwatch collect` folder in a local web page (127.0.0.1 only): keys"
                      " 1-4 move the crop on show into DIR/<label>, u undoes the last move.")
    sp.add_argument("dir", metavar="DIR", help="the --out folder of `maskwatch collect`")
    sp.add_argument("--port", metavar="N", default=str(DEFAULT_PORT),
                    help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free port)")
    sp.add_argument("--no-browser", action="store_true", help="only print the URL, do not open a browser")


def run(args: argparse.Namespace) -> int:
    """Serve the page until Ctrl-C (or SIGTERM); exit 0, or 2 on a bad folder or port."""
    try:
        port = int(args.port)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        print(f"maskwatch: --port {args.port!r}: must be a whole number from 0 to 65535", file=sys.stderr)
        return 2
    try:
        from agent.tools.label_http import LabelServer  # http.server only when labelling: not in the service

        server = LabelServer(args.dir, port)
    except SiteError as exc:
        print(f"maskwatch: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"maskwatch: --port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); fix: choose"
              " another --port (0: any free one)", file=sys.stderr)
        return 2
    server.start()
    try:
        with sigterm_as_interrupt():
            left = server.labeller.state()["counts"][UNLABELED]
            print(f"label: {left} crops to label in {server.labeller.path}; open {server.url} (Ctrl-C to stop)",
                  flush=True)
            if not args.no_browser:
                open_browser(server.url)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    left = server.labeller.state()["counts"][UNLABELED]
    done = server.labeller
    print(f"label: filed {done.filed} crops ({done.undone} undone), {left} left in {done.unlabeled}", flush=True)
    return 0


__all__ = ["DEFAULT_PORT", "LABEL_LOG", "LabelError", "SiteLabeller", "add_arguments", "plain_name", "run"]
