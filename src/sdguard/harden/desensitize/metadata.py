"""Lossless metadata stripping: the image file's bytes without EXIF (GPS position, camera serial,
time), XMP, IPTC, comments and PNG text chunks (where image UIs such as AUTOMATIC1111's write the
prompt, ``parameters``, and ComfyUI its workflow), and ICC profiles where asked.

The pixels are never decoded and re-encoded: the container is parsed and the metadata segments
are left out, so the image data is byte for byte the original's (a re-encoded JPEG would lose
quality). What each format loses:

- JPEG: APP1 (EXIF, XMP), APP13 (Photoshop IRB with IPTC), COM, every APPn but APP0 (JFIF/JFXX)
  and APP14 (Adobe: it says how the colours are coded, so decoding needs it) and APP2 ICC (kept
  unless ``keep_icc=False``); anything after the end-of-image marker (phones append secondary
  images there, each with its own EXIF, and the MPF index in APP2 that points at them);
- PNG: ``tEXt``, ``zTXt``, ``iTXt`` (XMP is an iTXt), ``eXIf``, ``tIME``; ``iCCP`` where asked;
  anything after ``IEND``;
- WebP: the ``EXIF`` and ``XMP`` chunks (and ``ICCP`` where asked), with the VP8X flags and the
  RIFF size set to match.

Other formats (GIF, BMP, TIFF, ...) come back unchanged and labelled ``unsupported:<format>``, so
the report counts them. A file that is not what its header says raises :class:`MetadataError`.
"""

from __future__ import annotations

import struct
import zlib

#: what :func:`strip_metadata` names in its labels
LABELS = {
    "exif": "EXIF block", "exif-gps": "EXIF with a GPS position", "xmp": "XMP packet", "iptc": "IPTC / Photoshop "
    "resources", "comment": "comment", "icc": "ICC colour profile", "mpf": "multi-picture index", "trailer": "data "
    "after the end of the image", "png-time": "PNG modification time", "app": "other application segment",
}

_XMP_IDS = (b"http://ns.adobe.com/xap/1.0/\x00", b"http://ns.adobe.com/xmp/extension/\x00")
_GPS_IFD = 0x8825


class MetadataError(ValueError):
    """The bytes are not a well-formed file of the format their header names."""


