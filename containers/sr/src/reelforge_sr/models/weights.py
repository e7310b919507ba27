"""Find, verify, download and load model weights.

Lookup for a registry entry, in each model directory in turn (``--model-dir``, ``$REELFORGE_MODEL_DIR``,
then the download cache ``$REELFORGE_CACHE_DIR`` or ``~/.cache/reelforge/models``):

1. ``<dir>/<filename>.pth`` whose sha256 (or tensor-content sha256) is accepted by the registry;
2. an ncnn conversion ``<dir>/ncnn/<stem>.param|.bin`` whose ``.bin`` sha256 is accepted;
3. else, unless offline (``REELFORGE_OFFLINE=1`` / ``--offline``), download the official URL to a temp
   name in the first writable directory, verify its sha256, then rename it into place.

Otherwise a :class:`ModelError` names the file, the directories searched and the URL.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch

from reelforge_sr.atomic import fsync_dir
from reelforge_sr.errors import ModelError
from reelforge_sr.models.compact import SRVGGNetCompact, build_compact, compact_hparams
from reelforge_sr.models.ncnn import load_ncnn_compact
from reelforge_sr.models.registry import ModelSpec, resolve

log = logging.getLogger(__name__)
CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tensor_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over, for each key in sorted order, the key name then its fp32 little-endian bytes."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def offline() -> bool:
    return os.environ.get("REELFORGE_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def model_dirs(explicit: str | Path | None = None) -> list[Path]:
    """Directories searched, in order, without duplicates."""
    cache = os.environ.get("REELFORGE_CACHE_DIR") or str(Path.home() / ".cache" / "reelforge" / "models")
    out: list[Path] = []
    for item in (explicit, os.environ.get("REELFORGE_MODEL_DIR"), cache):
        if item:
            p = Path(item).expanduser()
            if p not in out:
                out.append(p)
    return out


@dataclass
class LoadedModel:
    """A ready network and where its weights came from."""

    spec: ModelSpec
    net: SRVGGNetCompact
    source: dict[str, str] = field(default_factory=dict)


def _load_pth_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated/corrupt zip, not a torch file...
        raise ModelError(f"{path}: cannot be read as torch weights ({exc})") from exc
    state = obj.get("params_ema") or obj.get("params") or obj if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ModelError(f"{path}: no state dict inside")
    return state


def verify_pth(path: Path, spec: ModelSpec) -> tuple[dict[str, torch.Tensor], str, str]:
    """State dict, how it was verified, and the file sha256; :class:`ModelError` if not accepted."""
    digest = file_sha256(path)
    if digest in spec.sha256:
        return _load_pth_state(path), "file-sha256", digest
    state = _load_pth_state(path)
    tdigest = tensor_sha256(state)
    if tdigest in spec.tensor_sha256:
        return state, "tensor-sha256", digest
    raise ModelError(
        f"{path}: sha256 {digest} (tensor sha256 {tdigest}) is not an accepted hash for {spec.name}; "
        f"expected file sha256 one of {list(spec.sha256)}"
    )


def _check_arch(state: dict[str, torch.Tensor], spec: ModelSpec, origin: str) -> None:
    try:
        hp = compact_hparams(state)
    except ValueError as exc:
        raise ModelError(f"{origin}: {exc}") from exc
    if (hp["num_conv"], hp["num_feat"], hp["upscale"]) != (spec.num_conv, spec.num_feat, spec.scale):
        raise ModelError(f"{origin}: architecture {hp} does not match registry entry {spec.name}")


def _find_ncnn(spec: ModelSpec, directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    for files in spec.ncnn:
        for base in (directory / "ncnn", directory):
            param, binf = base / f"{files.stem}.param", base / f"{files.stem}.bin"
            if not (param.is_file() and binf.is_file()):
                continue
            digest = file_sha256(binf)
            if digest not in files.bin_sha256:
                log.warning("%s: sha256 %s is not accepted for %s; ignored", binf, digest, spec.name)
                continue
            state, _ = load_ncnn_compact(param, binf)
            return state, {"path": str(binf), "format": "ncnn", "verified_by": "file-sha256", "sha256": digest}
    return None


def download(spec: ModelSpec, directory: Path) -> Path:
    """Fetch the official URL into ``directory`` (temp name, verify sha256, rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / spec.filename
    part = directory / f".{spec.filename}.{os.getpid()}.part"
    h = hashlib.sha256()
    log.info("downloading %s → %s", spec.url, final)
    try:
        with urllib.request.urlopen(spec.url, timeout=60) as resp, open(part, "wb") as out:  # noqa: S310
            while chunk := resp.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() not in spec.sha256:
            raise ModelError(f"download of {spec.url} has sha256 {h.hexdigest()}, expected {spec.sha256[0]}")
        os.replace(part, final)
        fsync_dir(directory)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot download {spec.url} to {final}: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)
    return final


def _writable(directory: Path) -> bool:
    probe = directory
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK)


def load_model(name: str, model_dir: str | Path | None = None, *, allow_download: bool | None = None) -> LoadedModel:
    """Locate, verify and load registry model ``name`` (see the module docstring for the order)."""
    spec = resolve(name)
    dirs = model_dirs(model_dir)
    problems: list[str] = []
    for directory in dirs:
        path = directory / spec.filename
        if path.is_file():
            try:
                state, how, digest = verify_pth(path, spec)
            except ModelError as exc:
                problems.append(str(exc))
                continue
            _check_arch(state, spec, str(path))
            return LoadedModel(spec, build_compact(state),
                               {"path": str(path), "format": "pth", "verified_by": how, "sha256": digest})
    for directory in dirs:
        found = _find_ncnn(spec, directory)
        if found:
            state, source = found
            _check_arch(state, spec, source["path"])
            return LoadedModel(spec, build_compact(state), source)
    if allow_download is None:
        allow_download = not offline()
    searched = ", ".join(str(d) for d in dirs)
    if allow_download:
        target = next((d for d in dirs if _writable(d)), None)
        if target is None:
            raise ModelError(f"{spec.filename} not found in {searched} and none of them is writable for {spec.url}")
        path = download(spec, target)
        state, how, digest = verify_pth(path, spec)
        _check_arch(state, spec, str(path))
        source = {"path": str(path), "format": "pth", "verified_by": how, "sha256": digest, "downloaded": "1"}
        return LoadedModel(spec, build_compact(state), source)
    detail = f" ({'; '.join(problems)})" if problems else ""
    raise ModelError(
        f"model weights {spec.filename} for {spec.name} not found in {searched}{detail}; downloads are off "
        f"(REELFORGE_OFFLINE): put the file from {spec.url} (sha256 {spec.sha256[0]}) into one of those directories"
    )
