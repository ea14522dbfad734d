"""Which file of a model's variants runs on this host: int8 where it is faster, float16 where it is not.

A sidecar may pin variants of itself (docs/model-contract.md, "Variants"): ``variants.float16 =
{"sidecar": "STEM.fp16.json", "model_sha256": "..."}``. ``runtime.precision`` picks among the named
sidecar and the variants it pins: ``auto`` loads each, invokes them in turn on the model's input
size for :data:`PROBE_S` and keeps the faster; ``int8`` / ``float16`` load that one, untimed. A
sidecar that pins no variants (a variant's own sidecar, a model built by hand) runs as named: a
config naming ``STEM.fp16.json`` gets float16 whatever a timing would say.

Why time instead of reading CPU flags: whether int8 wins depends on the CPU's int8 dot products
(AVX-512 VNNI, AVX-VNNI, ARM's dot product), the runtime's kernels and the model, and one timed
second on the box says it for all three.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from agent.model import Model, ModelError, load_model, precision_of, read_sidecar

PRECISIONS = ("auto", "int8", "float16")  # runtime.precision's values
PROBE_S = 0.5  # timing per model at start-up: the detector and the classifier make about a second
MIN_ROUNDS = 5  # invokes of each variant however slow they are
MAX_ROUNDS = 400  # enough for a stable median on a tiny model
# The named sidecar is kept unless a variant is this much faster: two variants within timing noise
# would otherwise swap from one restart to the next, and with them the scores.
KEEP_NAMED_MARGIN = 0.05

log = logging.getLogger("maskwatch.model")

Loader = Callable[..., Model]


@dataclass
class Choice:
    """The model kept for one sidecar, and why."""

    model: Model
    timings_ms: Dict[str, float]  # precision -> median ms of one invoke; empty when nothing was timed
    reason: str

    def describe(self) -> str:
        """One line for the log, ``check-config`` and ``bench``: what runs, each variant's time, why."""
        m = self.model
        times = ", ".join(f"{p} {ms:.2f} ms" for p, ms in self.timings_ms.items())
        return f"{m.precision} ({m.model_path.name}): {self.reason}" + (f"; median invoke {times}" if times else "")


def candidates(sidecar: Path, meta: Mapping[str, Any]) -> Dict[str, Path]:
    """precision -> sidecar path: the named sidecar first, then each variant it pins."""
    out = {precision_of(meta): sidecar}
    for precision, pin in (meta.get("variants") or {}).items():
        out.setdefault(str(precision), sidecar.parent / str(pin["sidecar"]))
    return out


def load_pinned(sidecar: Path, meta: Mapping[str, Any], precision: str, kind: str, num_threads: int,
                load: Loader = load_model) -> Model:
    """Load the ``precision`` variant ``sidecar`` pins, refusing one whose model is not the pinned build."""
    pin = meta["variants"][precision]
    path = sidecar.parent / str(pin["sidecar"])
    if not path.is_file():  # a pair copied without its variants: say so, not just "not found"
        raise ModelError(f"{path}: missing, pinned by {sidecar} as `variants.{precision}`\n  fix: copy it and its"
                         f" .tflite beside {sidecar.name}, or set runtime.precision: {precision_of(meta)}")
    model = load(path, kind=kind, num_threads=num_threads)
    got = str(model.meta.get("model_sha256", ""))
    if got != pin["model_sha256"]:
        raise ModelError(
            f"{model.model_path}: sha256 {got[:12]}... is not the build {sidecar} pins in"
            f" `variants.{precision}.model_sha256` ({str(pin['model_sha256'])[:12]}...)\n  fix: rebuild the variant"
            f" (maskwatch-convert {precision} --stem {sidecar.stem}) or reinstall models/ as one release"
        )
    if model.precision != precision:
        raise ModelError(f"{model.sidecar_path}: is a {model.precision} model, pinned as `variants.{precision}` in"
                         f" {sidecar}\n  fix: rebuild the variant (maskwatch-convert {precision} --stem {sidecar.stem})")
    return model


def probe_tensor(model: Model) -> np.ndarray:
    """A mid-grey input at the model's input size (what the pixel table makes of 128 in each channel)."""
    shape = [int(v) for v in model.interpreter.get_input_details()[0]["shape"]]
    return np.ascontiguousarray(np.broadcast_to(model.pixel_lut()[128], shape))


