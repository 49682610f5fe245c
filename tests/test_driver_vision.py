"""The vision driver: OCR with Tesseract or RapidOCR, and honest facts about an image."""

from __future__ import annotations

import io

import pytest

from driver_fixtures import clean_backends, needs_binary, needs_module, package_file, system, text_image  # noqa: F401
from llmos_plugins import vision as driver
from llmos_shell.errors import FsError, UsageError

pytestmark = pytest.mark.usefixtures("clean_backends")

tesseract = [pytest.mark.system, needs_binary("tesseract", "tesseract-ocr tesseract-ocr-eng"),
             needs_module("pytesseract", "pytesseract")]
rapidocr = needs_module("rapidocr_onnxruntime", "rapidocr-onnxruntime")
opencv = pytest.mark.skipif(driver._opencv_problem() is not None, reason=str(driver._opencv_problem()))


def with_marks(marks):
    def apply(function):
        for mark in reversed(marks):
            function = mark(function)
        return function
    return apply


@with_marks(tesseract)
def test_tesseract_reads_hello_world(system):
    system.fs.write("/inputs/hello.png", text_image("HELLO WORLD 42"))
    result = system.call("ocr", {"path": "/inputs/hello.png"})
    assert result["backend"] == "tesseract"
    assert result["text"] == "HELLO WORLD 42"
    assert result["confidence"] > 0.8


@rapidocr
def test_rapidocr_reads_hello_world(system, monkeypatch):
    monkeypatch.setenv("LLMOS_OCR_BACKEND", "rapidocr")
    system.fs.write("/inputs/hello.png", text_image("HELLO WORLD 42"))
    result = system.call("ocr", {"path": "/inputs/hello.png"})
    assert result["backend"] == "rapidocr"
    assert result["text"].replace(" ", "") == "HELLOWORLD42"


@with_marks(tesseract)
def test_ocr_of_two_lines_and_a_jpeg(system):
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (900, 300), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=48)
    draw.text((40, 50), "Meeting at 10:30", fill="black", font=font)
    draw.text((40, 170), "Room B7 Floor 3", fill="black", font=font)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    system.fs.write("/inputs/note.jpg", out.getvalue())
    assert system.call("ocr", {"path": "/inputs/note.jpg"})["text"].splitlines() == [
        "Meeting at 10:30", "Room B7 Floor 3"]


@with_marks(tesseract)
def test_ocr_explains_a_missing_tesseract_language(system):
    system.fs.write("/inputs/hello.png", text_image("HELLO"))
    with pytest.raises(UsageError, match="apt-get install tesseract-ocr-xyz"):
        system.call("ocr", {"path": "/inputs/hello.png", "language": "xyz"})


def test_a_file_that_is_not_an_image_is_a_usage_error(system):
    system.fs.write("/notes/a.txt", "not a picture")
    with pytest.raises(UsageError, match="not an image"):
        system.call("describe_image", {"path": "/notes/a.txt"})
    with pytest.raises(UsageError, match="not an image"):
        system.call("ocr", {"path": "/notes/a.txt"})


def test_a_missing_file_is_a_filesystem_error(system):
    with pytest.raises(FsError):
        system.call("describe_image", {"path": "/inputs/nothing.png"})


@opencv
def test_describe_finds_the_face_of_the_astronaut(system):
    # Eileen Collins' NASA portrait (public domain), shipped inside the scikit-image wheel
    photo = package_file("scikit-image", "skimage/data/astronaut.png").read_bytes()
    system.fs.write("/inputs/astronaut.png", photo)
    facts = system.call("describe_image", {"path": "/inputs/astronaut.png"})
    assert (facts["format"], facts["width"], facts["height"], facts["mode"]) == ("PNG", 512, 512, "RGB")
    assert facts["bytes"] == len(photo)
    assert len(facts["faces"]) == 1
    face = facts["faces"][0]
    assert 150 < face["x"] < 220 and 40 < face["y"] < 110 and 60 < face["width"] < 140  # her head
    assert "1 face found" in facts["summary"]


@opencv
def test_describe_finds_no_face_in_a_photo_of_a_cat(system):
    photo = package_file("scikit-image", "skimage/data/chelsea.png").read_bytes()
    system.fs.write("/inputs/chelsea.png", photo)
    facts = system.call("describe_image", {"path": "/inputs/chelsea.png"})
    assert facts["faces"] == [] and "no face found" in facts["summary"]


@with_marks(tesseract)
def test_describe_reports_text_colours_and_exif(system):
    from PIL import Image

    image = Image.open(io.BytesIO(text_image("HELLO WORLD 42")))
    exif = Image.Exif()
    exif[0x010F] = "Canon"                      # Make
    exif[0x0110] = "EOS 550D"                   # Model
    exif[0x0132] = "2024:05:01 10:30:00"        # DateTime
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, exif=exif)
    system.fs.write("/inputs/shot.jpg", out.getvalue())
    facts = system.call("describe_image", {"path": "/inputs/shot.jpg"})
    assert facts["format"] == "JPEG" and facts["mime"] == "image/jpeg"
    assert facts["exif"]["Make"] == "Canon" and facts["exif"]["Model"] == "EOS 550D"
    assert facts["text"] == "HELLO WORLD 42"
    assert facts["colours"][0]["colour"] == "white"
    assert "taken with Canon EOS 550D" in facts["summary"] and "dated 2024:05:01 10:30:00" in facts["summary"]


def test_gps_exif_becomes_degrees():
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    image = Image.new("RGB", (8, 8))
    exif = image.getexif()
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (IFDRational(48), IFDRational(51), IFDRational(24)),
                3: "W", 4: (IFDRational(2), IFDRational(21), IFDRational(0))})
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    reopened = Image.open(io.BytesIO(out.getvalue()))
    assert driver._exif(reopened)["GPS"] == {"latitude": 48.856667, "longitude": -2.35}


@pytest.mark.system
def test_status_names_the_ocr_backends(system):
    if not driver._tesseract_available():
        pytest.skip("Tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-eng)")
    status = {s.name: s for s in system.driver_statuses()}["vision"]
    assert status.ok and status.backend.startswith("ocr: tesseract")


def test_status_without_any_ocr_backend_says_what_to_install(system, monkeypatch):
    monkeypatch.setattr(driver, "_tesseract_available", lambda: False)
    monkeypatch.setattr(driver, "_rapidocr_available", lambda: False)
    status = {s.name: s for s in system.driver_statuses()}["vision"]
    assert not status.ok and status.detail.startswith("no OCR backend")
    assert "tesseract: apt-get install tesseract-ocr" in status.detail and "rapidocr: pip install" in status.detail


def test_status_with_a_bad_setting(system, monkeypatch):
    monkeypatch.setenv("LLMOS_OCR_BACKEND", "gpt4v")
    status = {s.name: s for s in system.driver_statuses()}["vision"]
    assert not status.ok and "LLMOS_OCR_BACKEND" in status.detail
