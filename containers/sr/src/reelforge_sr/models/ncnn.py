"""Read ncnn ``.param``/``.bin`` pairs of Compact models into a torch state dict.

``.param`` is text: magic ``7767517``, ``<layers> <blobs>``, then one layer per line
(``type name n_in n_out inputs... outputs... k=v...``). ``.bin`` holds the weights of the layers in
order: a Convolution has a 4-byte storage tag (``0x01306B47`` = fp16, ``0`` = fp32) then
``[out, in, k, k]`` weights, then fp32 bias; a PReLU has fp32 slopes. Layer *i* that has weights becomes
``body.i`` in the order they appear (conv, PReLU, conv, ...), exactly the Compact layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reelforge_sr.errors import ModelError

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0


@dataclass
class NcnnLayer:
    """One ``.param`` line."""

    type: str
    name: str
    params: dict[int, str] = field(default_factory=dict)

    def int_param(self, key: int, default: int = 0) -> int:
        return int(self.params.get(key, default))


def parse_param(text: str) -> list[NcnnLayer]:
    """Layers of a text ``.param`` file."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != [str(MAGIC)]:
        raise ModelError(f"not an ncnn .param file (magic {MAGIC} missing)")
    n_layers = int(lines[1][0])
    layers = []
    for parts in lines[2:2 + n_layers]:
        n_in, n_out = int(parts[2]), int(parts[3])
        params = {}
        for item in parts[4 + n_in + n_out:]:
            key, _, value = item.partition("=")
            params[int(key)] = value
        layers.append(NcnnLayer(parts[0], parts[1], params))
    if len(layers) != n_layers:
        raise ModelError(f".param declares {n_layers} layers but lists {len(layers)}")
    return layers


def _take(buf: memoryview, pos: int, count: int, dtype: np.dtype) -> tuple[np.ndarray, int]:
    nbytes = count * np.dtype(dtype).itemsize
    if pos + nbytes > len(buf):
        raise ModelError(f".bin ends at byte {len(buf)}, needed {pos + nbytes}")
    arr = np.frombuffer(buf[pos:pos + nbytes], dtype=dtype).copy()
    return arr, pos + nbytes + (-nbytes % 4)  # ncnn aligns each blob to 4 bytes


def load_ncnn_compact(param_path: Path, bin_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """State dict (fp32) and hyper-parameters of a Compact model stored as ncnn files."""
    layers = parse_param(param_path.read_text())
    buf = memoryview(bin_path.read_bytes())
    pos, index, state = 0, 0, {}
    shuffle = None
    for layer in layers:
        if layer.type == "Convolution":
            out_ch, k = layer.int_param(0), layer.int_param(1, 1)
            size = layer.int_param(6)
            tag = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
            if tag == TAG_FP16:
                w, pos = _take(buf, pos, size, np.float16)
            elif tag == TAG_FP32:
                w, pos = _take(buf, pos, size, np.float32)
            else:
                raise ModelError(f"{layer.name}: unsupported ncnn weight storage tag {tag:#010x} (quantised?)")
            in_ch = size // (out_ch * k * k)
            state[f"body.{index}.weight"] = torch.from_numpy(w.astype(np.float32).reshape(out_ch, in_ch, k, k))
            if layer.int_param(5):
                b, pos = _take(buf, pos, out_ch, np.float32)
                state[f"body.{index}.bias"] = torch.from_numpy(b)
            index += 1
        elif layer.type == "PReLU":
            slopes, pos = _take(buf, pos, layer.int_param(0, 1), np.float32)
            state[f"body.{index}.weight"] = torch.from_numpy(slopes)
            index += 1
        elif layer.type == "PixelShuffle":
            shuffle = layer.int_param(0)
        elif layer.type not in {"Input", "Split", "Interp", "BinaryOp"}:
            raise ModelError(f"{param_path.name}: layer type {layer.type} is not part of a Compact model")
    if pos != len(buf):
        raise ModelError(f"{bin_path.name}: {len(buf) - pos} bytes left after the last layer")
    from reelforge_sr.models.compact import compact_hparams

    hp = compact_hparams(state)
    if shuffle is not None and shuffle != hp["upscale"]:
        raise ModelError(f"PixelShuffle factor {shuffle} disagrees with the last conv (x{hp['upscale']})")
    return state, hp
