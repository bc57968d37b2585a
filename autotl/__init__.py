"""autotl: search fine-tuning strategies for pretrained timm image models.

import autotl
result = autotl.search("path/to/images", n_trials=12, timeout=600)
model = autotl.load_model(result.model_dir)
model.predict(["photo.jpg"])
"""

from .data import ImageDataset, load_dataset
from .errors import AutoTLError, DatasetError, ModelDirError, SpaceError, WeightsError
from .export import LoadedModel, load_model
from .search import SearchContext, SearchOptions, SearchResult, search
from .space import SearchSpace, TrialConfig, load_space
from .train import TrialResult, fit

__all__ = [
    "search",
    "load_model",
    "load_dataset",
    "load_space",
    "fit",
    "SearchSpace",
    "TrialConfig",
    "SearchOptions",
    "SearchResult",
    "SearchContext",
    "TrialResult",
    "ImageDataset",
    "LoadedModel",
    "AutoTLError",
    "DatasetError",
    "SpaceError",
    "WeightsError",
    "ModelDirError",
]
__version__ = "0.1.0"