def time_invokes(models: Sequence[Model], probe_s: float = PROBE_S,
                 clock: Callable[[], float] = time.perf_counter) -> List[float]:
    """Median ms of one run of each model, run in turn (A B, B A, A B ...) for about ``probe_s``,
    so a load change on the box (another process, frequency scaling) hits them alike."""
    tensors = [probe_tensor(m) for m in models]
    for m, x in zip(models, tensors):  # the first invokes pack weights (XNNPACK): not part of the figure
        m.run_raw(x)
        m.run_raw(x)
    times: List[List[float]] = [[] for _ in models]
    end = clock() + probe_s
    rounds = 0
    while rounds < MIN_ROUNDS or (rounds < MAX_ROUNDS and clock() < end):
        order = range(len(models)) if rounds % 2 == 0 else reversed(range(len(models)))
        for i in order:
            t0 = clock()
            models[i].run_raw(tensors[i])
            times[i].append(clock() - t0)
        rounds += 1
    return [float(np.median(t)) * 1000.0 for t in times]


def choose_model(sidecar: Path | str, kind: str, num_threads: int = 1, precision: str = "auto",
                 probe_s: float = PROBE_S, load: Loader = load_model) -> Choice:
    """The model to run for ``sidecar`` under ``runtime.precision`` (see the module's doc); ``load``
    is :func:`agent.model.load_model` or a stand-in (tests)."""
    path = Path(sidecar)
    meta = read_sidecar(path, kind)
    options = candidates(path, meta)
    named = precision_of(meta)
    if precision != "auto":
        if precision not in options:
            build = f"build it (maskwatch-convert float16 --stem {path.stem}), " if precision == "float16" else ""
            raise ModelError(
                f"{path}: `runtime.precision` is {precision}, but this {kind} has no {precision} variant"
                f" (it has: {', '.join(options)})\n  fix: {build}name a {precision} model's sidecar in the config, or set"
                " runtime.precision: auto"
            )
        model = (load(path, kind=kind, num_threads=num_threads) if precision == named
                 else load_pinned(path, meta, precision, kind, num_threads, load))
        return _chosen(Choice(model, {}, f"runtime.precision: {precision}"))
    if len(options) == 1:
        return _chosen(Choice(load(path, kind=kind, num_threads=num_threads), {}, "the sidecar pins no variants"))
    models = {p: (load(path, kind=kind, num_threads=num_threads) if p == named
                  else load_pinned(path, meta, p, kind, num_threads, load)) for p in options}
    ms = dict(zip(models, time_invokes(list(models.values()), probe_s)))
    fastest = min(ms, key=ms.__getitem__)
    keep_named = fastest != named and ms[fastest] > ms[named] * (1.0 - KEEP_NAMED_MARGIN)
    best = named if keep_named else fastest
    why = f"kept, {fastest} is less than {KEEP_NAMED_MARGIN:.0%} faster" if keep_named else "the fastest"
    w, h = models[best].input_size
    reason = f"auto ({len(ms)} timed for {probe_s:g} s at {w}x{h}, {num_threads} thread(s)): {why}"
    return _chosen(Choice(models[best], ms, reason))


def _chosen(choice: Choice) -> Choice:
    """Record the choice on the model (``check-config`` prints it) and log it: at info when variants
    were timed (the host decided), else at debug (the config did; commands keep stderr quiet)."""
    choice.model.choice = choice.describe()
    log.log(logging.INFO if choice.timings_ms else logging.DEBUG, "%s: %s", choice.model.meta.get("kind", "model"),
            choice.model.choice)
    return choice


def variant_names(sidecar: Path | str, kind: Optional[str] = None) -> Dict[str, str]:
    """precision -> sidecar file name, for reports (``check-config``, ``bench``); nothing is loaded."""
    path = Path(sidecar)
    return {p: v.name for p, v in candidates(path, read_sidecar(path, kind)).items()}


__all__ = ["Choice", "PRECISIONS", "candidates", "choose_model", "load_pinned", "time_invokes", "variant_names"]
