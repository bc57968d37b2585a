#!/usr/bin/env bash
# AutoGluon's MultiModalPredictor in its own virtual environment, for the "autogluon" arm of
# benchmarks/anytime.py (see /work/shared/OFFLINE.md, "Peers that run offline here").
#
#     bash benchmarks/setup_autogluon.sh    # idempotent; first run ~3 min here, 6.0 GB (torch with its CUDA libraries)
#
# AutoGluon pins torch<2.14, so it cannot share autotl's venv: it gets PyPI's regular torch 2.13.0
# (the CPU-only 2.13.0 wheel in this machine's find-links has no matching torchvision). It builds its
# backbone with timm.create_model(name, pretrained=True) and has no hook for a weights file, so the
# offline EfficientNet-Lite0 weights (converted by autotl, checksum and shapes checked) go where timm
# looks: a local Hugging Face hub cache, used with HF_HOME=benchmarks/.autogluon/hf HF_HUB_OFFLINE=1.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$HERE/.autogluon"
VENV="$ROOT/venv"
AUTOTL_PYTHON="${AUTOTL_PYTHON:-$HERE/../.venv/bin/python}"  # autotl's venv, which converts the weights
REPO="$ROOT/hf/hub/models--timm--tf_efficientnet_lite0.in1k"
REVISION=579344248a93e23026e6b78f1f6faf0bc1d28238  # made up: the source .pth's sha256, cut to a commit's length

if [ ! -x "$VENV/bin/python" ]; then
    python3.11 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import autogluon.multimodal" 2>/dev/null; then
    # --isolated: ignore the user pip config's find-links (that CPU-only torch wheel); PyPI's torch pair first
    "$VENV/bin/pip" --isolated install torch==2.13.0 torchvision==0.28.0
    "$VENV/bin/pip" install autogluon.multimodal==1.6.3 torch==2.13.0 torchvision==0.28.0
fi

if [ ! -f "$REPO/snapshots/$REVISION/model.safetensors" ]; then
    converted="$("$AUTOTL_PYTHON" -c \
        "from autotl.backbones._weights import offline_file; print(offline_file('tf_efficientnet_lite0'))")"
    mkdir -p "$REPO/snapshots/$REVISION" "$REPO/refs"
    cp "$converted" "$REPO/snapshots/$REVISION/model.safetensors"
    printf %s "$REVISION" >"$REPO/refs/main"
fi

# timm in AutoGluon's venv loads them from the hub cache, offline, and they are the converted tensors
HF_HOME="$ROOT/hf" HF_HUB_OFFLINE=1 "$VENV/bin/python" - "$REPO/snapshots/$REVISION/model.safetensors" <<'EOF'
import sys

import timm
import torch
from safetensors.torch import load_file

model = timm.create_model("tf_efficientnet_lite0", pretrained=True)
expected = load_file(sys.argv[1])
assert all(torch.equal(t, expected[k]) for k, t in model.state_dict().items()), "weights differ"
print(f"ok: timm {timm.__version__}, torch {torch.__version__} load tf_efficientnet_lite0.in1k offline")
EOF
