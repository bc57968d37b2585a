"""One root error for everything autotl reports to a user.

Each subclass also inherits the built-in exception a Python user would expect, so
``except ValueError`` keeps working. The message is one line: the problem and the fix.
"""


class AutoTLError(Exception):
    """Root of every error autotl raises on purpose; the CLI prints it as one line."""


class DatasetError(AutoTLError, ValueError):
    """The dataset path, layout or contents cannot be used."""


class SpaceError(AutoTLError, ValueError):
    """A search-space YAML file is malformed or names something unknown."""


class WeightsError(AutoTLError, RuntimeError):
    """Pretrained weights for a backbone cannot be found or do not match."""


class ModelDirError(AutoTLError, ValueError):
    """An exported model directory is missing or incomplete."""
