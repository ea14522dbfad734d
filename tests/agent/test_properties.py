"""Property tests: whatever a user writes in the config and whatever a camera hands over, the agent
answers with a clean result or a clean refusal, never a traceback.

* config: random YAML mappings shaped like the real sections (right keys, wrong keys, right and
  wrong types, odd values) and random text -> a ``Config`` or a ``ConfigError`` naming the file,
  a key path and a fix;
* frames: random shapes, dtypes, channel counts, memory layouts, empty and huge arrays -> the
  source normaliser gives BGR uint8 (H, W, 3) or a counted skip, and the detector prepares and
  runs on every frame it gives.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any, Dict

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import Config, ConfigError, parse
from agent.pipeline.source import SourceCounters, normalize_image

FILE = "prop.yaml"
# Where an error message starts: the file, maybe its line; then a key path in backticks or a YAML problem.
ERROR_HEAD = re.compile(rf"^{re.escape(FILE)}(:\d+)?: (`.*?`: |not valid YAML: )", re.S)

# --- config ----------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.integers(), st.floats(allow_nan=True),
    _text, st.sampled_from(["0", "yes", "~", "models/x.json", "/dev/video0", "rtsp://cam/1", "picamera2", ""]),
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner,
                                                                                          max_size=3), max_leaves=8)


def _for_type(tp: Any) -> st.SearchStrategy:
    """Mostly values of the field's own type (to reach each section's range checks), sometimes anything."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)][0]
        return st.one_of(st.none(), _for_type(inner))
    if tp is bool:
        right: st.SearchStrategy = st.booleans()
    elif tp is int:
        right = st.integers(-5, 70000) | st.integers()
    elif tp is float:
        right = st.floats(-10, 1e5) | st.floats(allow_nan=True) | st.integers(-3, 100)
    elif tp is str:
        right = _text | st.sampled_from(["models/face_detector.json", "0", "a/b", "~/x", "*.jpg", "\0/x"])
    elif origin is typing.Literal:
        right = st.sampled_from(args) | _text
    elif origin in (list, typing.List):
        right = st.lists(_for_type(args[0]), max_size=5)
    elif origin in (dict, typing.Dict):
        right = st.dictionaries(_text, _for_type(args[1]), max_size=3)
    elif dataclasses.is_dataclass(tp):
        right = _section(tp)
    else:
        right = _values
    return st.one_of(right, right, right, _values)  # 3 in 4 of the right kind


