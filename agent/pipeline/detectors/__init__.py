"""Detector families, one module each, picked by the detector sidecar's ``decoding.type``.

To add a family: a module here with a ``Decoder`` (see :mod:`agent.pipeline.detectors.base`), registered
in :data:`FAMILIES`, and its decoding fields in docs/model-contract.md.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple, Type

from agent.pipeline.detectors import blazeface, yunet

FAMILIES: Dict[str, Type[Any]] = {"blazeface": blazeface.Decoder, "yunet": yunet.Decoder}


def decoder_for(decoding: Mapping[str, Any], input_wh: Tuple[int, int]) -> Any:
    """The decoder of a sidecar's ``decoding``; KeyError / ValueError name what is wrong."""
    family = decoding.get("type", "blazeface")
    if family not in FAMILIES:
        raise ValueError(f"`decoding.type` {family!r} is not a known detector family ({', '.join(FAMILIES)})")
    return FAMILIES[family](decoding, input_wh)


__all__ = ("FAMILIES", "decoder_for")
