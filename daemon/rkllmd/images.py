"""The shared intake of images sent by clients: decode, identify, bound.

Every dialect that accepts images (simple chat's ``images``, Ollama's ``images``,
OpenAI's ``image_url`` parts) turns what the client sent into ``ImageInput`` values
here, at the edge, before anything is queued:

- the text is base64 or a ``data:<mime>;base64,<data>`` URL (whitespace is ignored);
- the bytes must be JPEG, PNG or WebP, told from their magic bytes (a declared MIME
  type must agree with them);
- size limits from ``[vision]``: bytes per image, pixels per image (read from the
  header, never by decoding: a small file that would decompress to gigabytes is
  refused unopened), images per request.

Every problem is an ``InvalidImage`` (400 ``invalid_image``), and so is a URL of any
other scheme: the daemon never opens a file for a client, and fetches an http(s) URL
only where the owner listed its host (``vision.fetch_urls``, ``http/imagefetch.py``,
which hands the fetched bytes back here for the same checks). Whether
the model can see is the manager's question (``ModelProps.vision``; otherwise
``model_has_no_vision``): images are never dropped and answered blind.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Iterable, Sequence

from .config import VisionSection
from .errors import InvalidImage
from .requests import ImageInput as ImageInput

JPEG, PNG, WEBP = "image/jpeg", "image/png", "image/webp"
MIME_TYPES = (JPEG, PNG, WEBP)

_DATA_URL = re.compile(r"data:([^;,]*)(;base64)?,", re.IGNORECASE)
# Any scheme but data: (base64 never contains ':').
_URL = re.compile(r"\s*(?!data:)([A-Za-z][A-Za-z0-9+.-]{0,31}):", re.IGNORECASE)
_WHITESPACE = b" \t\r\n"  # dropped with bytes.translate (~10x faster than a regex)
# JPEG start-of-frame markers (they carry the dimensions); C4, C8 and CC are not frames.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


# What a client sent (base64 or a URL), or the bytes fetched from an allowed URL.
Sent = str | bytes


def check_count(count: int, limits: VisionSection) -> None:
    if count > limits.max_images:
        raise InvalidImage(
            f"{count} images in one request; at most {limits.max_images} are accepted",
            limit=limits.max_images,
        )


def decode_images(
    items: Iterable[tuple[Sent, str | None]], limits: VisionSection
) -> tuple[ImageInput, ...]:
    """Every (text, declared MIME type or None) of one request, within the count limit."""
    items = list(items)
    check_count(len(items), limits)
    return tuple(decode_image(text, mime, limits, index=i) for i, (text, mime) in enumerate(items))


def decode_grouped(
    groups: Sequence[Sequence[tuple[Sent, str | None]]], limits: VisionSection
) -> list[tuple[ImageInput, ...]]:
    """The images of each message (a group), checked together against the count limit."""
    flat = decode_images((item for group in groups for item in group), limits)
    out: list[tuple[ImageInput, ...]] = []
    start = 0
    for group in groups:
        out.append(flat[start : start + len(group)])
        start += len(group)
    return out


def decode_image(
    text: Sent, declared: str | None, limits: VisionSection, *, index: int = 0
) -> ImageInput:
    """One image from base64, a data URL or fetched bytes; ``declared`` is the client's
    MIME type, if any."""
    where = f"image {index}"
    if isinstance(text, bytes):
        data = _fetched(text, limits.max_image_bytes, where)
        declared = _check_declared(declared, where)
    else:
        _refuse_urls(text, where, fetching=bool(limits.fetch_urls))
        payload, url_mime = _split_data_url(text)
        declared = _check_declared(url_mime or declared, where)
        data = _base64(payload, limits.max_image_bytes, where)
    mime, width, height = identify(data, where)
    if declared is not None and declared != mime:
        raise InvalidImage(f"{where} is declared {declared} but its data is {mime}")
    if width <= 0 or height <= 0:
        raise InvalidImage(f"{where} has no size ({width}x{height})")
    if width * height > limits.max_image_pixels:
        raise InvalidImage(
            f"{where} is {width}x{height} pixels; at most {limits.max_image_pixels} are accepted",
            limit=limits.max_image_pixels,
        )
    return ImageInput(data, mime, width, height)


# --- decoding ----------------------------------------------------------------------


def _refuse_urls(text: str, where: str, *, fetching: bool) -> None:
    """Images come as bytes. ``file:`` would read the daemon's own files, so it and every
    other scheme is always refused; ``http(s):`` arrives here only when fetching is off
    (an allowed URL is fetched first, ``http/imagefetch.py``): fetching for any client
    would make the daemon a way into the owner's network (SSRF)."""
    match = _URL.match(text) if isinstance(text, str) else None
    if match is None:
        return
    scheme = match.group(1).lower()
    if not fetching:
        why = "images are not fetched"
    elif scheme in ("http", "https"):  # an allowed URL, but where bytes are expected
        why = "URLs are fetched only for OpenAI image_url and Responses input_image parts"
    else:
        why = f"{scheme}: URLs are never opened"
    raise InvalidImage(
        f"{where} is a {scheme}: URL; {why}; send the image's bytes "
        "as base64 or a data:<mime type>;base64,<data> URL",
        url_scheme=scheme,
    )


