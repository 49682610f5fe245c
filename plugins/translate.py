"""The translate driver: text from one language into another.

Backends, chosen by ``LLMOS_TRANSLATE_BACKEND`` (default ``auto``):

* ``apertium`` — rule-based machine translation (Debian ``apertium`` plus a pair
  package such as ``apertium-eng-spa``): fast and deterministic, for the pairs
  that are installed only.
* ``cpu`` — the model itself, for any pair it knows. The request goes through
  the shared CPU (the kernel's single worker), never a second model instance.
  Long texts are translated paragraph group by paragraph group so that each
  request fits the context.
* ``auto`` — Apertium when the pair is installed, the CPU otherwise.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from typing import Any

from llmos_shell import hookimpl
from llmos_shell.errors import Cancelled, LlmosError, UsageError
from llmos_shell.hookspecs import DriverStatus

BACKENDS = ("auto", "cpu", "apertium")
ENV = "LLMOS_TRANSLATE_BACKEND"

# ISO 639-1 code -> (ISO 639-3 code as Apertium names its pairs, English name)
LANGUAGES: dict[str, tuple[str, str]] = {
    "en": ("eng", "English"), "es": ("spa", "Spanish"), "fr": ("fra", "French"),
    "de": ("deu", "German"), "it": ("ita", "Italian"), "pt": ("por", "Portuguese"),
    "ca": ("cat", "Catalan"), "gl": ("glg", "Galician"), "eu": ("eus", "Basque"),
    "oc": ("oci", "Occitan"), "ro": ("ron", "Romanian"), "nl": ("nld", "Dutch"),
    "sv": ("swe", "Swedish"), "da": ("dan", "Danish"), "nb": ("nob", "Norwegian Bokmål"),
    "nn": ("nno", "Norwegian Nynorsk"), "is": ("isl", "Icelandic"), "eo": ("epo", "Esperanto"),
    "pl": ("pol", "Polish"), "cs": ("ces", "Czech"), "ru": ("rus", "Russian"),
    "uk": ("ukr", "Ukrainian"), "bg": ("bul", "Bulgarian"), "el": ("ell", "Greek"),
    "tr": ("tur", "Turkish"), "ar": ("ara", "Arabic"), "he": ("heb", "Hebrew"),
    "hi": ("hin", "Hindi"), "ur": ("urd", "Urdu"), "zh": ("zho", "Chinese"),
    "ja": ("jpn", "Japanese"), "ko": ("kor", "Korean"), "vi": ("vie", "Vietnamese"),
    "id": ("ind", "Indonesian"), "ms": ("msa", "Malay"), "fi": ("fin", "Finnish"),
    "hu": ("hun", "Hungarian"), "cy": ("cym", "Welsh"), "ga": ("gle", "Irish"),
    "br": ("bre", "Breton"), "mt": ("mlt", "Maltese"), "af": ("afr", "Afrikaans"),
}
_ALIASES = {"castilian": "es", "español": "es", "espanol": "es", "français": "fr", "deutsch": "de",
            "english": "en", "ingles": "en", "inglés": "en", "português": "pt", "català": "ca",
            "norwegian": "nb", "mandarin": "zh", "farsi": "fa", "persian": "fa"}

# A few very common words per language: enough to guess the source of a sentence
# when the caller gives none (Apertium needs to know it; the CPU does not).
_FUNCTION_WORDS = {
    "en": "the of and to is in it that was for on are with as be at this have from by not you they".split(),
    "es": "el la los las de que y en un una es por con para no se del al lo está son como pero su".split(),
    "fr": "le la les des de et est un une du en que qui pas pour dans sur au avec ce il elle sont".split(),
    "ca": "el la els les de i és un una que en per amb no es del al als està són com però".split(),
    "pt": "o a os as de que e é um uma em do da no na para com não se por está são".split(),
    "it": "il lo la gli le di che e è un una in per con non si del della sono come ma".split(),
    "de": "der die das und ist nicht ein eine zu den von mit sich auf für dem des im sind".split(),
    "nl": "de het een en van is dat niet op te in met zijn voor er aan ook maar".split(),
}


def language_code(value: str) -> str:
    """Normalise a language given as a code (``es``, ``spa``, ``es-ES``) or a name (``Spanish``)."""
    text = value.strip().lower().replace("_", "-")
    if not text:
        raise UsageError("empty language")
    if text in _ALIASES:
        return _ALIASES[text]
    base = text.split("-")[0]
    if base in LANGUAGES:
        return base
    for code, (iso3, name) in LANGUAGES.items():
        if base == iso3 or text == name.lower() or text.split(" (")[0] == name.lower():
            return code
    return text  # a language we have no table entry for: the CPU may still know it


def language_name(code: str) -> str:
    return LANGUAGES[code][1] if code in LANGUAGES else code


def guess_language(text: str) -> str | None:
    """The most likely language of ``text`` among a few, by counting function words; None if unsure."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    if not words:
        return None
    scores = {code: sum(1 for w in words if w in set(vocab)) for code, vocab in _FUNCTION_WORDS.items()}
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    (best, top), (_, second) = ranked[0], ranked[1]
    if top == 0 or top == second:
        return None
    return best


