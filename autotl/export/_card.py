"""The model card (``README.md``) that goes with an exported folder, as the Hugging Face Hub shows it."""

from __future__ import annotations

from pathlib import Path

from ..space import TrialConfig


def write_card(model_dir: Path, config) -> Path:
    """Write ``model_dir/README.md`` from the folder's config (a ``ModelConfig``)."""
    record, pre = config.record, config.preprocessing
    metrics = record.get("metrics") or {}
    recipe = record.get("hyperparameters")
    refit = record.get("refit")
    onnx = record.get("onnx")
    lines = [
        "---",
        "library_name: timm",
        "tags:",
        "- image-classification",
        "- timm",
        "- autotl",
        "---",
        "",
        f"# {config.architecture} fine-tuned by autotl",
        "",
        f"Dataset: `{record.get('dataset', 'unknown')}`. "
        f"{len(config.classes)} classes: {', '.join(config.classes[:20])}{' ...' if len(config.classes) > 20 else ''}.",
        "",
        f"Recipe (trial {record.get('trial', '?')}): "
        + (TrialConfig.from_dict(recipe).describe() if recipe else "not recorded")
        + ".",
        "",
        "Validation metrics: "
        + (
            ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)) and k != "epoch")
            or "not recorded"
        )
        + ".",
    ]
    if refit:
        lines += [
            "",
            f"Refit on train + validation ({refit.get('train_images')} images, {refit.get('epochs')} "
            f"epochs) after the search: the metrics above are the trial's, measured before the refit.",
        ]
    lines += [
        "",
        f"Input: RGB, shorter side resized to {pre.size} px ({pre.interpolation}), centre crop {pre.size} x "
        f"{pre.size}, scaled to [0, 1], mean {list(pre.mean)}, std {list(pre.std)}.",
        "",
        "## Load it with timm",
        "",
        "```python",
        "import timm, torch",
        "from PIL import Image",
        "",
        'model = timm.create_model("local-dir:path/to/this/folder", pretrained=True).eval()',
        "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))",
        'x = transform(Image.open("photo.jpg").convert("RGB"))[None]',
        "probabilities = model(x).softmax(1)",
        'label = model.pretrained_cfg["label_names"][probabilities.argmax(1).item()]',
        "```",
    ]
    if onnx:
        lines += [
            "",
            "## Run it with ONNX Runtime",
            "",
            f"`model.onnx` takes `pixels` (float32, N x 3 x {pre.size} x {pre.size}, normalised as above; any N) "
            f"and gives `logits`. Checked after export: largest probability difference from PyTorch "
            f"{onnx.get('max_probability_difference')} on {onnx.get('checked_images')} validation images.",
            "",
            "```python",
            "import onnxruntime",
            "",
            'session = onnxruntime.InferenceSession("model.onnx")',
            'logits = session.run(None, {"pixels": x.numpy()})[0]',
            "```",
        ]
    lines += [
        "",
        "With autotl: `autotl predict --model path/to/this/folder photos/ --out predictions.csv`, or",
        "`autotl.load_model(folder).predict([...])`.",
        "",
    ]
    path = Path(model_dir) / "README.md"
    path.write_text("\n".join(lines))
    return path
