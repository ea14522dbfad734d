"""convert.ports.mobilenet_keras: torchvision's ImageNet MobileNetV2 read without torch, rebuilt in Keras."""

from __future__ import annotations


import numpy as np
import pytest

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")

from agent.model import sha256_of  # noqa: E402
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
def test_cut_trunk_keeps_its_shape(state):
    body = mk.build(state, 96, 10)
    assert tuple(body.output.shape[1:]) == (6, 6, 64)


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


def test_blocks_follow_torchvision():
    b = mk.blocks()
    assert len(b) == 17 and b[0] == (1, 1, 16, 1) and b[-1] == (17, 6, 320, 1)
    assert [i for i, _, _, s in b if s == 2] == [2, 4, 7, 14]