# --- Apertium ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def apertium_pairs() -> tuple[str, ...]:
    """Installed Apertium modes, such as ``eng-spa`` (empty if Apertium is not installed)."""
    if not shutil.which("apertium"):
        return ()
    try:
        listed = subprocess.run(["apertium", "-l"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(sorted(line.strip() for line in listed.stdout.splitlines() if line.strip()))


def apertium_mode(source: str | None, target: str) -> str | None:
    """The Apertium mode for a pair of language codes, if installed."""
    if source is None or source not in LANGUAGES or target not in LANGUAGES:
        return None
    mode = f"{LANGUAGES[source][0]}-{LANGUAGES[target][0]}"
    return mode if mode in apertium_pairs() else None


def translate_apertium(text: str, mode: str) -> str:
    try:
        done = subprocess.run(["apertium", "-u", mode], input=text, capture_output=True, text=True,
                              timeout=300)
    except subprocess.TimeoutExpired:
        raise LlmosError(f"apertium {mode} took more than 5 minutes") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise LlmosError(f"apertium {mode} failed: {reason}")
    return done.stdout.strip()


# --- the CPU ----------------------------------------------------------------------------

def _chunks(text: str, cpu: Any, budget: int) -> list[str]:
    """Groups of paragraphs of at most ``budget`` tokens (a paragraph too long is split by sentence)."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        if cpu.count_tokens(paragraph) <= budget:
            pieces.append(paragraph)
            continue
        sentences = re.split(r"(?<=[.!?。])\s+", paragraph)
        current = ""
        for sentence in sentences:
            candidate = f"{current} {sentence}".strip()
            if current and cpu.count_tokens(candidate) > budget:
                pieces.append(current)
                current = sentence
            else:
                current = candidate
        if current:
            pieces.append(current)
    groups: list[str] = []
    for piece in pieces:
        candidate = f"{groups[-1]}\n\n{piece}" if groups else piece
        if groups and cpu.count_tokens(candidate) <= budget:
            groups[-1] = candidate
        else:
            groups.append(piece)
    return groups


def _clean(reply: str, original: str) -> str:
    text = reply.strip()
    text = re.sub(r"^(translation|traducción|traduction|übersetzung)\s*:\s*", "", text, flags=re.I)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" and original[:1] not in "\"'":
        text = text[1:-1].strip()
    return text


def translate_cpu(text: str, target: str, source: str | None, cpu: Any, cancel) -> str:
    to_name = language_name(target)
    from_part = f" from {language_name(source)}" if source else ""
    system = ("You are a professional translator. Translate the user's text"
              f"{from_part} into {to_name}. Reply with the {to_name} translation only: "
              "no notes, no quotes, no explanations.")
    overhead = cpu.count_tokens(cpu.format_chat([{"role": "system", "content": system},
                                                 {"role": "user", "content": ""}]))
    # input + output (translations run up to ~1.5x the source in tokens) must fit the context
    budget = max(32, int((cpu.n_ctx - overhead - 16) / 2.6))
    out: list[str] = []
    for chunk in _chunks(text, cpu, budget):
        if cancel is not None and cancel.is_set():
            raise Cancelled("translate cancelled")
        # a one-paragraph text has a one-paragraph translation: stop before any commentary
        stop = ["\n\n"] if "\n\n" not in chunk else []
        reply = cpu.chat([{"role": "system", "content": system}, {"role": "user", "content": chunk}],
                         max_tokens=int(cpu.count_tokens(chunk) * 1.6) + 16, temperature=0.0,
                         stop=stop, cancel=cancel)
        out.append(_clean(reply, chunk))
    return "\n\n".join(out)


# --- the syscall ------------------------------------------------------------------------

def backend_setting() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise UsageError(f"{ENV}={value!r}: choose one of {', '.join(BACKENDS)}")
    return value


def translate(text: str, target_lang: str, source_lang: str | None = None, ctx=None) -> dict:
    """Translate text into another language.

    Args:
        text: The text to translate.
        target_lang: Language to translate into: a code like "es" or a name like "Spanish".
        source_lang: Language of the text (code or name); guessed when left out.
    """
    if not text.strip():
        raise UsageError("translate: text is empty")
    target = language_code(target_lang)
    source = language_code(source_lang) if source_lang else guess_language(text)
    result: dict[str, Any] = {"source_lang": source, "target_lang": target}
    if source == target:
        return {**result, "translation": text, "backend": "none (same language)"}
    backend = backend_setting()
    mode = apertium_mode(source, target)
    if backend == "apertium" or (backend == "auto" and mode):
        if mode is None:
            installed = ", ".join(apertium_pairs()) or "none"
            if source is None:
                raise UsageError("translate: give source_lang; Apertium needs to know it "
                                 f"(installed pairs: {installed})")
            package = f"apertium-{LANGUAGES.get(source, (source,))[0]}-{LANGUAGES.get(target, (target,))[0]}"
            raise UsageError(f"translate: Apertium has no {source}->{target} pair installed "
                             f"(installed: {installed}; try apt-get install {package}, "
                             f"or {ENV}=cpu)")
        return {**result, "translation": translate_apertium(text, mode), "backend": f"apertium {mode}"}
    cpu = ctx.cpu  # loads the model on first use; raises a clear LlmosError when none is installed
    cancel = ctx.cancel if ctx is not None else None
    return {**result, "translation": translate_cpu(text, target, source, cpu, cancel),
            "backend": f"cpu {getattr(cpu, 'name', '')}".strip()}


# --- hooks ------------------------------------------------------------------------------

@hookimpl
def register_syscalls(register):
    register(translate, capabilities=["uses_cpu"])


@hookimpl
def driver_status(system):
    try:
        backend = backend_setting()
    except UsageError as error:
        return DriverStatus("translate", False, detail=str(error))
    pairs = apertium_pairs()
    apertium = f"apertium ({', '.join(pairs)})" if pairs else ""
    cpu_ok, cpu_detail = system.cpu_status()
    how_apertium = "apt-get install apertium apertium-eng-spa (or another pair)"
    if backend == "apertium":
        return DriverStatus("translate", bool(pairs), backend=apertium,
                            detail="" if pairs else f"no Apertium pair installed: {how_apertium}")
    if backend == "cpu":
        return DriverStatus("translate", cpu_ok, backend=cpu_detail if cpu_ok else "",
                            detail="" if cpu_ok else cpu_detail)
    usable = [b for b in (apertium, cpu_detail if cpu_ok else "") if b]
    missing = [d for d in ("" if pairs else f"apertium: {how_apertium}", "" if cpu_ok else cpu_detail) if d]
    return DriverStatus("translate", bool(usable), backend=" + ".join(usable), detail="; ".join(missing))
