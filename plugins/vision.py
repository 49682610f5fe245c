"""The vision driver: read the text in an image, and say what can honestly be said about it offline.

Images are files of the SQLite filesystem (bring host files in with
``llmos fs put`` or a task's ``inputs``).

* ``ocr(path)`` — Tesseract (Debian ``tesseract-ocr`` + ``tesseract-ocr-eng``,
  Python ``pytesseract``); RapidOCR (``rapidocr-onnxruntime``, its ONNX models
  ship inside the wheel) as the fallback. ``LLMOS_OCR_BACKEND=auto|tesseract|rapidocr``.
* ``describe_image(path)`` — facts, not guesses: format, size, colour mode,
  EXIF (camera, date, GPS), main colours, text found by OCR, and frontal faces
  found by OpenCV's Haar cascade (``opencv-python-headless``). It does not
  recognise objects or people: no such model ships offline.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import shutil
import threading
from typing import Any

from llmos_shell import DriverStatus, LlmosError, UsageError, hookimpl
from llmos_shell import toolkit

BACKENDS = ("auto", "tesseract", "rapidocr")
ENV = "LLMOS_OCR_BACKEND"
MAX_PIXELS = 64_000_000  # refuse decompression bombs before decoding


# --- loading ----------------------------------------------------------------------------

def _open_image(data: bytes, path: str):
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise UsageError(f"{path}: not an image format Pillow can read") from None
    except Image.DecompressionBombError:
        raise UsageError(f"{path}: image is larger than {MAX_PIXELS:,} pixels") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise UsageError(f"{path}: damaged image ({error})") from None
    return image, ImageOps.exif_transpose(image)


def _rgb(image):
    if image.mode in ("RGBA", "LA", "P"):
        from PIL import Image

        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


# --- OCR backends -----------------------------------------------------------------------

def _tesseract_available() -> bool:
    return shutil.which("tesseract") is not None and importlib.util.find_spec("pytesseract") is not None


def _rapidocr_available() -> bool:
    return importlib.util.find_spec("rapidocr_onnxruntime") is not None


@functools.lru_cache(maxsize=1)
def _tesseract_languages() -> frozenset[str]:
    import pytesseract

    return frozenset(pytesseract.get_languages(config=""))


def _ocr_tesseract(image, language: str) -> tuple[str, float | None]:
    import pytesseract

    if language not in _tesseract_languages():
        raise UsageError(f"tesseract has no language {language!r} installed "
                         f"(have: {', '.join(sorted(_tesseract_languages()))}; "
                         f"apt-get install tesseract-ocr-{language})")
    gray = _rgb(image).convert("L")
    if min(gray.size) < 300:  # Tesseract reads small print badly: upscale
        scale = 300 / min(gray.size)
        gray = gray.resize((round(gray.width * scale), round(gray.height * scale)))
    data = pytesseract.image_to_data(gray, lang=language, output_type=pytesseract.Output.DICT)
    lines: dict[tuple[int, int, int], list[str]] = {}
    confidences = []
    for i, word in enumerate(data["text"]):
        conf = float(data["conf"][i])
        if not word.strip() or conf < 0:
            continue
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        lines.setdefault(key, []).append(word)
        confidences.append(conf)
    text = "\n".join(" ".join(words) for _, words in sorted(lines.items()))
    mean = sum(confidences) / len(confidences) / 100 if confidences else None
    return text, mean


_rapid_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _rapidocr_engine():
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR()


def _ocr_rapidocr(image) -> tuple[str, float | None]:
    import numpy as np

    with _rapid_lock:  # one engine, one caller at a time
        result, _ = _rapidocr_engine()(np.asarray(_rgb(image))[:, :, ::-1])  # RGB -> BGR
    if not result:
        return "", None
    # sort boxes top to bottom, then left to right; boxes whose tops are close form a line
    boxes = sorted(((min(p[1] for p in box), min(p[0] for p in box), text, score)
                    for box, text, score in result))
    lines: list[list[tuple[float, str]]] = []
    last_top = None
    for top, left, text, _ in boxes:
        if last_top is None or top - last_top > 10:
            lines.append([])
        lines[-1].append((left, text))
        last_top = top
    text = "\n".join(" ".join(t for _, t in sorted(line)) for line in lines)
    return text, sum(float(s) for *_, s in result) / len(result)


def backend_setting() -> str:
    return toolkit.backend_setting(ENV, BACKENDS)


def _read_text(image, language: str) -> dict[str, Any]:
    backend = backend_setting()
    if backend in ("auto", "tesseract") and _tesseract_available():
        text, confidence = _ocr_tesseract(image, language)
        return {"text": text, "backend": "tesseract", "confidence": confidence}
    if backend == "tesseract":
        raise LlmosError("ocr: Tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-eng; "
                         "pip install pytesseract)")
    if _rapidocr_available():
        text, confidence = _ocr_rapidocr(image)
        return {"text": text, "backend": "rapidocr", "confidence": confidence}
    raise LlmosError("ocr: no OCR backend installed (apt-get install tesseract-ocr tesseract-ocr-eng and "
                     "pip install pytesseract, or pip install rapidocr-onnxruntime)")


# --- describing -------------------------------------------------------------------------

_COLOURS = {
    "black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128), "silver": (192, 192, 192),
    "red": (200, 30, 30), "orange": (245, 140, 20), "yellow": (240, 220, 40), "green": (40, 160, 60),
    "cyan": (40, 200, 210), "blue": (40, 80, 200), "navy": (20, 30, 100), "purple": (130, 50, 160),
    "pink": (240, 150, 190), "brown": (120, 75, 40), "beige": (225, 205, 170), "olive": (110, 110, 40),
}


def _colour_name(rgb: tuple[int, int, int]) -> str:
    return min(_COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(rgb, _COLOURS[name])))


def _main_colours(image) -> list[dict[str, Any]]:
    small = _rgb(image).copy()
    small.thumbnail((128, 128))
    quantised = small.quantize(colors=6)
    palette = quantised.getpalette()
    counts = sorted(quantised.getcolors(), reverse=True)
    total = sum(c for c, _ in counts)
    shares: dict[str, float] = {}
    for count, index in counts:
        rgb = tuple(palette[3 * index:3 * index + 3])
        name = _colour_name(rgb)  # type: ignore[arg-type]
        shares[name] = shares.get(name, 0.0) + count / total
    return [{"colour": name, "share": round(share, 2)}
            for name, share in sorted(shares.items(), key=lambda item: -item[1]) if share >= 0.05]


def _plain(value: Any) -> Any:
    """An EXIF value as JSON: rationals to floats, bytes dropped, long strings cut."""
    from PIL.TiffImagePlugin import IFDRational

    if isinstance(value, IFDRational):
        return round(float(value), 6) if value.denominator else None
    if isinstance(value, bytes):
        return None
    if isinstance(value, str):
        return value.strip("\x00 ")[:200]
    if isinstance(value, (tuple, list)):
        items = [_plain(v) for v in value]
        return items if all(v is not None for v in items) and len(items) <= 16 else None
    if isinstance(value, (int, float)):
        return value
    return None


def _exif(image) -> dict[str, Any]:
    from PIL import ExifTags

    exif = image.getexif()
    out: dict[str, Any] = {}
    for tag, value in list(exif.items()) + list(exif.get_ifd(ExifTags.IFD.Exif).items()):
        name = ExifTags.TAGS.get(tag)
        plain = _plain(value)
        if name and plain not in (None, "", []) and name not in ("ExifOffset", "GPSInfo", "MakerNote"):
            out[name] = plain
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    if gps:
        def degrees(values, ref) -> float | None:
            try:
                d, m, s = (float(v) for v in values)
            except (TypeError, ValueError, ZeroDivisionError):
                return None
            sign = -1 if ref in ("S", "W") else 1
            return round(sign * (d + m / 60 + s / 3600), 6)

        lat = degrees(gps.get(2), gps.get(1))
        lon = degrees(gps.get(4), gps.get(3))
        if lat is not None and lon is not None:
            out["GPS"] = {"latitude": lat, "longitude": lon}
    return out


FACES_HOW = "pip install 'opencv-python-headless>=4.8,<5'"


@functools.lru_cache(maxsize=1)
def _opencv_problem() -> str | None:
    """Why faces cannot be found here, or None. (OpenCV 5 moved the Haar cascades out of the main package.)"""
    if importlib.util.find_spec("cv2") is None:
        return f"OpenCV is not installed: {FACES_HOW}"
    try:
        import cv2
    except ImportError as error:
        return f"OpenCV does not import ({error}): {FACES_HOW}"
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        return f"OpenCV {cv2.__version__} has no Haar cascades: {FACES_HOW}"
    return None


@functools.lru_cache(maxsize=1)
def _face_cascade():
    import cv2

    path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise LlmosError(f"OpenCV could not load its face cascade from {path}")
    return cascade


def find_faces(image) -> list[dict[str, int]]:
    """Frontal faces (OpenCV Haar cascade) as boxes in the image's pixel coordinates."""
    import cv2
    import numpy as np

    gray = np.asarray(_rgb(image).convert("L"))
    scale = 1.0
    if max(gray.shape) > 1024:  # detection time grows with pixels; faces stay findable at 1024 px
        scale = 1024 / max(gray.shape)
        gray = cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)),
                          interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    found = _face_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    return [{"x": round(x / scale), "y": round(y / scale), "width": round(w / scale),
             "height": round(h / scale)} for (x, y, w, h) in found]


