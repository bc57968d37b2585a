"""The model card (``README.md``) that goes with an exported folder, as the Hugging Face Hub shows it."""

from __future__ import annotations

from pathlib import Path

from ..data import printable
from ..space import TrialConfig


def write_card(model_dir: Path, config) -> Path:
    """Write ``model_dir/README.md`` from the folder's config (a ``ModelConfig``)."""
    members = config.record.get("ensemble")
    lines = _ensemble_summary(config, members) if members else _summary(config) + _timm_usage()
    onnx = config.record.get("onnx")
    if onnx:
        lines += _onnx_usage(onnx, config.preprocessing.size)
    lines += [
        "",
        "With autotl: `autotl predict --model path/to/this/folder photos/ --out predictions.csv`, or",
        "`autotl.load_model(folder).predict([...])`.",
        "",
    ]
    path = Path(model_dir) / "README.md"
    path.write_text("\n".join(lines))
    return path


def _summary(config) -> list[str]:
    """The Hub metadata, then what the model is: dataset and classes, recipe, metrics, refit, input."""
    record, pre = config.record, config.preprocessing
    metrics = record.get("metrics") or {}
    recipe = record.get("hyperparameters")
    refit = record.get("refit")
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
        f"Dataset: `{printable(record.get('dataset', 'unknown'))}`. "  # a folder name may not be valid UTF-8
        f"{len(config.classes)} classes: {', '.join(config.classes[:20])}{' ...' if len(config.classes) > 20 else ''}.",
        "",
        f"Recipe (trial {record.get('trial', '?')}): "
        + (TrialConfig.from_dict(recipe).describe() if recipe else "not recorded")
        + ".",
        "",
        "Validation metrics"
        + (f" (the search scored its trials by {record['metric']})" if record.get("metric") else "")
        + ": "
        + (
            ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)) and k != "epoch")
            or "not recorded"
        )
        + ".",
    ]
    if refit:
        lines += [
            "",
            f"Refit on train + validation ({refit.get('train_images')} images, "
            f"{refit.get('reports', refit.get('epochs'))} reports) after the search: the metrics above are the "
            f"trial's, measured before the refit.",
        ]
    return lines + [
        "",
        f"Input: RGB, shorter side resized to {pre.size} px ({pre.interpolation}), centre crop {pre.size} x "
        f"{pre.size}, scaled to [0, 1], mean {list(pre.mean)}, std {list(pre.std)}.",
    ]


def _ensemble_summary(config, members: list[dict]) -> list[str]:
    """What an ensemble folder is: its members and weights, how it was chosen, and its latency."""
    record, pre = config.record, config.preprocessing
    check = record.get("selection") or {}
    lines = [
        "---",
        "tags:",
        "- image-classification",
        "- autotl",
        "---",
        "",
        f"# An ensemble of {len(members)} models fine-tuned by autotl",
        "",
        f"Dataset: `{printable(record.get('dataset', 'unknown'))}`. {len(config.classes)} classes. The prediction "
        "is the weighted average of the members' class probabilities; each member is a timm model folder here:",
        "",
        *[f"- `{m['folder']}/`: trial {m['trial']}, weight {m['weight']:.3g}" for m in members],
        "",
        "Chosen by greedy ensemble selection with replacement (Caruana et al., 2004) on one half of the "
        f"validation images; on the other half: accuracy {check.get('ensemble_held_back', float('nan')):.4f} "
        f"against {check.get('single_held_back', float('nan')):.4f} for the best single model. Latency: "
        f"{record.get('latency_ms', float('nan')):.3g} ms an image (the sum of the members').",
        "",
        f"Input: RGB, shorter side resized to {pre.size} px ({pre.interpolation}), centre crop {pre.size} x "
        f"{pre.size}, scaled to [0, 1], mean {list(pre.mean)}, std {list(pre.std)}; the output is the log of the "
        "averaged probabilities (a softmax of it gives them back).",
    ]
    return lines


def _timm_usage() -> list[str]:
    return [
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


def _onnx_usage(onnx: dict, size: int) -> list[str]:
    return [
        "",
        "## Run it with ONNX Runtime",
        "",
        f"`model.onnx` takes `pixels` (float32, N x 3 x {size} x {size}, normalised as above; any N) "
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
