"""The model sidecar schema (agent/schemas/model.schema.json) and the agent's own validator of it.

The agent may not depend on ``jsonschema`` (a test extra), so agent/schema_check.py implements the
keywords the schema uses; here ``jsonschema`` is the referee: both must give the same verdict on
every shipped sidecar and on every damaged copy made by deleting or retyping one key.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest

from agent import schema_check
from agent.model import ModelError, load_model, read_sidecar

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[2]
SCHEMA = schema_check.load("model")
SHIPPED = sorted(p for p in (REPO / "models").glob("*.json")
                 if json.loads(p.read_text()).get("schema") == "maskwatch-model/1")
REFEREE = jsonschema.Draft202012Validator(SCHEMA)


def agent_says(meta: Any) -> bool:
    return schema_check.first_problem(meta, SCHEMA) is None


def paths(obj: Any, prefix: Tuple = ()) -> Iterator[Tuple]:
    """Every key / index path inside a JSON value."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from paths(value, prefix + (key,))


def changed(meta: Any, path: Tuple, value: Any = "delete") -> Any:
    out = copy.deepcopy(meta)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value == "delete":
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def yunet_sidecar() -> dict:
    """A detector sidecar of the second family (decoding.type yunet) as its converter will write it."""
    meta = json.loads((REPO / "models" / "face_detector.json").read_text())
    meta["name"] = "yunet"
    meta["outputs"] = {name: {"shape": [1, 3000, n], "dtype": "float32", "quantization": None}
                       for name, n in (("scores", 1), ("boxes", 4), ("keypoints", 10))}
    meta["decoding"] = {"type": "yunet", "strides": [8, 16, 32], "num_keypoints": 5,
                        "keypoint_names": ["right_eye", "left_eye", "nose_tip", "right_mouth", "left_mouth"],
                        "nms": {"iou_threshold": 0.3}, "default_min_score": 0.6, "top_k": 50}
    return meta


def test_schema_is_valid_json_schema_and_uses_only_implemented_keywords():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert schema_check.load("model") is SCHEMA  # loaded (keywords checked) once
    with pytest.raises(schema_check.SchemaError, match="uniqueItems"):
        schema_check._check_keywords({"properties": {"x": {"uniqueItems": True}}}, "#")


@pytest.mark.parametrize("sidecar", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_sidecar_is_valid_for_both(sidecar):
    meta = json.loads(sidecar.read_text())
    assert list(REFEREE.iter_errors(meta)) == []
    assert schema_check.first_problem(meta, SCHEMA) is None
    read_sidecar(sidecar)


@pytest.mark.parametrize("sidecar", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_code_and_schema_agree_on_every_one_key_damage(sidecar):
    """Delete each key, or give it a value of another type: same verdict from both validators."""
    meta = json.loads(sidecar.read_text())
    tried = disagree = 0
    bad: List[str] = []
    for path in paths(meta):
        for value in ("delete", "text", None, -1, 0.5, [], {}):
            damaged = changed(meta, path, value)
            tried += 1
            if REFEREE.is_valid(damaged) != agent_says(damaged):
                disagree += 1
                bad.append(f"{'.'.join(map(str, path))} = {value!r}: jsonschema {REFEREE.is_valid(damaged)}")
    assert tried > 300 and disagree == 0, bad[:10]


def test_a_yunet_detector_sidecar_is_accepted_and_checked():
    meta = yunet_sidecar()
    assert REFEREE.is_valid(meta) and agent_says(meta)
    meta["decoding"]["box_adjust"] = {"dx": 0.0, "dy": 0.01, "sw": 1.0, "sh": 1.1}
    assert REFEREE.is_valid(meta) and agent_says(meta)
    for key in ("strides", "num_keypoints", "keypoint_names", "nms", "default_min_score"):
        damaged = changed(meta, ("decoding", key))
        assert not REFEREE.is_valid(damaged)
        assert str(schema_check.first_problem(damaged, SCHEMA)) == f"missing key `decoding.{key}`"
    damaged = changed(meta, ("decoding", "nms", "iou_threshold"))
    assert str(schema_check.first_problem(damaged, SCHEMA)) == "missing key `decoding.nms.iou_threshold`"


@pytest.mark.parametrize("path, says", [
    (("output",), "missing key `output`"),
    (("crop",), "missing key `crop`"),
    (("version",), "missing key `version`"),
    (("output", "temperature"), "missing key `output.temperature`"),
    (("non_face_labels",), "missing key `non_face_labels`"),
])
def test_a_classifier_sidecar_missing_a_field_is_refused_naming_it(classifier_json, copy_model, path, says):
    """Before: a missing `output` let the temperature fall back to 1.0, silently changing scores."""
    side = copy_model(classifier_json, lambda m: _delete(m, path))
    with pytest.raises(ModelError) as e:
        load_model(side, kind="classifier")
    msg = str(e.value)
    assert msg.startswith(f"{side}: {says}\n  fix: ") and "model.schema.json" in msg


@pytest.mark.parametrize("stem, path, says", [
    ("face_detector_yunet", ("decoding",), "missing key `decoding`"),
    ("face_detector_yunet", ("decoding", "nms"), "missing key `decoding.nms`"),
    ("face_detector_yunet", ("decoding", "strides"), "missing key `decoding.strides`"),
    ("face_detector_door", ("decoding", "anchors", "interpolated_scale_aspect_ratio"),
     "missing key `decoding.anchors.interpolated_scale_aspect_ratio`"),
    ("face_detector_yunet", ("input", "normalization"), "missing key `input.normalization`"),
])
def test_a_detector_sidecar_missing_a_field_is_refused_naming_it(repo_root, copy_model, stem, path, says):
    """Both detector families' sidecars."""
    side = copy_model(repo_root / "models" / f"{stem}.json", lambda m: _delete(m, path))
    with pytest.raises(ModelError, match=r"^" + str(side).replace(".", r"\.") + ": " + says.replace(".", r"\.")):
        read_sidecar(side)


def _delete(meta: dict, path: Tuple) -> None:
    node = meta
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


def test_wrong_values_are_named_with_what_was_expected(classifier_json):
    meta = json.loads(classifier_json.read_text())
    cases = [
        (changed(meta, ("crop", "align"), "chin"), "`crop.align` is 'chin', expected one of 'eyes', 'none'"),
        (changed(meta, ("labels",), ["mask"]), "`labels` has 1 items, expected at least 2"),
        (changed(meta, ("input", "height"), "48"), "`input.height` is a string, expected an integer"),
        (changed(meta, ("labels", 1), 7), "`labels[1]` is an integer, expected a string"),
        (changed(meta, ("model_sha256",), "abc"), "`model_sha256` is 'abc', which does not match ^[0-9a-f]{64}$"),
        (changed(meta, ("schema",), "maskwatch-model/2"), "`schema` is 'maskwatch-model/2', expected 'maskwatch-model/1'"),
    ]
    for damaged, says in cases:
        assert str(schema_check.first_problem(damaged, SCHEMA)) == says
        assert not REFEREE.is_valid(damaged)