def _summary(facts: dict[str, Any]) -> str:
    size_kb = facts["bytes"] / 1024
    parts = [f"A {facts['width']} × {facts['height']} pixel {facts['format'] or 'image'} "
             f"({facts['mode']}, {size_kb:.0f} KB)"]
    if facts.get("frames", 1) > 1:
        parts[0] += f" with {facts['frames']} frames"
    if facts.get("colours"):
        parts.append("mostly " + ", ".join(c["colour"] for c in facts["colours"][:3]))
    faces = facts.get("faces")
    if faces is not None:
        parts.append(f"{len(faces)} face{'s' if len(faces) != 1 else ''} found" if faces else "no face found")
    text = (facts.get("text") or "").strip()
    if facts.get("text") is not None:
        parts.append(f"text found: {text[:80]!r}" if text else "no text found")
    exif = facts.get("exif") or {}
    camera = " ".join(str(exif[k]) for k in ("Make", "Model") if k in exif)
    if camera:
        parts.append(f"taken with {camera}")
    if "DateTimeOriginal" in exif or "DateTime" in exif:
        parts.append(f"dated {exif.get('DateTimeOriginal') or exif.get('DateTime')}")
    return "; ".join(parts) + "."


# --- syscalls ---------------------------------------------------------------------------

def ocr(path: str, language: str = "eng", ctx=None) -> dict:
    """Read the text in an image file of the filesystem (OCR).

    Args:
        path: Path of the image in the filesystem, like /inputs/scan.png.
        language: Tesseract language code of the text in the image; leave out for English.
    """
    _, image = _open_image(ctx.fs.read(path), path)
    return {"path": path, **_read_text(image, language)}


