"""The models ReelForge knows: official URLs, accepted hashes, architecture, content kind.

A weight file is accepted when its file sha256 is listed, or, failing that, when the sha256 of its
tensor content is listed (see :func:`reelforge_sr.models.weights.tensor_sha256`). The second rule
exists because re-saved copies of the same weights (a rewritten zip container) have a different file
hash but bit-identical tensors; only hashes we verified are listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reelforge_sr.errors import ModelError

RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download"


@dataclass(frozen=True)
class NcnnFiles:
    """An ncnn conversion of the same weights: ``<dir>/ncnn/<stem>.param|.bin``."""

    stem: str
    bin_sha256: tuple[str, ...]
    tensor_sha256: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry."""

    name: str
    kind: str  # "anime" or "live-action"
    scale: int
    num_feat: int
    num_conv: int
    filename: str
    url: str
    sha256: tuple[str, ...]
    tensor_sha256: tuple[str, ...] = ()
    ncnn: tuple[NcnnFiles, ...] = ()
    licence: str = "BSD-3-Clause (Xintao Wang, Real-ESRGAN)"
    notes: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def receptive_radius(self) -> int:
        return self.num_conv + 2


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="realesr-animevideov3", kind="anime", scale=4, num_feat=64, num_conv=16,
            filename="realesr-animevideov3.pth", url=f"{RELEASES}/v0.2.5.0/realesr-animevideov3.pth",
            sha256=(
                "b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d",  # official release asset
                "8e542eb00cf50a42eaa4f98daab0126074917124b054cfdda02ca9d8bcde05e3",  # re-zipped copy, same tensors
                "4e1e09ba96d08bd4b8455e8897c3242a3501e3766f359941ea894122e158a932",  # re-zipped copy, same tensors
            ),
            tensor_sha256=("178347f0df4f956500287ac0c2f069d63f6edbb73a9a84d4dbe58f43d8ebd0ae",),
            ncnn=(NcnnFiles("realesr-animevideov3-x4",
                            ("548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",)),),
            notes="anime video, x4, 16 body convs", aliases=("anime",),
        ),
        ModelSpec(
            name="realesr-general-x4v3", kind="live-action", scale=4, num_feat=64, num_conv=32,
            filename="realesr-general-x4v3.pth", url=f"{RELEASES}/v0.2.5.0/realesr-general-x4v3.pth",
            sha256=("8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",),
            ncnn=(
                NcnnFiles("realesr-general-x4v3",
                          ("01450f4a79b81c0f1f3eeefc31121167886125c25e41a6d4773e8ec8062528a1",),
                          ("1160bf9cb4f4ef6ae965aa72e98aa343a1f2a658fde25e33167b3145b72ad61a",)),
                NcnnFiles("upscayl-RealESRGAN_General_x4_v3",
                          ("85ee266b632a765a725425ba6a5620c088c8aa2939a03063b2d83b3462724cc1",),
                          ("16092a48dc2be226003193f4fdaf88ac0c5c34de76e1ad2ad4bae244923edfc7",)),
            ),
            notes="real-world / live action, x4, 32 body convs (ncnn copies: fp16 conv weights)",
            aliases=("live-action", "live_action", "general"),
        ),
        ModelSpec(
            name="RealESRGANv2-animevideo-xsx4", kind="anime", scale=4, num_feat=64, num_conv=16,
            filename="RealESRGANv2-animevideo-xsx4.pth", url=f"{RELEASES}/v0.2.3.0/RealESRGANv2-animevideo-xsx4.pth",
            sha256=("5e04b111c16d5b40deb8f8062d09fdff72fa80281fb9607be23b62650c08daff",),
            notes="older anime video model, x4",
        ),
        ModelSpec(
            name="RealESRGANv2-animevideo-xsx2", kind="anime", scale=2, num_feat=64, num_conv=16,
            filename="RealESRGANv2-animevideo-xsx2.pth", url=f"{RELEASES}/v0.2.3.0/RealESRGANv2-animevideo-xsx2.pth",
            sha256=("27985aa2198711ecd72f9bb274ec7b164e018fc9ce2933daaa7c7ab36a2bd3fe",),
            notes="older anime video model, native x2",
        ),
    )
}

DEFAULT_FOR_KIND = {"anime": "realesr-animevideov3", "live-action": "realesr-general-x4v3"}


def resolve(name: str) -> ModelSpec:
    """A registry entry by name or alias (``anime``, ``live-action``)."""
    if name in MODELS:
        return MODELS[name]
    for spec in MODELS.values():
        if name in spec.aliases:
            return spec
    known = ", ".join(sorted(MODELS))
    raise ModelError(f"unknown model {name!r}; known: {known} (or anime / live-action / auto)")
