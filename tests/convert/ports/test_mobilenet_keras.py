"""convert.ports.mobilenet_keras: torchvision's ImageNet MobileNetV2 read without torch, rebuilt in Keras."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")

from agent.model import sha256_of  # noqa: E402
from convert.ports import landmark_keras as lk  # noqa: E402
from convert.ports import mobilenet_keras as mk  # noqa: E402
from convert.errors import ConvertError  # noqa: E402

WEIGHTS = mk.weights_dir() / "mobilenet_v2-b0353104.pth"  # fetched by scripts/test.sh
needs_weights = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"{WEIGHTS} not fetched (run scripts/test.sh or python -m convert.ports.mobilenet_keras)")


@pytest.fixture(scope="module")
def state() -> dict:
    return mk.read_state_dict(WEIGHTS)


@needs_weights
def test_reads_the_torchvision_state_dict_without_torch(state):
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)  # depthwise
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert all(v.dtype == np.float32 or k.endswith("num_batches_tracked") for k, v in state.items())
    assert np.all(state["features.0.1.running_var"] > 0)
    # the file name's hash prefix is torchvision's: the bytes are theirs
    assert sha256_of(WEIGHTS).startswith("b0353104")


@needs_weights
def test_the_port_recognises_real_photos():
    pytest.importorskip("skimage")
    top5 = mk.check_imagenet(WEIGHTS)
    assert top5["chelsea"][0] in range(281, 286)  # a cat: tabby, tiger cat, Persian, Siamese, Egyptian
    assert top5["coffee"][0] in (967, 968, 504)  # espresso, cup, coffee mug


@needs_weights
def test_cut_trunk_and_classifier_keep_the_contract(state):
    body = mk.build(state, 96, 10)
    assert tuple(body.output.shape[1:]) == (6, 6, 64)
    model, trunk = lk.build_classifier(None, 96, backbone="mobilenet_v2", cut=10)
    assert tuple(model.input.shape[1:]) == (96, 96, 3) and tuple(model.output.shape[1:]) == (4,)
    assert trunk.count_params() == body.count_params()
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    assert np.allclose(np.asarray(trunk(x)), np.asarray(body(x)), atol=1e-5)


def test_recipe_names_the_backbone():
    a = lk._arguments().parse_args(["--crops", "c.npz", "--backbone", "mobilenet_v2", "--cut", "10"])
    lines = lk.recipe(a, 96)
    assert "--backbone mobilenet_v2 --cut 10" in lines[1]
    again = lk._arguments().parse_args(" ".join(lines[1:]).replace("\\", " ").split()[3:])
    assert isinstance(again, argparse.Namespace) and again.backbone == "mobilenet_v2" and again.cut == 10


def test_damaged_or_foreign_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(ConvertError, match="junk.pth"):
        mk.read_state_dict(junk)
    if WEIGHTS.is_file():
        cut = tmp_path / "cut.pth"
        cut.write_bytes(WEIGHTS.read_bytes()[:-1000])
        with pytest.raises(ConvertError, match="cut.pth"):
            mk.read_state_dict(cut)


@needs_weights
def test_a_cut_outside_the_net_is_refused(state):
    for bad in (0, 19):
        with pytest.raises(ValueError, match="1 to 18"):
            mk.build(state, 96, bad)
    with pytest.raises(SystemExit):
        lk._arguments().parse_args(["--crops", "c.npz", "--backbone", "mobilenet_v2", "--cut", "30"])


def test_blocks_follow_torchvision():
    b = mk.blocks()
    assert len(b) == 17 and b[0] == (1, 1, 16, 1) and b[-1] == (17, 6, 320, 1)
    assert [i for i, _, _, s in b if s == 2] == [2, 4, 7, 14]


@needs_weights
def test_two_view_head_reads_the_whole_face_and_its_nose_mouth_window_with_one_trunk():
    import tensorflow as tf

    model, trunk = lk.build_classifier(None, 96, backbone="mobilenet_v2", cut=10, head="two-view")
    assert tuple(model.input.shape[1:]) == (96, 96, 3) and tuple(model.output.shape[1:]) == (4,)
    assert tuple(trunk.input.shape[1:]) == (48, 48, 3)  # half the side, shared by both views
    gap, _ = lk.build_classifier(None, 48, backbone="mobilenet_v2", cut=10)
    # one trunk's weights, a Dense head over twice the features (64 more inputs x 4 logits)
    assert model.count_params() == gap.count_params() + 64 * 4
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    top, left = lk.nose_mouth_window(96)
    face = x.reshape(2, 48, 2, 48, 2, 3).mean(axis=(2, 4))
    want = np.concatenate([np.asarray(trunk(face)).mean(axis=(1, 2)),
                           np.asarray(trunk(x[:, top:top + 48, left:left + 48])).mean(axis=(1, 2))], axis=1)
    pooled = tf.keras.Model(model.input, model.get_layer("pool").output)
    np.testing.assert_allclose(np.asarray(pooled(x)), want, atol=1e-4)
    # the window spans the lower face: below the eyes' line (~0.41 of the side) to near the chin
    assert 0.3 < top / 96 < 0.45 and top + 48 <= 96 and left + 48 <= 96
    lk.set_trunk_trainable(model, trunk, False)
    assert len(model.trainable_weights) == 2  # the Dense head only
    lk.set_trunk_trainable(model, trunk, True)
    assert len(model.trainable_weights) > 2
    with pytest.raises(ValueError, match="two-view"):
        lk.build_classifier(None, 95, backbone="mobilenet_v2", cut=10, head="two-view")
