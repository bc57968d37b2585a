"""The exported model: a timm model folder (safetensors, Hub config.json, model card, model.onnx), loaded to predict."""

from ._ensemble import Adapted, adapted, save_ensemble
from ._files import image_paths, predict_files
from ._folder import CONFIG, read_config, record, save
from ._loaded import LoadedModel, load_model
from ._onnx import add_onnx

__all__ = [
    "save",
    "save_ensemble",
    "adapted",
    "Adapted",
    "add_onnx",
    "load_model",
    "LoadedModel",
    "read_config",
    "record",
    "image_paths",
    "predict_files",
    "CONFIG",
]