def _fetched(data: bytes, max_bytes: int, where: str) -> bytes:
    if len(data) > max_bytes:  # imagefetch stops reading past the limit already
        raise InvalidImage(f"{where} is larger than {max_bytes} bytes", limit=max_bytes)
    if not data:
        raise InvalidImage(f"{where} is empty")
    return data


def _split_data_url(text: str) -> tuple[str, str | None]:
    if not isinstance(text, str) or not text.startswith(("data:", "DATA:", "Data:")):
        return text, None
    match = _DATA_URL.match(text)
    if match is None or not match.group(2):
        raise InvalidImage("a data URL must be data:<mime type>;base64,<data>")
    return text[match.end() :], match.group(1).strip().lower() or None


def _check_declared(mime: str | None, where: str) -> str | None:
    if mime is None:
        return None
    mime = mime.strip().lower()
    if mime == "image/jpg":  # a common misspelling of image/jpeg
        mime = JPEG
    if mime not in MIME_TYPES:
        raise InvalidImage(
            f"{where} has MIME type {mime[:60]!r}; accepted: {', '.join(MIME_TYPES)}",
            accepted=list(MIME_TYPES),
        )
    return mime


def _base64(payload: str, max_bytes: int, where: str) -> bytes:
    try:
        raw = payload.encode("ascii").translate(None, _WHITESPACE)
    except UnicodeEncodeError:
        raise InvalidImage(f"{where} is not base64 (non-ASCII characters)") from None
    # Refuse before decoding: 4 base64 characters carry 3 bytes.
    if len(raw) // 4 * 3 > max_bytes + 2:
        raise InvalidImage(f"{where} is larger than {max_bytes} bytes", limit=max_bytes)
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{where} is not valid base64") from None
    if len(data) > max_bytes:
        raise InvalidImage(f"{where} is larger than {max_bytes} bytes", limit=max_bytes)
    if not data:
        raise InvalidImage(f"{where} is empty")
    return data


# --- identifying: magic bytes and the dimensions in the header ---------------------


def identify(data: bytes, where: str = "the image") -> tuple[str, int, int]:
    """(MIME type, width, height) read from the header; the pixels are never decoded."""
    try:
        if data.startswith(b"\xff\xd8\xff"):
            return (JPEG, *_jpeg_size(data))
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return (PNG, *_png_size(data))
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return (WEBP, *_webp_size(data))
    except (struct.error, IndexError, ValueError):
        raise InvalidImage(f"{where} has a damaged header") from None
    raise InvalidImage(f"{where} is not a JPEG, PNG or WebP image", accepted=list(MIME_TYPES))


def _png_size(data: bytes) -> tuple[int, int]:
    if data[12:16] != b"IHDR":
        raise ValueError("no IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while True:
        while data[pos] == 0xFF and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if data[pos] != 0xFF:
            raise ValueError("not at a marker")
        marker = data[pos + 1]
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers: no length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame
            raise ValueError("no frame header")
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        if length < 2:
            raise ValueError("bad segment length")
        pos += 2 + length


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    body = data[20:]
    if chunk == b"VP8 ":  # lossy: a key frame's start code, then 14-bit sizes
        if body[3:6] != b"\x9d\x01\x2a":
            raise ValueError("no VP8 start code")
        width, height = struct.unpack("<HH", body[6:10])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: a signature byte, then two 14-bit sizes minus one
        if body[0] != 0x2F:
            raise ValueError("no VP8L signature")
        (bits,) = struct.unpack("<I", body[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: the canvas size, 24-bit values minus one
        if len(body) < 10:
            raise ValueError("short VP8X chunk")
        width = int.from_bytes(body[4:7], "little") + 1
        height = int.from_bytes(body[7:10], "little") + 1
        return width, height
    raise ValueError("unknown WebP chunk")
