"""Mime types and the text/binary decision for stored files.

A file is *text* when its bytes are valid UTF-8 without NUL and its type is
not an image, sound or video (SVG excepted): text files are indexed by FTS5
and searchable with grep; binary ones are stored byte for byte and described,
never shown, to the model.

Types come from an explicit ``mime`` argument, else the content's magic bytes
(PNG, JPEG, GIF, WebP, WAV, PDF...), else the name's extension (Python's
built-in table, not the host's ``/etc/mime.types``, so results are the same
on every machine), else ``text/plain`` or ``application/octet-stream``.
"""

from __future__ import annotations

import mimetypes

_TABLE = mimetypes.MimeTypes(filenames=())
_EXTRA = {
    ".md": "text/markdown", ".markdown": "text/markdown", ".wav": "audio/wav", ".yaml": "application/yaml",
    ".yml": "application/yaml", ".toml": "application/toml", ".jsonl": "application/jsonl",
    ".log": "text/plain", ".gguf": "application/octet-stream", ".flac": "audio/flac",
}
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"GGUF", "application/octet-stream"),
    (b"OggS", "audio/ogg"),
    (b"fLaC", "audio/flac"),
    (b"ID3", "audio/mpeg"),
)
_TEXTUAL_NON_TEXT = ("image/svg+xml",)


_FIRST_BYTES = frozenset(magic[0] for magic, _ in _MAGIC) | {b"R"[0]}


def sniff(data: bytes) -> str | None:
    """The type given by the content's magic bytes, or None."""
    if not data or data[0] not in _FIRST_BYTES:
        return None
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in _MAGIC:
        if mime and data.startswith(magic):
            return mime
    return None


def guess_from_name(name: str) -> str | None:
    """The type given by the name's extension, or None."""
    dot = name.rfind(".")
    if dot <= 0:
        return None
    extension = name[dot:].lower()
    return _EXTRA.get(extension) or _TABLE.types_map[True].get(extension) or _TABLE.types_map[False].get(extension)


def is_utf8_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def classify(name: str, data: bytes, mime: str | None = None) -> tuple[str, bool]:
    """Return ``(mime, is_text)`` for a file called ``name`` holding ``data``."""
    utf8 = is_utf8_text(data)
    chosen = mime or sniff(data) or guess_from_name(name)
    if not chosen:
        chosen = "text/plain" if utf8 else "application/octet-stream"
    media = chosen.split("/", 1)[0]
    is_text = utf8 and (media not in ("image", "audio", "video") or chosen in _TEXTUAL_NON_TEXT)
    return chosen, is_text
