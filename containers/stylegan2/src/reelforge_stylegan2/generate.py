"""Batch generation and projection with the exported TorchScript generator (no training code).

Outputs (all under ``--out``, which a processing job uploads to S3):

* ``--seeds``: ``seeds/seed0000.png`` …, ``seeds/contact_sheet.png``;
* ``--inputs DIR``: every ``*.json`` request (``{"seeds": "0-15" | [1, 2], "truncation": 0.7,
  "class": null}``) → ``requests/<name>/…`` with its contact sheet; every image → projected into W:
  ``projections/<name>/{target,projected,comparison}.png`` and ``w.npy``; anything else is reported;
* ``contact_sheet.png`` over all outputs and ``manifest.json`` listing every file written.

Seeds map to latents as in NVlabs' ``generate.py`` (``RandomState(seed).randn(1, z_dim)``), so a seed
gives the same image here as there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reelforge_stylegan2.export import load_exported
from reelforge_stylegan2.images import ImageRejected, contact_sheet, decode, square, to_rgb
from reelforge_stylegan2.sm import UserError

log = logging.getLogger(__name__)

GENERATOR_FILE = "generator.pt"
#: NVlabs' VGG16 feature network (TorchScript) for the projection loss; the image bakes it in.
VGG16_ENV = "REELFORGE_STYLEGAN2_VGG16"
DEFAULT_VGG16 = "/opt/reelforge/weights/vgg16.pt"
MAX_SEEDS = 10000
MAX_SHEET = 100


def parse_seeds(spec: str | list | None) -> list[int]:
    """``"0-3,7"`` or ``[0, 1]`` → ``[0, 1, 2, 3, 7]`` (order kept, duplicates dropped)."""
    if spec is None or spec == "":
        return []
    items = spec if isinstance(spec, list) else str(spec).split(",")
    seeds: list[int] = []
    for item in items:
        text = str(item).strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", text)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo or hi - lo >= MAX_SEEDS:
                raise UserError(f"bad seed range {text!r}")
            seeds.extend(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", text):
            seeds.append(int(text))
        else:
            raise UserError(f"bad seed {text!r}: use numbers and ranges like 0-15,42")
    unique = list(dict.fromkeys(seeds))
    if len(unique) > MAX_SEEDS:
        raise UserError(f"{len(unique)} seeds requested; at most {MAX_SEEDS} per request")
    return unique


def resolve_model(path: Path, workdir: Path) -> Path:
    """``generator.pt`` from a file, a folder, or SageMaker's ``model.tar.gz`` (only that member)."""
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        return _extract_generator(path, workdir)
    if path.is_file():
        return path
    if (path / GENERATOR_FILE).is_file():
        return path / GENERATOR_FILE
    archives = sorted(path.glob("*.tar.gz")) if path.is_dir() else []
    if archives:
        return _extract_generator(archives[0], workdir)
    raise UserError(f"no {GENERATOR_FILE} or model.tar.gz at {path}")


