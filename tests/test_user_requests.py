"""Everyday requests through `llmos run`, with the real default model and the real drivers.

None of these requests is in the shared eval sets or in bench/data: they check that the
router's choices and the reply rules hold on requests nobody tuned on. One batch, so the
model loads once; each task is checked on what the user sees (the reply, the files).
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from conftest import run_llmos

# (request, front matter, the syscalls that must run in order, what the reply must contain)
REQUESTS = [
    ("Which bus goes to the airport? The timetable is in /travel/buses.txt", {},
     ["read_file"], ["\\b(X1|x1)\\b"]),
    ("Show me what is in the folder /travel", {}, ["list_files"], ["buses.txt"]),
    ("Could you put 'I am hungry' into Spanish?", {}, ["translate"], ["hambre"]),
    ("Jot down 'renew the passport' in /notes/reminders.txt", {}, ["write_file"], ["/notes/reminders.txt"]),
    ("How much is 1234 times 56?", {}, ["calculate"], ["69,?104"]),
    ("Good afternoon! Hope you are well.", {}, [], []),
    ("Please erase /travel/buses.txt", {}, ["delete_file"], []),
]


def _task(directory, index, request, front):
    path = directory / f"task{index}.md"
    path.write_text("---\n" + json.dumps({"approve": "never", "seed": 0, **front}) + "\n---\n" + request + "\n")
    return str(path)


@pytest.mark.model
def test_everyday_requests_do_what_the_user_asks(home, tmp_path, default_model_path):
    timetable = tmp_path / "buses.txt"
    timetable.write_text("Bus 14: city centre to the harbour.\nBus X1: city centre to the airport, every 20 minutes.\n")
    assert run_llmos("fs", "put", str(timetable), "/travel/buses.txt", home=home).returncode == 0
    files = [_task(tmp_path, i, request, front) for i, (request, front, _, _) in enumerate(REQUESTS)]
    result = run_llmos("run", "--json", *files, home=home)
    results = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(results) == len(REQUESTS), result.stderr
    for (request, _, calls, reply_has), data in zip(REQUESTS, results):
        ran = [c["name"] for c in data["syscalls"]]
        assert ran == calls, (request, data)
        assert '"name"' not in data["output"], (request, data["output"])  # never a call written out
        for pattern in reply_has:
            assert re.search(pattern, data["output"], re.I), (request, data["output"])
    # the delete was refused under approve: never, and the file is still there
    assert results[-1]["status"] == "denied"
    assert run_llmos("fs", "cat", "/travel/buses.txt", home=home).returncode == 0
    assert "renew the passport" in run_llmos("fs", "cat", "/notes/reminders.txt", home=home).stdout
    assert result.returncode == 3   # the worst of the batch: a denial


@pytest.mark.model
@pytest.mark.system
def test_a_sign_read_and_translated(home, tmp_path, default_model_path):
    if shutil.which("tesseract") is None:
        pytest.skip("Tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-eng)")
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (700, 140), "white")
    try:
        font = ImageFont.truetype("DejaVuSans-Bold.ttf", 44)
    except OSError:
        font = ImageFont.load_default()
    ImageDraw.Draw(image).text((30, 40), "THE SHOP IS CLOSED", fill="black", font=font)
    image.save(tmp_path / "shop.png")
    assert run_llmos("fs", "put", str(tmp_path / "shop.png"), "/inputs/shop.png", home=home).returncode == 0
    task = _task(tmp_path, 0, "Tell me what /inputs/shop.png says, in Spanish", {})
    result = run_llmos("run", "--json", task, home=home)
    data = json.loads(result.stdout)
    assert [c["name"] for c in data["syscalls"]] == ["ocr", "translate"], data
    assert "CLOSED" in data["syscalls"][1]["arguments"]["text"]   # the OCR text was piped in
    assert "tienda" in data["output"].lower(), data["output"]
