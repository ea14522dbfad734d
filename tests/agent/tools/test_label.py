"""``maskwatch label``: the JSON API (file, undo, refusals, nothing lost), the command's exit codes,
and the page itself in a real headless Chromium (keys 1, 3, 4, u, 2 and a button click)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
import pytest

from agent.cli import main
from agent.tools.collect import csv_row
from agent.tools.site import LABEL_LOG, SiteFolder
from agent.tools.label_http import LabelServer
from agent.types import Face, Frame
from tests.browser import LabelPage, chromium_driver, skip_reason

LABELS = ["mask", "incorrect_mask", "no_mask", "not_face"]
GUESSES = ["no_mask", "mask", "incorrect_mask", "not_face", "no_mask"]


def make_site(folder: Path, n: int = 4) -> List[str]:
    """A site folder as ``maskwatch collect`` writes it (through its own writer), with ``n`` real
    PNG crops and their crops.csv rows, without running the models; returns the names in order."""
    site = SiteFolder(folder)
    model = {"name": "test", "version": "1", "sha256": "0" * 64}
    site.open({"size": 32, "crop": {"scale": 1.3, "align": "eyes", "shift_y": 0.0}, "labels": LABELS,
               "detector": model, "classifier": model}, {"source": "clip.avi"})
    names = []
    image = np.zeros((120, 160, 3), np.uint8)
    for i in range(n):
        crop = np.full((32, 32, 3), 40 * i + 20, np.uint8)
        cv2.putText(crop, str(i), (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        label = GUESSES[i % len(GUESSES)]
        scores = {lab: (0.7 if lab == label else 0.1) for lab in LABELS}
        face = Face((10.0, 10.0, 50.0, 50.0), 0.9, label=label, score=0.7, scores=scores)
        name = f"{site.run}_t{i + 1}_f{10 + i}.png"
        site.save(name, crop, csv_row(name, "clip.avi", Frame(image, time.time(), 10 + i), i + 1, face))
        names.append(name)
    site.close()
    return names


def where(folder: Path) -> Dict[str, str]:
    """Every crop of the folder -> the subfolder it lies in."""
    return {p.name: sub.name for sub in folder.iterdir() if sub.is_dir() for p in sub.iterdir()}


def call(server: LabelServer, path: str, body: Optional[Dict[str, Any]] = None,
         headers: Optional[Dict[str, str]] = None) -> Tuple[int, Any]:
    """(status, decoded JSON) of a GET (no body) or a JSON POST."""
    data = None if body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(server.url + path.lstrip("/"), data=data, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    return status, json.loads(raw) if raw.startswith(b"{") else raw


@pytest.fixture
def site(tmp_path):
    folder = tmp_path / "site"
    return folder, make_site(folder)


def test_label_and_undo_move_files_and_lose_nothing(site):
    folder, (a, b, c, d) = site
    with LabelServer(folder) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.port > 0
        status, s = call(server, "/api/next")
        assert status == 200 and s["file"] == a and s["guess"] == {"label": "no_mask", "score": 0.7}
        assert s["labels"] == LABELS and s["counts"] == {**{k: 0 for k in LABELS}, "unlabeled": 4}
        assert s["undo"] is None
        status, png = call(server, s["image"])
        assert status == 200 and cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape == (32, 32, 3)

        status, s = call(server, "/api/label", {"file": a, "label": "mask"})
        assert status == 200 and s["file"] == b and s["guess"]["label"] == "mask"
        status, s = call(server, "/api/label", {"file": b, "label": "no_mask"})
        assert s["counts"] == {"mask": 1, "incorrect_mask": 0, "no_mask": 1, "not_face": 0, "unlabeled": 2}
        assert where(folder) == {a: "mask", b: "no_mask", c: "unlabeled", d: "unlabeled"}
        assert s["undo"] == {"file": b, "label": "no_mask"}

        status, s = call(server, "/api/undo", {})
        assert status == 200 and s["file"] == b and where(folder)[b] == "unlabeled"  # shown again
        status, s = call(server, "/api/label", {"file": b, "label": "not_face"})
        assert where(folder) == {a: "mask", b: "not_face", c: "unlabeled", d: "unlabeled"}

    # The undo stack is the log: it outlives the server.
    log = [json.loads(line) for line in (folder / LABEL_LOG).read_text().splitlines()]
    assert [(e["action"], e["file"], e["label"]) for e in log] == [
        ("label", a, "mask"), ("label", b, "no_mask"), ("undo", b, "no_mask"), ("label", b, "not_face")]
    with LabelServer(folder) as server:
        assert call(server, "/api/next")[1]["undo"] == {"file": b, "label": "not_face"}
        assert call(server, "/api/undo", {})[1]["file"] == b
        assert call(server, "/api/undo", {})[1]["file"] == a
        status, s = call(server, "/api/undo", {})
        assert status == 409 and "nothing to undo" in s["error"]
        assert where(folder) == dict.fromkeys((a, b, c, d), "unlabeled")

        for name in (a, b, c, d):
            call(server, "/api/label", {"file": name, "label": "mask"})
        status, s = call(server, "/api/next")
        assert s["file"] is None and s["image"] is None and s["counts"]["mask"] == 4 and s["counts"]["unlabeled"] == 0
    assert sorted(where(folder)) == sorted((a, b, c, d))  # moved, never copied or lost


@pytest.mark.parametrize("file", ["../crops.csv", "../collect.json", "/etc/passwd", "mask/x.png", "..", ".hidden.png",
                                  "a\\b.png", "gone.png", 7, None])
def test_bad_file_names_are_refused(site, file):
    folder, names = site
    with LabelServer(folder) as server:
        status, s = call(server, "/api/label", {"file": file, "label": "mask"})
    assert status == 400 and "file" in s["error"]
    assert where(folder) == dict.fromkeys(names, "unlabeled") and not (folder / "mask").exists()


def test_unknown_label_overwrite_and_bad_requests_are_refused(site):
    folder, (a, b, *_) = site
    with LabelServer(folder) as server:
        status, s = call(server, "/api/label", {"file": a, "label": "cat"})
        assert status == 400 and "'cat'" in s["error"] and "mask, incorrect_mask, no_mask, not_face" in s["error"]
        for label in ("unlabeled", "..", ""):
            assert call(server, "/api/label", {"file": a, "label": label})[0] == 400
        # A crop already filed under that name is never overwritten.
        (folder / "mask").mkdir()
        (folder / "mask" / a).write_bytes(b"earlier")
        status, s = call(server, "/api/label", {"file": a, "label": "mask"})
        assert status == 409 and (folder / "mask" / a).read_bytes() == b"earlier" and (folder / "unlabeled" / a).exists()
        # JSON only (a cross-site form cannot post here), our Host only (DNS rebinding).
        assert call(server, "/api/label", headers={"Content-Type": "text/plain"}, body={"file": b})[0] == 415
        req = urllib.request.Request(server.url + "api/label", data=b"{not json", headers={"Content-Type":
                                     "application/json"})
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=5)
        assert exc.value.code == 400
        assert call(server, "/api/next", headers={"Host": "evil.example:80"})[0] == 403
        assert call(server, "/crops/..%2Fcrops.csv")[0] == 404
        assert call(server, "/nothing")[0] == 404
    assert (folder / "unlabeled" / a).is_file() and (folder / "unlabeled" / b).is_file()


def test_command_errors_exit_2(capsys, tmp_path, site):
    folder, _ = site
    (tmp_path / "plain").mkdir()
    for args, words in ((["label", str(tmp_path / "missing")], ["missing: no such folder", "fix:"]),
                        (["label", str(tmp_path / "plain")], ["plain: has no unlabeled/ folder", "fix:"]),
                        (["label", str(folder), "--port", "70000"], ["--port '70000'"])):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("maskwatch: ") and err.count("\n") == 1 and all(w in err for w in words), err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["label", str(folder), "--port", str(busy.getsockname()[1]), "--no-browser"]) == 2
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


def test_command_prints_the_url_and_stops_on_ctrl_c(site, repo_root):
    folder, names = site
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "label", str(folder), "--port", "0", "--no-browser"],
                            cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"open (http://127\.0\.0\.1:\d+/)", line).group(1)
        assert "4 crops to label" in line
        with urllib.request.urlopen(url + "api/next", timeout=5) as r:
            assert json.load(r)["file"] == names[0]
        with urllib.request.urlopen(url, timeout=5) as r:
            assert b"maskwatch label" in r.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err and "filed 0 crops (0 undone), 4 left" in out


def test_page_in_chromium_keys_and_buttons(site, tmp_path):
    """The real page: keys 1, 3, 4, u, 2 then the 'not face' button file four crops as expected."""
    if skip_reason():
        pytest.skip(skip_reason())
    from selenium.webdriver.common.by import By

    folder, (a, b, c, d) = site
    with LabelServer(folder) as server, chromium_driver(tmp_path) as driver:
        page = LabelPage(driver, server.url)
        page.wait_loaded()
        first = page.shown()
        assert first["file"] == a and first["guess"] == "model: no_mask 0.70" and not first["done"]
        assert first["loaded"] == 32 and first["counts"] == {"unlabeled": 4, **{k: 0 for k in LABELS}}

        steps = [("1", {a: "mask"}, b), ("3", {b: "no_mask"}, c), ("4", {c: "not_face"}, d),
                 ("u", {c: "unlabeled"}, c), ("2", {c: "incorrect_mask"}, d)]
        expect = dict.fromkeys((a, b, c, d), "unlabeled")
        for key, moved, next_file in steps:
            page.press(key)
            expect.update(moved)
            assert where(folder) == expect, f"after key {key}"
            assert page.shown()["file"] == next_file, f"after key {key}"
        now = page.shown()
        assert now["counts"] == {"unlabeled": 1, "mask": 1, "incorrect_mask": 1, "no_mask": 1, "not_face": 0}
        assert "model: not_face" in now["guess"] and c in now["message"]

        page.click("not_face")
        assert where(folder) == {a: "mask", b: "no_mask", c: "incorrect_mask", d: "not_face"}
        done = page.shown()
        assert done["done"] and done["counts"]["unlabeled"] == 0
        assert "Nothing left to label" in driver.find_element(By.ID, "done").text

        # A reload keeps the undo stack (it is the log on disk): u brings the last crop back.
        page.reload()
        page.press("u")
        assert where(folder)[d] == "unlabeled" and page.shown()["file"] == d


def test_building_the_cli_does_not_load_http_server():
    """Every `maskwatch` start (the service too) builds the label command's parser: the page's
    http.server and ssl are loaded only when labelling (~7 MB of RSS on a 120 MB budget)."""
    code = ("import sys, agent.cli; agent.cli.parser(); "
            "print(sorted(m for m in ('http.server', 'ssl', 'agent.tools.label_http') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[3])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
