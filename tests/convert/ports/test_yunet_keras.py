"""convert.ports.yunet_keras: the published YuNet ONNX file rebuilt as Keras, held to cv2.FaceDetectorYN."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")
pytest.importorskip("onnx")

from convert.ports import yunet_keras as yk  # noqa: E402
from convert.errors import ConvertError  # noqa: E402

SCENES = Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "scenes-ilc2021" / "images"
needs_onnx = pytest.mark.skipif(not yk.DEFAULT_ONNX.is_file(), reason=f"{yk.DEFAULT_ONNX} not there (../shared)")


@pytest.fixture(scope="module")
def model():
    if not yk.DEFAULT_ONNX.is_file():
        pytest.skip(f"{yk.DEFAULT_ONNX} not there (../shared)")
    return yk.build_keras(yk.DEFAULT_ONNX, (256, 320))[0]


@needs_onnx
def test_rebuild_matches_opencv_on_real_images(model, astronaut):
    # + a crowd where one pair of faces overlaps by 0.45 only on FaceDetectorYN's whole-pixel boxes
    names = [p.name for p in sorted(SCENES.glob("*.jpg"))[:6]] + ["152677fa1f900e49.jpg"]
    images = [cv2.imread(str(SCENES / n)) for n in names if (SCENES / n).is_file()] + [astronaut]
    check = yk.parity_vs_opencv(model, yk.DEFAULT_ONNX, images)
    assert check["faces_opencv"] >= 5  # real faces were compared, not empty frames
    assert check["paired"] == check["faces_opencv"] == check["faces_keras"]
    assert check["max_abs_diff"]["box_px"] < 0.5 and check["max_abs_diff"]["keypoint_px"] < 0.5
    assert check["max_abs_diff"]["score"] < 1e-3


@needs_onnx
def test_raw_outputs_match_opencv_dnn_and_the_model_trains(model):
    """Every cell's raw output against OpenCV's ONNX runtime, and the port is a trainable Keras model."""
    x = np.random.default_rng(0).uniform(0, 255, (256, 320, 3)).astype(np.float32)
    net = cv2.dnn.readNetFromONNX(str(yk.DEFAULT_ONNX))
    net.setInput(cv2.dnn.blobFromImage(x))
    names = [f"{h}_{s}" for h in yk.HEADS for s in yk.STRIDES]
    ref = {n: np.asarray(v).reshape(-1, np.asarray(v).shape[-1]) for n, v in zip(names, net.forward(names))}
    ours = yk.keras_outputs(model, x)
    for logical, heads in yk.OUTPUTS.items():
        want = np.concatenate([np.concatenate([ref[f"{h}_{s}"] for h in heads], -1) for s in yk.STRIDES])
        np.testing.assert_allclose(ours[logical], want, atol=2e-3)
    assert model.output_names == list(yk.OUTPUTS)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) > 70000


def test_not_an_onnx_file_is_refused(tmp_path):
    bad = tmp_path / "yunet.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConvertError, match="not a readable ONNX file"):
        yk.build_keras(bad)
    with pytest.raises(ConvertError, match="not found"):
        yk.build_keras(tmp_path / "missing.onnx")


@needs_onnx
def test_input_sides_must_be_multiples_of_32():
    with pytest.raises(ConvertError, match="multiples of 32"):
        yk.build_keras(yk.DEFAULT_ONNX, (240, 320))


def test_cli_refuses_a_bad_input_size(capsys):
    from convert.cli import main

    with pytest.raises(SystemExit) as ex:
        main(["yunet", "--input", "320x240"])
    assert ex.value.code == 2
    assert "multiples of 32" in capsys.readouterr().err


def test_an_onnx_file_of_another_family_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["y"])], "other",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ConvertError, match="not a YuNet graph"):
        yk.build_keras(path)


@needs_onnx
def test_yunet_command_refuses_a_keras_model_of_another_shape(tmp_path, model, capsys):
    """`maskwatch-convert yunet --keras` with a model built for another input: exit 2, nothing written."""
    from convert.cli import main

    other = tmp_path / "other.keras"
    yk.build_keras(yk.DEFAULT_ONNX, (224, 288))[0].save(other)
    models = tmp_path / "models"
    models.mkdir()
    assert main(["yunet", "--keras", str(other), "--models-dir", str(models), "--build-dir", str(tmp_path)]) == 2
    assert "not a YuNet at 320x256" in capsys.readouterr().err
    assert list(models.iterdir()) == []


def test_yunet_command_refuses_an_nms_overlap_outside_0_1_before_any_work(tmp_path, capsys):
    """`maskwatch-convert yunet --nms-iou 1.5`: a usage error (exit 2) naming the flag, nothing written."""
    from convert.cli import main

    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["yunet", "--nms", "weighted", "--nms-iou", "1.5", "--models-dir", str(models),
              "--build-dir", str(tmp_path / "build")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --nms-iou: 1.5 is not between 0 and 1" in err and "Traceback" not in err
    assert list(models.iterdir()) == [] and not (tmp_path / "build").exists()


def test_yunet_command_refuses_a_missing_models_folder_before_any_work(tmp_path, capsys):
    """A --models-dir that does not exist stops the build at once (it used to after the whole export)."""
    from convert.cli import main

    assert main(["yunet", "--models-dir", str(tmp_path / "nope"), "--build-dir", str(tmp_path / "build")]) == 2
    err = capsys.readouterr().err
    assert "nope: models folder does not exist" in err and "fix:" in err and "Traceback" not in err
    assert not (tmp_path / "build").exists() and not (tmp_path / "nope").exists()


def test_the_sidecar_names_the_nms_the_build_was_asked_for():
    side = yk.sidecar_template((320, 256), "x.onnx", "", 0.5, nms="weighted", nms_iou=0.3)
    assert side["decoding"]["nms"] == {"method": "weighted", "iou_threshold": 0.3}
    assert yk.sidecar_template((320, 256), "x.onnx", "", 0.5)["decoding"]["nms"] == {"method": "hard", "iou_threshold": 0.45}
