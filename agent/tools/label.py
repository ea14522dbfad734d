"""``maskwatch label DIR``: sort the crops of a site folder into label folders in a local web page.

One page (agent/tools/label_page.html) on 127.0.0.1 only -- it shows faces -- served by the stdlib's
http.server (agent/tools/label_http.py, imported only when the command runs: ``maskwatch --help``
builds this module's parser, and only labelling should load http.server and ssl), so
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
import os
import sys
import time

from agent.tools.site import UNLABELED, SiteError, sigterm_as_interrupt

DEFAULT_PORT = 8089  # the preview uses 8088


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


__all__ = ["DEFAULT_PORT", "add_arguments", "open_browser", "run"]