def describe_image(path: str, ctx=None) -> dict:
    """Describe an image file of the filesystem: format, size, EXIF, main colours, text and faces found.

    Args:
        path: Path of the image in the filesystem, like /inputs/photo.jpg.
    """
    data = ctx.fs.read(path)
    original, image = _open_image(data, path)
    facts: dict[str, Any] = {
        "path": path, "format": original.format, "mime": original.get_format_mimetype()
        if hasattr(original, "get_format_mimetype") else None,
        "width": image.width, "height": image.height, "mode": original.mode, "bytes": len(data),
        "frames": getattr(original, "n_frames", 1),
    }
    notes: list[str] = []
    facts["exif"] = _exif(original)
    facts["colours"] = _main_colours(image)
    try:
        found = _read_text(image, "eng")
    except LlmosError as error:
        facts["text"] = None
        notes.append(f"text not checked: {error}")
    else:
        # on photos OCR finds noise: keep it only when the backend is reasonably sure
        confident = found["confidence"] is not None and found["confidence"] >= 0.6
        facts["text"] = found["text"] if confident else ""
        facts["text_backend"] = found["backend"]
    problem = _opencv_problem()
    if problem is None:
        facts["faces"] = find_faces(image)
    else:
        facts["faces"] = None
        notes.append(f"faces not checked: {problem}")
    if notes:
        facts["notes"] = notes
    facts["summary"] = _summary(facts)
    return facts


@hookimpl
def register_syscalls(register):
    register(ocr, capabilities=["reads_fs"], reads=["image/*"], output="text", examples=[
        "What does the sign in /inputs/sign.png say?", "Read the text in /scans/letter.jpg",
        "What is written on /photos/label.png?", "OCR /inputs/receipt.png",
        "Transcribe the text of the scanned page /scans/page1.png", "What does the poster say?",
    ])
    register(describe_image, capabilities=["reads_fs"], reads=["image/*"], output="summary", examples=[
        "Describe the picture /photos/beach.jpg", "What is in the photo /photos/party.png?",
        "How big is the image /inputs/logo.png?", "Are there any faces in /photos/group.jpg?",
        "Tell me about the image /camera/img_001.jpg", "What colours are in /art/painting.png?",
        "Is there someone in /photos/garden.jpg?", "Who is in the picture /camera/img_042.png?",
    ])


@hookimpl
def driver_status(system):
    backend = backend_setting()  # a bad setting raises UsageError: the driver shows as unavailable, saying why
    if importlib.util.find_spec("PIL") is None:
        return DriverStatus("vision", False, detail="Pillow is not installed: pip install Pillow")
    usable, missing = toolkit.usable(backend, [
        toolkit.Backend("tesseract", _tesseract_available(),
                        fix="apt-get install tesseract-ocr tesseract-ocr-eng; pip install pytesseract"),
        toolkit.Backend("rapidocr", _rapidocr_available(), fix="pip install rapidocr-onnxruntime")])
    problem = _opencv_problem()
    faces = "faces: opencv" if problem is None else ""
    if problem is not None:
        missing.append(f"faces: {problem}")
    if not usable:
        return DriverStatus("vision", False, backend=faces, detail="no OCR backend; " + "; ".join(missing))
    ocr_backend = "ocr: " + ", falling back to ".join(usable)
    return DriverStatus("vision", True, backend=", ".join(b for b in (ocr_backend, faces) if b),
                        detail="; ".join(missing))