def image_format(data: bytes) -> str:
    """``jpeg``, ``png``, ``webp`` or another name (``gif``, ``bmp``, ``tiff``, ``unknown``) from the magic bytes."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return "unknown"


def strip_metadata(data: bytes, *, keep_icc: bool = True) -> tuple[bytes, list[str]]:
    """``data`` without its metadata, and the labels of what was removed (sorted, unique; see
    :data:`LABELS`; ``png-text:<keyword>`` per PNG text chunk). Unsupported formats come back
    unchanged with the label ``unsupported:<format>``."""
    fmt = image_format(data)
    strip = {"jpeg": _jpeg, "png": _png, "webp": _webp}.get(fmt)
    if strip is None:
        return data, [f"unsupported:{fmt}"]
    out, labels = strip(data, keep_icc)
    return out, sorted(set(labels))


def metadata_labels(data: bytes) -> list[str]:
    """The labels of the metadata ``data`` holds (what :func:`strip_metadata` would remove, ICC included)."""
    return strip_metadata(data, keep_icc=False)[1]


# ---------------------------------------------------------------- JPEG
def _has_gps(exif: bytes) -> bool:
    """Whether an EXIF block (after ``Exif\\0\\0``) has a GPS IFD pointer in IFD0."""
    if len(exif) < 8 or exif[:2] not in (b"II", b"MM"):
        return False
    e = "<" if exif[:2] == b"II" else ">"
    (ifd,) = struct.unpack(e + "I", exif[4:8])
    if ifd + 2 > len(exif):
        return False
    (n,) = struct.unpack(e + "H", exif[ifd:ifd + 2])
    for i in range(min(n, 512)):
        at = ifd + 2 + 12 * i
        if at + 2 > len(exif):
            break
        if struct.unpack(e + "H", exif[at:at + 2])[0] == _GPS_IFD:
            return True
    return False


def _jpeg_segment(marker: int, body: bytes, keep_icc: bool) -> list[str]:
    """Labels of a JPEG marker segment to remove; [] keeps it."""
    if marker == 0xE0:
        return [] if body.startswith((b"JFIF\x00", b"JFXX\x00")) else ["app"]
    if marker == 0xE1:
        if body.startswith(b"Exif\x00\x00"):
            return ["exif", "exif-gps"] if _has_gps(body[6:]) else ["exif"]
        return ["xmp"] if body.startswith(_XMP_IDS) else ["app"]
    if marker == 0xE2:
        if body.startswith(b"ICC_PROFILE\x00"):
            return [] if keep_icc else ["icc"]
        return ["mpf"] if body.startswith(b"MPF\x00") else ["app"]
    if marker == 0xED:
        return ["iptc"]
    if marker == 0xEE:
        return []  # APP14 Adobe: the colour transform the decoder needs
    if 0xE3 <= marker <= 0xEF:
        return ["app"]
    if marker == 0xFE:
        return ["comment"]
    return []


def _jpeg(data: bytes, keep_icc: bool) -> tuple[bytes, list[str]]:
    out, labels, pos, n = bytearray(data[:2]), [], 2, len(data)
    while pos < n:
        if data[pos] != 0xFF:
            raise MetadataError(f"a JPEG marker was expected at byte {pos}")
        while pos + 1 < n and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 1 >= n:
            raise MetadataError("the JPEG ends inside a marker")
        marker = data[pos + 1]
        if marker == 0xD9:  # end of image
            out += b"\xff\xd9"
            if data[pos + 2:].strip(b"\x00"):
                labels.append("trailer")
            return bytes(out), labels
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # stand-alone markers
            out += data[pos:pos + 2]
            pos += 2
            continue
        if pos + 4 > n:
            raise MetadataError("the JPEG ends inside a segment header")
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        end = pos + 2 + length
        if length < 2 or end > n:
            raise MetadataError(f"a JPEG segment at byte {pos} runs past the end of the file")
        drop = _jpeg_segment(marker, data[pos + 4:end], keep_icc)
        labels += drop
        if not drop:
            out += data[pos:end]
        pos = end
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            scan = pos
            while pos + 1 < n and not (data[pos] == 0xFF and data[pos + 1] not in (0x00, *range(0xD0, 0xD8))):
                pos += 1
            if pos + 1 >= n:  # truncated scan without an end marker: keep what there is
                out += data[scan:]
                return bytes(out), labels
            out += data[scan:pos]
    raise MetadataError("the JPEG has no end-of-image marker")


# ---------------------------------------------------------------- PNG
def _png(data: bytes, keep_icc: bool) -> tuple[bytes, list[str]]:
    out, labels, pos, n = bytearray(data[:8]), [], 8, len(data)
    while pos + 12 <= n:
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > n:
            raise MetadataError(f"the PNG chunk {kind!r} at byte {pos} runs past the end of the file")
        body = data[pos + 8:pos + 8 + length]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[end - 4:end])[0]:
            raise MetadataError(f"the PNG chunk {kind.decode('latin-1')!r} at byte {pos} has a wrong checksum")
        drop = _png_labels(kind, body, keep_icc)
        labels += drop
        if not drop:
            out += data[pos:end]
        pos = end
        if kind == b"IEND":
            if data[pos:].strip(b"\x00"):
                labels.append("trailer")
            return bytes(out), labels
    raise MetadataError("the PNG has no IEND chunk")


def _png_labels(kind: bytes, body: bytes, keep_icc: bool) -> list[str]:
    if kind in (b"tEXt", b"zTXt", b"iTXt"):
        keyword = body.split(b"\x00", 1)[0].decode("latin-1", "replace")[:79]
        return ["xmp"] if keyword == "XML:com.adobe.xmp" else [f"png-text:{keyword}"]
    if kind == b"eXIf":
        return ["exif", "exif-gps"] if _has_gps(body) else ["exif"]
    if kind == b"tIME":
        return ["png-time"]
    return ["icc"] if kind == b"iCCP" and not keep_icc else []


# ---------------------------------------------------------------- WebP
_VP8X_ICC, _VP8X_EXIF, _VP8X_XMP = 0x20, 0x08, 0x04


def _webp(data: bytes, keep_icc: bool) -> tuple[bytes, list[str]]:
    chunks, labels, pos = [], [], 12
    (riff_size,) = struct.unpack("<I", data[4:8])
    n = min(len(data), 8 + riff_size)
    while pos + 8 <= n:
        kind = data[pos:pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4:pos + 8])
        end = pos + 8 + size + (size & 1)
        if pos + 8 + size > n:
            raise MetadataError(f"the WebP chunk {kind!r} at byte {pos} runs past the end of the file")
        drop = {b"EXIF": ["exif"], b"XMP ": ["xmp"]}.get(kind) or (["icc"] if kind == b"ICCP" and not keep_icc else [])
        if kind == b"EXIF" and _has_gps(data[pos + 8:pos + 8 + size].removeprefix(b"Exif\x00\x00")):
            drop.append("exif-gps")
        labels += drop
        if not drop:
            chunks.append(bytearray(data[pos:end]))
        pos = end
    if not labels:
        return data, []
    for chunk in chunks:
        if chunk[:4] == b"VP8X":
            chunk[8] &= ~(_VP8X_EXIF | _VP8X_XMP | (0 if keep_icc else _VP8X_ICC)) & 0xFF
    body = b"WEBP" + b"".join(chunks)
    if len(data) > n and data[n:].strip(b"\x00"):
        labels.append("trailer")
    return b"RIFF" + struct.pack("<I", len(body)) + body, labels
