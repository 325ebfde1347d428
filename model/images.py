"""The one image reader of every stage: HDF5 writing and reading, evaluation, the classifier.

Images are BGR uint8 (H, W, 3) arrays in the stored pixel grid. EXIF orientation is ignored
because COCO's annotations describe the pixels as stored, not as a viewer would rotate them.
Grayscale, alpha, 16-bit and CMYK files all become 3-channel BGR uint8 through the one
OpenCV decode below (alpha dropped, 16-bit scaled to 8 bits, CMYK converted by libjpeg), so
every stage sees the same pixels.
"""
import io
import struct
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# The annotations describe the stored pixel grid; OpenCV would otherwise rotate by EXIF.
IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
# What the HDF5 file may hold as raw bytes (its reader decodes them with OpenCV).
HDF5_FORMATS = ("JPEG", "PNG")

MISSING = "missing file"
UNREADABLE = "unreadable image"
CORRUPT = "corrupt or truncated image"


def size_mismatch(size, width, height):
    """The reason text for an image of `size` (w, h) annotated as width x height."""
    return f"image size {size[0]}x{size[1]} differs from the annotation ({width}x{height})"


def decode_image(data):
    """BGR uint8 (H, W, 3) from encoded bytes in the stored grid; None if they do not decode."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), IMREAD_FLAGS)


def read_image(path):
    """BGR uint8 image of a file, decoded like decode_image; None if missing or unreadable."""
    try:
        return decode_image(Path(path).read_bytes())
    except OSError:
        return None


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"     # the empty IEND chunk with its CRC


def png_size(path):
    """(width, height) of a complete PNG file, else None: a cheap check that reads 33 bytes
    and the last 12 (signature, IHDR, the IEND chunk a truncated file lacks), not the pixels."""
    try:
        with open(path, "rb") as f:
            head = f.read(33)
            f.seek(0, 2)
            if f.tell() < 45:
                return None
            f.seek(-len(PNG_END), 2)
            tail = f.read()
    except OSError:
        return None
    if head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR" or tail != PNG_END:
        return None
    return struct.unpack(">II", head[16:24])


def _check_with_pil(data, expected_size, formats):
    """(problem or None, format, mode) of encoded bytes, from a full decode by PIL.

    Truncated JPEGs are caught by decoding at 1/8 scale, which still reads every scan."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, mode, size = im.format, im.mode, im.size
            if formats is not None and fmt not in formats:
                return f"unsupported image format {fmt}", fmt, mode
            width, height = size if expected_size is None else expected_size
            if size != (width, height):
                return size_mismatch(size, width, height), fmt, mode
            if fmt == "JPEG":
                im.draft(mode, (max(1, width // 8), max(1, height // 8)))
            im.load()
    except Exception as e:  # PIL raises many types for bad data; all mean "unusable"
        return f"{CORRUPT} ({type(e).__name__})", None, None
    return None, fmt, mode


def inspect_image(data, width, height):
    """(problem or None, format, mode) of encoded image bytes against the annotated size.

    The HDF5 step's check: JPEG or PNG only (it stores the bytes as they are), the annotated
    size, no truncation, and a decode by OpenCV, which the HDF5 reader uses."""
    problem, fmt, mode = _check_with_pil(data, (width, height), HDF5_FORMATS)
    if problem:
        return problem, fmt, mode
    # the reader decodes with OpenCV: make sure it can (a reduced decode parses every scan)
    if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:
        return "image OpenCV cannot decode", fmt, mode
    return None, fmt, mode


def read_image_checked(path, expected_size=None):
    """(BGR uint8 image, None) or (None, reason) for callers that skip bad images and count.

    reason is one of "missing file", "unreadable image", "corrupt or truncated image" or
    "image size WxH differs from the annotation (WxH)" when expected_size = (width, height)
    is given and differs. Any format OpenCV and PIL both read is accepted."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, MISSING
    except OSError:   # a folder, no permission
        return None, UNREADABLE
    problem = _check_with_pil(data, expected_size, None)[0]
    if problem:
        return None, CORRUPT if problem.startswith(CORRUPT) else problem
    image = decode_image(data)
    if image is None or image.size == 0:
        return None, UNREADABLE
    return image, None
