"""JPEG bytes with an EXIF orientation tag, as a phone writes a portrait photo: the pixels stored
sideways (or flipped) and tag 0x0112 saying how a viewer turns them upright.

Written by hand (an APP1 segment of 34 bytes) so the tests need no EXIF library; the layout is
EXIF 2.3's: "Exif\\0\\0", a little-endian TIFF header, one IFD with one SHORT entry.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

# orientation tag -> how the stored pixels are made from the upright picture (the viewer undoes it)
STORE = {
    1: lambda a: a,
    2: lambda a: cv2.flip(a, 1),
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),
    5: lambda a: cv2.transpose(a),
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),  # the viewer turns it 90 degrees clockwise
    7: lambda a: cv2.rotate(cv2.transpose(a), cv2.ROTATE_180),  # the transverse: its own inverse
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
}


def exif_segment(orientation: int) -> bytes:
    """The APP1 segment of an EXIF block holding only the orientation tag."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def oriented_jpeg(upright: np.ndarray, orientation: int, quality: int = 95) -> bytes:
    """A JPEG whose stored pixels are ``upright`` turned as ``orientation`` says a camera stored them,
    tagged so that a reader honouring the tag shows ``upright`` again."""
    ok, jpg = cv2.imencode(".jpg", STORE[orientation](upright), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    data = jpg.tobytes()
    return data[:2] + exif_segment(orientation) + data[2:]  # right after SOI, where EXIF belongs
