"""Standalone artifacts: a directory with ``manifest.json``, the kernel libraries, libtvm_runtime, the
weights (safetensors) and, for language models, ``tokenizer.json``. Written atomically (a temporary
sibling renamed into place), loaded with numpy, tvm_ffi and safetensors only, verified before use."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .. import __version__

FORMAT = "lutc-artifact"
# 2: a CPU program's LUT step may read a second input, the residual it adds (version 1 runtimes would drop it);
# everything version 1 wrote reads the same
FORMAT_VERSION = 2
READS_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
TVM_RUNTIME = "lib/libtvm_runtime.so"


class ArtifactError(RuntimeError):
    """An artifact that cannot be used: corrupt, truncated, from another format version, or for another CPU."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_artifact(path, manifest: dict, weights: dict[str, np.ndarray], files: dict[str, str | bytes]) -> Path:
    """Write ``manifest`` (plus checksums of everything), ``weights`` and ``files`` (relative path -> source
    path or bytes) into directory ``path``, replacing an existing one only once the new one is complete."""
    from safetensors.numpy import save_file

    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(tmp / WEIGHTS))
        for rel, src in files.items():
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, bytes):
                dst.write_bytes(src)
            else:
                shutil.copyfile(src, dst)
        manifest = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION, lutc_version=__version__,
                        files={rel: {"sha256": sha256(tmp / rel), "bytes": (tmp / rel).stat().st_size}
                               for rel in [WEIGHTS, *files]})
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_manifest(path) -> dict:
    """The manifest of the artifact at ``path``, after checking format, version and every file's checksum."""
    path = Path(path)
    mf = path / MANIFEST
    if not path.is_dir():
        raise ArtifactError(f"{path}: not an artifact directory")
    if not mf.exists():
        raise ArtifactError(f"{path}: no {MANIFEST} (not a lutc artifact, or an incomplete one)")
    try:
        manifest = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{mf}: corrupt manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mf}: not a lutc artifact manifest")
    if manifest.get("format_version") not in READS_VERSIONS:
        raise ArtifactError(f"{path}: artifact format version {manifest.get('format_version')} (written by lutc "
                            f"{manifest.get('lutc_version')}); this runtime reads versions "
                            f"{', '.join(map(str, READS_VERSIONS))}: recompile the model")
    if _minor(manifest.get("lutc_version", "")) != _minor(__version__):
        raise ArtifactError(f"{path}: built by lutc {manifest.get('lutc_version')}, this is lutc {__version__}: "
                            "kernels and layouts may differ; recompile the model")
    for rel, info in manifest.get("files", {}).items():
        f = path / rel
        if not f.exists():
            raise ArtifactError(f"{path}: {rel} is missing (truncated artifact)")
        if f.stat().st_size != info["bytes"]:
            raise ArtifactError(f"{path}: {rel} has {f.stat().st_size} bytes, the manifest says {info['bytes']} "
                                "(truncated or modified)")
        if sha256(f) != info["sha256"]:
            raise ArtifactError(f"{path}: {rel} does not match its checksum (corrupt or modified)")
    return manifest


def _minor(version: str) -> tuple:
    return tuple(version.split(".")[:2])