def _extract_generator(archive: Path, workdir: Path) -> Path:
    with tarfile.open(archive, "r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.isfile() and Path(m.name).name == GENERATOR_FILE), None)
        if member is None:
            raise UserError(f"{archive} holds no {GENERATOR_FILE}")
        workdir.mkdir(parents=True, exist_ok=True)
        target = workdir / GENERATOR_FILE
        source = tar.extractfile(member)
        assert source is not None
        with source, open(target, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
    return target


def pick_device(name: str = "auto") -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def to_image(img: torch.Tensor) -> Image.Image:
    """Generator output [1, C, H, W] in about [-1, 1] → PIL image."""
    arr = (img[0].detach().float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)


class Generator:
    """The TorchScript generator with the helpers batch jobs need."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        self.device = device
        self.module, self.meta = load_exported(path, device)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.w_avg = self.module.w_avg.detach()

    def label(self, class_idx: int | None) -> torch.Tensor:
        c_dim = self.meta["c_dim"]
        c = torch.zeros([1, c_dim], device=self.device)
        if c_dim:
            if class_idx is None or not 0 <= class_idx < c_dim:
                raise UserError(f"this generator is conditional: give a class between 0 and {c_dim - 1}")
            c[0, class_idx] = 1
        return c

    def from_seed(self, seed: int, psi: float, class_idx: int | None = None) -> Image.Image:
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, self.meta["z_dim"])).float().to(self.device)
        psi_t = torch.tensor([psi], dtype=torch.float32, device=self.device)
        with torch.no_grad():
            return to_image(self.module(z, self.label(class_idx), psi_t))

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        """[1, w_dim] or [1, num_ws, w_dim] → image tensor (differentiable)."""
        if w.dim() == 2:
            w = w.unsqueeze(1).repeat(1, self.meta["num_ws"], 1)
        return self.module.synthesize(w)


def generate_seeds(gen: Generator, seeds: list[int], psi: float, out_dir: Path,
                   class_idx: int | None = None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written, images = [], []
    for seed in seeds:
        img = gen.from_seed(seed, psi, class_idx)
        path = out_dir / f"seed{seed:04d}.png"
        img.save(path)
        written.append(path)
        if len(images) < MAX_SHEET:
            images.append(img)
    if images:
        contact_sheet(images).save(out_dir / "contact_sheet.png")
        written.append(out_dir / "contact_sheet.png")
    log.info("generated %d images (psi %.2f) in %s", len(seeds), psi, out_dir)
    return written


class _Features:
    """Projection distance: NVlabs' VGG16 LPIPS features when the image ships them, else pixels."""

    def __init__(self, device: str) -> None:
        path = os.environ.get(VGG16_ENV, DEFAULT_VGG16)
        self.vgg = torch.jit.load(path, map_location=device).eval() if os.path.isfile(path) else None
        self.kind = "vgg16-lpips" if self.vgg is not None else "pixel-mse"
        if self.vgg is None:
            log.warning("no VGG16 features at %s: projecting with a pixel loss", path)

    def __call__(self, img255: torch.Tensor) -> torch.Tensor:
        if img255.shape[2] > 256:
            img255 = torch.nn.functional.interpolate(img255, size=(256, 256), mode="area")
        if self.vgg is not None:
            return self.vgg(img255, resize_images=False, return_lpips=True)
        return img255 / 255.0


def project(gen: Generator, target: Image.Image, *, steps: int = 300, seed: int = 0,
            lr: float = 0.1, noise_scale: float = 0.05) -> tuple[torch.Tensor, list[float]]:
    """Find w whose image looks like ``target`` (Adam on w; exploration noise decays; lr ramps).

    Returns the best w ([1, w_dim]) and the loss per step.
    """
    device = gen.device
    res = gen.meta["img_resolution"]
    target_arr = np.asarray(square(to_rgb(target), res), dtype=np.float32)
    target_t = torch.from_numpy(target_arr).permute(2, 0, 1).unsqueeze(0).to(device)
    features = _Features(device)
    with torch.no_grad():
        target_f = features(target_t)
    w_std = float(gen.meta.get("w_std") or 1.0)
    w = gen.w_avg.detach().clone().reshape(1, -1).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr, betas=(0.9, 0.999))
    rng = torch.Generator(device="cpu").manual_seed(seed)
    losses: list[float] = []
    best_w, best = w.detach().clone(), math.inf
    for step in range(steps):
        t = step / max(steps - 1, 1)
        sigma = w_std * noise_scale * max(0.0, 1.0 - t / 0.75) ** 2
        # cosine ramp-down over the last quarter, linear ramp-up over the first 5 %
        ramp = 0.5 - 0.5 * math.cos(min(1.0, (1.0 - t) / 0.25) * math.pi)
        for group in opt.param_groups:
            group["lr"] = lr * max(ramp * min(1.0, t / 0.05), 1e-3)
        noise = torch.randn(w.shape, generator=rng).to(device) * sigma
        diff = features((gen.synthesize(w + noise) + 1) * 127.5) - target_f
        loss = diff.square().sum() if features.vgg is not None else diff.square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        losses.append(value)
        if value < best:
            best, best_w = value, w.detach().clone()
    log.info("projected to w in %d steps (%s): loss %.4f → %.4f", steps, features.kind, losses[0], best)
    return best_w, losses


def project_image(gen: Generator, source: Path, out_dir: Path, *, steps: int) -> dict:
    try:
        target = to_rgb(decode(source.read_bytes()))
    except ImageRejected as err:
        return {"input": source.name, "skipped": err.reason, "detail": err.detail}
    w, losses = project(gen, target, steps=steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = gen.meta["img_resolution"]
    target_sq = square(target, res)
    with torch.no_grad():
        projected = to_image(gen.synthesize(w))
    target_sq.save(out_dir / "target.png")
    projected.save(out_dir / "projected.png")
    comparison = Image.new("RGB", (2 * res, res))
    comparison.paste(target_sq, (0, 0))
    comparison.paste(projected.convert("RGB"), (res, 0))
    comparison.save(out_dir / "comparison.png")
    np.save(out_dir / "w.npy", w.cpu().numpy())
    return {"input": source.name, "output": out_dir.name, "loss_first": losses[0], "loss_final": min(losses),
            "steps": steps}


def _safe_name(path: Path, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._-")[:80] or "input"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name)
    return name


def run_batch(model: Path, out_dir: Path, *, seeds: str | None = None, truncation: float = 0.7,
              class_idx: int | None = None, inputs: Path | None = None, steps: int = 300,
              device: str = "auto") -> dict:
    """Everything ``generate`` does; returns (and writes) the manifest."""
    if not 0.0 <= truncation <= 2.0:
        raise UserError(f"truncation must be between 0 and 2, not {truncation}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as unpacked:
        gen = Generator(resolve_model(model, Path(unpacked)), pick_device(device))
    manifest: dict = {"model": gen.meta, "seeds": [], "requests": [], "projections": [], "skipped": []}
    written: list[Path] = []

    seed_list = parse_seeds(seeds)
    if seed_list:
        written += generate_seeds(gen, seed_list, truncation, out_dir / "seeds", class_idx)
        manifest["seeds"] = seed_list

    if inputs is not None:
        if not inputs.is_dir():
            raise UserError(f"inputs folder {inputs} does not exist")
        taken: set[str] = set()
        for path in sorted(p for p in inputs.rglob("*") if p.is_file()):
            if path.suffix.lower() == ".json":
                try:
                    request = json.loads(path.read_text())
                    req_seeds = parse_seeds(request.get("seeds"))
                    psi = float(request.get("truncation", truncation))
                    req_class = request.get("class")
                    if not req_seeds:
                        raise UserError("no seeds")
                except (ValueError, AttributeError, UserError) as err:
                    manifest["skipped"].append({"input": path.name, "skipped": "bad_request", "detail": str(err)})
                    continue
                name = _safe_name(path, taken)
                written += generate_seeds(gen, req_seeds, psi, out_dir / "requests" / name,
                                          None if req_class is None else int(req_class))
                manifest["requests"].append({"input": path.name, "output": name, "seeds": req_seeds,
                                             "truncation": psi})
            else:
                name = _safe_name(path, taken)
                result = project_image(gen, path, out_dir / "projections" / name, steps=steps)
                if "skipped" in result:
                    manifest["skipped"].append(result)
                else:
                    manifest["projections"].append(result)
                    written += sorted((out_dir / "projections" / name).iterdir())

    if not written:
        raise UserError("nothing to generate: give --seeds or inputs with requests or images")
    pngs = [p for p in written if p.suffix == ".png" and p.name not in ("contact_sheet.png", "target.png",
                                                                         "comparison.png")]
    sheet = [Image.open(p) for p in pngs[:MAX_SHEET]]
    contact_sheet(sheet).save(out_dir / "contact_sheet.png")
    written.append(out_dir / "contact_sheet.png")
    manifest["files"] = sorted(p.relative_to(out_dir).as_posix() for p in written)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def summary(manifest: dict) -> str:
    return (f"generate: {len(manifest['seeds'])} seeds, {len(manifest['requests'])} requests, "
            f"{len(manifest['projections'])} projections, {len(manifest['skipped'])} skipped")
