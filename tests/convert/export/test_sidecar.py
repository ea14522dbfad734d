"""convert.export.sidecar: the sidecar completed from the model, the atomic model + sidecar write."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

pytestmark = pytest.mark.tf
tf = pytest.importorskip("tensorflow")

from convert.errors import ConvertError  # noqa: E402
from convert.export.quantize import quantize_int8  # noqa: E402
from convert.export.sidecar import check_sidecar_fields, write_model_pair  # noqa: E402
from tests.convert.export.tiny import rep, sidecar  # noqa: E402


def test_write_model_pair_fills_sidecar_and_sums(tmp_path, flat):
    (tmp_path / "other.tflite").write_bytes(b"x")
    (tmp_path / "SHA256SUMS").write_text(f"{hashlib.sha256(b'x').hexdigest()}  other.tflite\n"
                                         f"{'0' * 64}  removed.tflite\n")
    mp, sp = write_model_pair(tmp_path, "tiny", flat, sidecar())
    side = json.loads(sp.read_text())
    assert side["schema"] == "maskwatch-model/1"
    assert side["model_file"] == "tiny.tflite"
    assert side["model_sha256"] == hashlib.sha256(mp.read_bytes()).hexdigest()
    assert side["input"]["dtype"] == "int8" and side["input"]["quantization"]["scale"] > 0
    for name in ("regressors", "scores"):
        assert side["outputs"][name]["dtype"] == "int8"
        assert side["outputs"][name]["quantization"]["scale"] > 0
    assert side["provenance"]["converter"].startswith("tensorflow ")
    assert side["provenance"]["date"].endswith("Z")
    sums = (tmp_path / "SHA256SUMS").read_text()
    assert "removed.tflite" not in sums and "other.tflite" in sums and "tiny.json" in sums
    subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=tmp_path, check=True)
    assert not list(tmp_path.glob(".*tmp*"))


def test_rewriting_identical_bytes_keeps_the_version(tmp_path, flat, model):
    """The version alerts carry (and the build date) change with the model bytes, not with each rebuild."""
    _, sp = write_model_pair(tmp_path, "tiny", flat, sidecar())
    first = json.loads(sp.read_text())
    first["version"] = "2020.01.01.000000"  # as if built long ago
    first["provenance"]["date"] = "2020-01-01T00:00:00Z"
    sp.write_text(json.dumps(first))
    _, sp = write_model_pair(tmp_path, "tiny", flat, sidecar())
    again = json.loads(sp.read_text())
    assert again["version"] == "2020.01.01.000000" and again["provenance"]["date"] == "2020-01-01T00:00:00Z"
    other = quantize_int8(model, rep(seed=1))
    assert other != flat
    _, sp = write_model_pair(tmp_path, "tiny", other, sidecar())
    new = json.loads(sp.read_text())
    assert new["version"] != "2020.01.01.000000" and new["provenance"]["date"] != "2020-01-01T00:00:00Z"


def test_missing_sidecar_field_writes_nothing(tmp_path, flat):
    bad = sidecar()
    del bad["input"]["normalization"]
    with pytest.raises(ConvertError, match="input.normalization.mean"):
        write_model_pair(tmp_path, "tiny", flat, bad)
    assert list(tmp_path.iterdir()) == []


def test_sidecar_shape_mismatch_writes_nothing(tmp_path, flat):
    bad = sidecar()
    bad["outputs"]["scores"]["shape"] = [1, 65, 1]
    with pytest.raises(ConvertError, match="has shape"):
        write_model_pair(tmp_path, "tiny", flat, bad)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_model_bytes_write_nothing(tmp_path):
    with pytest.raises(ConvertError, match="not a valid TFLite model"):
        write_model_pair(tmp_path, "tiny", b"not a flatbuffer" * 10, sidecar())
    assert list(tmp_path.iterdir()) == []


def test_check_sidecar_fields_kind():
    with pytest.raises(ConvertError, match="'kind' must be"):
        check_sidecar_fields({**sidecar(), "kind": "segmenter"}, "x.json")
    with pytest.raises(ConvertError, match="x.json: missing required field 'labels'"):
        check_sidecar_fields({**sidecar(), "kind": "classifier"}, "x.json")
