"""The image intake: real JPEG/PNG/WebP files (made by Pillow) in, typed values or
``invalid_image`` out; the pixel limit holds without decoding anything."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image
from rkllmd.config import VisionSection
from rkllmd.errors import InvalidImage
from rkllmd.images import ImageInput, decode_grouped, decode_image, decode_images, identify

LIMITS = VisionSection()


def picture(fmt: str, size: tuple[int, int] = (33, 17), **save: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 60)).save(out, format=fmt, **save)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("fmt", "save", "mime"),
    [
        ("JPEG", {}, "image/jpeg"),
        ("JPEG", {"progressive": True}, "image/jpeg"),
        ("PNG", {}, "image/png"),
        ("WEBP", {}, "image/webp"),
        ("WEBP", {"lossless": True}, "image/webp"),
    ],
)
def test_real_images_are_identified_with_their_size(fmt: str, save: dict, mime: str) -> None:
    data = picture(fmt, **save)
    image = decode_image(b64(data), mime, LIMITS)
    assert image == ImageInput(data, mime, 33, 17)
    assert image.pixels == 33 * 17


def test_extended_webp_canvas_size() -> None:
    # VP8X: what Pillow writes for an image with an alpha channel and EXIF.
    out = io.BytesIO()
    Image.new("RGBA", (301, 7), (1, 2, 3, 4)).save(out, format="WEBP", exif=b"Exif\x00\x00")
    data = out.getvalue()
    assert data[12:16] == b"VP8X"
    assert identify(data) == ("image/webp", 301, 7)


def test_data_url_whitespace_and_no_declared_type() -> None:
    data = picture("PNG")
    text = b64(data)
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert decode_image(f"data:image/png;base64,{wrapped}", None, LIMITS).mime_type == "image/png"
    assert decode_image(text, None, LIMITS).width == 33
    assert decode_image(b64(picture("JPEG")), "image/jpg", LIMITS).mime_type == "image/jpeg"


@pytest.mark.parametrize(
    ("text", "mime", "problem"),
    [
        ("not base64 at all!", "image/png", "not valid base64"),
        ("aGVsbG8gd29ybGQ=", "image/png", "not a JPEG, PNG or WebP"),
        ("", "image/png", "empty"),
        ("ünïcode", None, "non-ASCII"),
        ("data:image/png,rawtext", None, "data URL"),
        ("R0lGODlhAQABAAAAACw=", "image/gif", "MIME type 'image/gif'"),
    ],
)
def test_bad_input_is_invalid_image(text: str, mime: str | None, problem: str) -> None:
    with pytest.raises(InvalidImage) as err:
        decode_image(text, mime, LIMITS)
    assert problem in err.value.message
    assert err.value.code == "invalid_image"


def test_declared_type_must_match_the_bytes() -> None:
    with pytest.raises(InvalidImage, match="declared image/jpeg but its data is image/png"):
        decode_image(b64(picture("PNG")), "image/jpeg", LIMITS)


def test_truncated_header_is_damaged_not_a_crash() -> None:
    for fmt in ("JPEG", "PNG", "WEBP"):
        head = picture(fmt)[:14]
        with pytest.raises(InvalidImage, match="damaged header"):
            identify(head)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims a huge canvas, with one tiny compressed row: what a
    decompression bomb looks like from the outside."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )


def test_pixel_limit_is_checked_from_the_header() -> None:
    bomb = _png_header_only(100_000, 100_000)
    assert len(bomb) < 200
    with pytest.raises(InvalidImage) as err:
        decode_image(b64(bomb), "image/png", LIMITS)
    assert "100000x100000 pixels" in err.value.message
    assert err.value.details["limit"] == LIMITS.max_image_pixels
    small = VisionSection(max_image_pixels=33 * 17 - 1)
    with pytest.raises(InvalidImage):
        decode_image(b64(picture("WEBP")), None, small)


def test_byte_limit_refuses_before_decoding() -> None:
    limits = VisionSection(max_image_bytes=2048)
    big = picture("PNG", (400, 400), compress_level=0)
    assert len(big) > 2048
    with pytest.raises(InvalidImage, match="larger than 2048 bytes"):
        decode_image(b64(big), "image/png", limits)


def test_count_limit() -> None:
    one = (b64(picture("PNG")), "image/png")
    assert len(decode_images([one] * 2, VisionSection(max_images=2))) == 2
    with pytest.raises(InvalidImage, match="3 images in one request; at most 2"):
        decode_images([one] * 3, VisionSection(max_images=2))


def test_images_name_their_position() -> None:
    good = (b64(picture("PNG")), "image/png")
    with pytest.raises(InvalidImage, match="image 1 is not valid base64"):
        decode_images([good, ("%%%", "image/png")], LIMITS)


def test_urls_are_never_fetched_or_opened() -> None:
    for url in ("http://example.com/a.png", "HTTPS://10.0.0.1/x.jpg", "file:///etc/passwd"):
        with pytest.raises(InvalidImage) as err:
            decode_image(url, None, LIMITS)
        assert err.value.details["url_scheme"] == url.split(":")[0].lower()
        assert "not fetched" in err.value.message


def test_images_are_grouped_per_message_and_counted_together() -> None:
    png = b64(picture("PNG"))
    groups = decode_grouped([[(png, None)], [], [(png, "image/png"), (png, None)]], LIMITS)
    assert [len(g) for g in groups] == [1, 0, 2]
    with pytest.raises(InvalidImage):
        decode_grouped([[(png, None)] * 5, [(png, None)] * 4], LIMITS)  # 9 > 8
