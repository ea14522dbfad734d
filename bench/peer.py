"""maskwatch against the peer (AIZOO FaceMaskDetection, ../shared/peers/aizoo) on the same images, in one run.

Not a test: prints figures. Both run at 1 thread on the same annotated images (default: the
scenes-ilc2021 val split), each timed the way it times itself (the peer: preprocess + invoke +
decode + NMS per image; maskwatch: `maskwatch detect --json`'s `ms.total`, detect + classify per
image, reading the file excluded for both), and both are scored by `maskwatch evaluate`'s own rules
(faces >= 40 px, IoU >= 0.5; the peer has no incorrect_mask class, so its NoMask stands for both
unmasked labels). Then the detector alone: the configured detector's invoke against another one
(default the former BlazeFace `face_detector_door`), interleaved, as a ratio.

    python bench/peer.py [--config config.yaml] [--split val] [--limit N] [--rounds 3] [--against models/X.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PEER = SHARED / "peers" / "aizoo"
SCENES = SHARED / "datasets" / "scenes-ilc2021"


def run_json(cmd: Sequence[str]) -> Tuple[List[Dict[str, Any]], str]:
    """(JSON lines on stdout, stderr) of a command; exits with its message if it fails."""
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if r.returncode not in (0, 1):
        sys.exit(f"{cmd[0]} {cmd[1]} failed ({r.returncode}): {r.stderr[-2000:]}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")], r.stderr


def peer_ms(stderr: str) -> float:
    """The peer's own 'N ms/image' figure from its stderr."""
    for line in stderr.splitlines():
        if line.startswith("aizoo:") and "ms/image" in line:
            return float(line.split(",")[1].split("ms/image")[0])
    sys.exit(f"the peer printed no timing: {stderr[-500:]}")


def score(preds: Sequence[Dict[str, Any]], boxes: Dict[str, Any]) -> Dict[str, Any]:
    """``maskwatch evaluate``'s summary of JSON predictions (one object per image)."""
    from agent.tools.evaluate import summarize
    from agent.tools.scoring import score_image

    per_image = {}
    for obj in preds:
        faces = [{**f, "face_score": f.get("face_score", f.get("score", 0.0))} for f in obj.get("faces", [])]
        per_image[Path(obj["image"]).name] = score_image(faces, boxes[Path(obj["image"]).name])
    return summarize(per_image)


def invoke_ms(sidecars: Sequence[str], rounds: int = 3, invokes: int = 200) -> Dict[str, List[float]]:
    """Median invoke time of each model (1 thread, zero input), the models interleaved round by round."""
    from agent.model import load_model

    models = {s: load_model(s, num_threads=1) for s in sidecars}
    out: Dict[str, List[float]] = {s: [] for s in sidecars}
    for _ in range(rounds):
        for s, m in models.items():
            d = m.interpreter.get_input_details()[0]
            m.interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
            for _ in range(20):
                m.interpreter.invoke()
            times = []
            for _ in range(invokes):
                t = time.perf_counter()
                m.interpreter.invoke()
                times.append((time.perf_counter() - t) * 1e3)
            out[s].append(statistics.median(times))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "config.yaml"))
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=0, help="only the first N images of the split")
    p.add_argument("--rounds", type=int, default=3, help="runs of each, alternating which goes first")
    p.add_argument("--against", default=str(REPO / "models" / "face_detector_door.json"),
                   help="detector sidecar whose invoke time the configured detector's is divided by")
    a = p.parse_args()
    from agent.config import load_config
    from agent.tools.annotations import load as load_boxes
    from agent.tools.evaluate import load_split

    boxes = load_boxes(str(SCENES / "boxes.csv"))
    names = [n for n in load_split(str(SCENES / "images.csv"), a.split) if n in boxes]
    if a.limit:
        names = names[: a.limit]
    paths = [str(SCENES / "images" / n) for n in names]
    cfg = load_config(a.config)
    if cfg.runtime.num_threads != 1:
        sys.exit(f"{a.config}: runtime.num_threads is {cfg.runtime.num_threads}; the comparison is at 1 thread")

    peer_cmd = [sys.executable, str(PEER / "run.py"), str(PEER / "face_mask_detection.tflite"), *paths]
    ours_cmd = [sys.executable, "-m", "agent.cli", "detect", "--json", "--config", a.config, *paths]
    # Rounds alternate which runs first, so a change of load on a shared host falls on both alike;
    # the ratio reported is the median of the rounds' ratios.
    times: Dict[str, List[float]] = {"maskwatch": [], "peer (AIZOO)": []}
    for r in range(a.rounds):
        for who in (("peer (AIZOO)", "maskwatch") if r % 2 == 0 else ("maskwatch", "peer (AIZOO)")):
            if who == "maskwatch":
                ours, _ = run_json(ours_cmd)
                times[who].append(statistics.mean(o["ms"]["total"] for o in ours if "ms" in o))
            else:
                peer_preds, peer_err = run_json(peer_cmd)
                times[who].append(peer_ms(peer_err))
    rows = {"maskwatch": (score(ours, boxes), statistics.median(times["maskwatch"])),
            "peer (AIZOO)": (score(peer_preds, boxes), statistics.median(times["peer (AIZOO)"]))}

    print(f"{len(paths)} {a.split} images of scenes-ilc2021, faces >= 40 px, IoU >= 0.5, 1 thread")
    print(f"  {'':<14}{'masked found':>14}{'unmasked found':>16}{'unmasked caught':>17}{'masked alerted':>16}"
          f"{'spurious/img':>14}{'ms/image':>10}")
    for name, (s, ms) in rows.items():
        g = s["min_size_faces"]
        unmasked_found = g["incorrect_mask"]["found"] + g["no_mask"]["found"]
        unmasked = g["incorrect_mask"]["faces"] + g["no_mask"]["faces"]
        print(f"  {name:<14}{g['mask']['found_pct']:>13.1f}%{100 * unmasked_found / max(unmasked, 1):>15.1f}%"
              f"{g['unmasked_caught']['pct']:>16.1f}%{g['masked_falsely_alerted']['pct']:>15.1f}%"
              f"{s['spurious_per_image']:>14.2f}{ms:>10.2f}")
    ratios = [m / q for m, q in zip(times["maskwatch"], times["peer (AIZOO)"])]
    ratio = statistics.median(ratios)
    print(f"  maskwatch / peer time per image: {ratio:.3f} (1/{1 / ratio:.1f}), median of {a.rounds} alternating"
          f" rounds: {', '.join(f'{m:.2f}/{q:.2f} ms' for m, q in zip(times['maskwatch'], times['peer (AIZOO)']))}")

    det = cfg.detector.model
    times = invoke_ms([det, a.against])
    med = {k: statistics.median(v) for k, v in times.items()}
    print("detector invoke, 1 thread, median of 3 interleaved rounds x 200 (zero input):")
    for k, v in times.items():
        print(f"  {Path(k).stem:<24}{med[k]:.3f} ms  (rounds {', '.join(f'{x:.3f}' for x in v)})")
    print(f"  {Path(det).stem} / {Path(a.against).stem}: {med[det] / med[a.against]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