def _section(cls: type) -> st.SearchStrategy:
    """A mapping for a config dataclass: a random subset of its keys, sometimes an unknown one."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")]
    known = st.fixed_dictionaries({}, optional={n: st.deferred(lambda n=n: _for_type(hints[n])) for n in names})
    unknown = st.dictionaries(_text, _values, max_size=1)
    return st.tuples(known, unknown, st.booleans()).map(lambda t: {**t[0], **t[1]} if t[2] else t[0])


def _check(text: str) -> None:
    try:
        cfg = parse(text, FILE)
    except ConfigError as exc:
        msg = str(exc)
        assert ERROR_HEAD.match(msg), msg
        assert "\n  fix: " in msg, msg
        assert "Traceback" not in msg
    else:
        assert isinstance(cfg, Config) and cfg.source_file == FILE


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_section(Config))
def test_config_mappings_load_or_fail_cleanly(data: Dict[str, Any]):
    _check(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=100, deadline=None)
@given(st.one_of(_values, st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(Config)]), _values,
                                          max_size=3)))
def test_any_yaml_value_loads_or_fails_cleanly(data: Any):
    _check(yaml.safe_dump(data, allow_unicode=True))


_TOKENS = list("ab: -\n\t[]{}#&*!|>'\"%@`,?~0.") + ["detector", "runtime", "min_score", "\\x00", "\\", "  "]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=30).map("".join))
def test_any_text_loads_or_fails_cleanly(text: str):
    _check(text)


def test_overlong_path_is_a_config_error_not_a_traceback():
    """A name over 255 bytes (ENAMETOOLONG from the existence check) is just "not a file"."""
    _check(yaml.safe_dump({"classifier": {"model": "x" * 300 + "/y.json"}}))


# --- frames ----------------------------------------------------------------------------------

SKIP_REASONS = {"empty", "bad_shape", "too_large", "bad_dtype", "bad_values"}
DTYPES = [np.uint8, np.uint16, np.float32, np.bool_, np.float64, np.int8, np.int32, np.float16]


@st.composite
def frames(draw, usable: bool = False) -> np.ndarray:
    """Arrays a camera driver or an image file could plausibly (or implausibly) hand over.

    ``usable``: only 2-D or 3-D images of 2-300 px with 1, 3 or 4 channels (still any dtype and layout).
    """
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if not usable and draw(st.integers(0, 9)) == 0:  # huge: a zero-stride view, no memory behind it
        h, w = draw(st.integers(5000, 100_000)), draw(st.integers(5000, 100_000))
        shape: tuple = (h, w) + draw(st.sampled_from([(), (1,), (3,), (4,)]))
        return np.broadcast_to(np.zeros((), dtype), shape)
    if usable:
        shape = (draw(st.integers(2, 300)), draw(st.integers(2, 300))) + draw(st.sampled_from([(), (1,), (3,), (4,)]))
    else:
        shape = tuple(draw(st.integers(0, 48)) for _ in range(draw(st.integers(0, 4))))
    if len(shape) == 3 and not usable and draw(st.booleans()):
        shape = shape[:2] + (draw(st.integers(1, 4)),)  # the usual channel counts, more often
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fill = draw(st.sampled_from(["random", "zeros", "extreme", "nan"]))
    if dtype.kind == "b":
        a = rng.random(shape) > 0.5
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    else:
        with np.errstate(over="ignore"):  # float16 * 1e6 saturates to inf: one more odd input
            a = rng.standard_normal(shape).astype(dtype) * (1e6 if fill == "extreme" else 1.0)
        if fill == "nan" and a.size:
            a.flat[rng.integers(0, a.size)] = np.nan
    if fill == "zeros":
        a = np.zeros(shape, dtype)
    if a.ndim >= 2 and a.shape[0] > 1 and a.shape[1] > 1:  # camera buffers are not always contiguous
        layout = draw(st.sampled_from(["c", "step", "transposed", "flipped"]))
        if layout == "step":
            a = a[::2, ::2]
        elif layout == "transposed":
            a = a.swapaxes(0, 1)
        elif layout == "flipped":
            a = a[::-1]
    return a


@settings(max_examples=200, deadline=None)
@given(frames(), st.sampled_from([40_000_000, 2_000, 100_000]))
def test_frame_normaliser_gives_bgr_uint8_or_a_counted_skip(image: np.ndarray, max_pixels: int):
    counters = SourceCounters()
    out = normalize_image(image, counters, max_pixels)
    if out is None:
        assert sum(counters.skipped.values()) == 1 and set(counters.skipped) <= SKIP_REASONS, counters.skipped
        return
    assert not counters.skipped
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[:2] == image.shape[:2] and out.shape[0] * out.shape[1] <= max_pixels


@pytest.fixture(scope="module")
def detector(detector_json):
    from agent.pipeline.detect import DetectorConfig, FaceDetector

    return FaceDetector(DetectorConfig(model=str(detector_json)))


def test_detector_prepares_and_runs_on_every_normalised_frame(detector):
    # Hypothesis in a helper: a module fixture cannot feed @given directly.
    ran = []

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(frames(usable=True))
    def check(image: np.ndarray) -> None:
        frame = normalize_image(image, SourceCounters(), 100_000)
        if frame is None:
            return
        ran.append(frame.shape)
        tensor, lb = detector.prepare(frame)
        w, h = detector.input_size(frame.shape[1], frame.shape[0])  # an adaptive model's, or the sidecar's
        assert tensor.shape == (1, h, w, 3) and w <= detector.width and h <= detector.height
        assert max(w / detector.width, h / detector.height) == 1.0  # the letterbox fills one side
        assert tensor.dtype == detector.model.input_dtype
        assert all(math.isfinite(v) and v > 0 for v in (lb.scale_x, lb.scale_y))
        for face in detector.detect(frame):
            assert all(math.isfinite(v) for v in face.box) and 0.0 <= face.face_score <= 1.0

    check()
    assert len(ran) >= 10, ran  # bool and NaN frames are skipped; most others reach the detector
