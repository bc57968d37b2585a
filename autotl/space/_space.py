"""Search spaces from YAML: validated once, then turned into ``trial.suggest_*`` calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import SpaceError
from ..records import METRICS
from ._config import FIELD_NAMES, SETTING_TYPES, VOCABULARY, TrialConfig

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"


@dataclass
class Param:
    """One searched or fixed setting. ``kind`` is 'fixed', 'choice' or 'range'."""

    name: str
    kind: str
    value: object = None
    choices: list = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    children: dict = field(default_factory=dict)  # choice -> list[Param], for conditional entries

    def optuna_name(self, parent: str | None) -> str:
        return f"{parent}.{self.name}" if parent else self.name


@dataclass
class SearchSpace:
    """A validated search space: ``sample(trial)`` gives a TrialConfig for one trial."""

    name: str
    params: list[Param]
    max_epochs: int
    start_from: dict = field(default_factory=dict)
    warm_start: dict = field(default_factory=dict)  # recipe name -> settings over start_from
    warm_start_backbones: int = 1
    metric: str | None = None  # the score the file asks for (``metric: macro_f1``); --metric overrides it

    def sample(self, trial) -> TrialConfig:
        """Ask the trial for every searched setting; conditional ones only under their choice."""
        values = {"max_epochs": self.max_epochs}
        _sample_into(trial, self.params, None, values)
        return TrialConfig.from_dict(values)

    def backbones(self) -> list[str]:
        """Every backbone this space can pick."""
        return self.values("backbone")

    def values(self, name: str) -> list:
        """The values a top-level setting can take: its choices, its fixed value, its range's ends, or the default."""
        for param in self.params:
            if param.name == name:
                return (
                    list(param.choices)
                    if param.kind == "choice"
                    else [param.value]
                    if param.kind == "fixed"
                    else [param.low, param.high]
                )
        return [getattr(TrialConfig, name)]

    def start_params(self, **changes) -> dict:
        """The ``start_from`` recipe (with ``changes``) as Optuna parameters, for ``study.enqueue_trial``."""
        found = {}
        _start_into(self.params, None, {**self.start_from, **changes}, found)
        return found

    def warm_start_params(self, ranked_backbones: list[str], **overrides) -> list[tuple[str, dict]]:
        """The first trials: (label, params) for each warm-start recipe on each of the best-ranked backbones.

        Recipe by recipe in the order written (the cheapest, a linear probe, first), each on
        the best-ranked backbones, best first. Without a ``warm_start`` section, the one
        ``start_from`` recipe. ``overrides`` apply to every recipe. A recipe
        the space cannot express (a value outside its choices) keeps what it can; exact
        repeats are left out.
        """
        if not self.warm_start:
            return [("start_from", self.start_params(**overrides))]
        chosen, seen = [], []
        for recipe, changes in self.warm_start.items():
            for backbone in ranked_backbones[: self.warm_start_backbones]:
                params = self.start_params(**{**changes, **overrides}, backbone=backbone)
                if params not in seen:
                    seen.append(params)
                    chosen.append((f"{recipe} on {backbone}", params))
        return chosen

    def keep_backbones(self, names: list[str]) -> None:
        """Search only ``names`` (a ranking dropped the others)."""
        for param in self.params:
            if param.name == "backbone" and param.kind == "choice":
                param.choices = [c for c in param.choices if c in names] or param.choices


def _sample_into(trial, params, parent, values):
    for param in params:
        name = param.optuna_name(parent)
        if param.kind == "fixed":
            value = param.value
        elif param.kind == "choice":
            value = trial.suggest_categorical(name, param.choices)
        elif SETTING_TYPES[param.name] is int:
            value = trial.suggest_int(name, int(param.low), int(param.high), log=param.log)
        else:
            value = trial.suggest_float(name, param.low, param.high, log=param.log)
        values[param.name] = value
        if param.children.get(value):
            _sample_into(trial, param.children[value], value, values)


def _start_into(params, parent, start, found):
    for param in params:
        if param.kind == "fixed" or param.name not in start and not param.children:
            continue
        value = start.get(param.name)
        if param.kind == "choice" and value is None and len(param.choices) == 1:
            value = param.choices[0]
        if value is None:
            continue
        if param.kind == "choice" and value not in param.choices:
            continue
        if param.kind == "range" and not param.low <= value <= param.high:
            continue
        if param.name in start:
            found[param.optuna_name(parent)] = value
        if param.children.get(value):
            _start_into(param.children[value], value, start, found)


def load_space(space: str | Path = "default") -> SearchSpace:
    """A search space by name ('default', 'quick') or by the path of a YAML file."""
    path = Path(space)
    if path.suffix not in (".yaml", ".yml"):
        path = SPACES_DIR / f"{space}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
            raise SpaceError(f"no search space named {space!r}: use one of {known}, or the path of a .yaml file")
    if not path.is_file():
        raise SpaceError(f"search-space file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SpaceError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(raw, dict):
        raise SpaceError(f"{path} must be a mapping of setting names to values, choices or ranges")
    raw = _extended(path, dict(raw))
    start = raw.pop("start_from", None) or {}
    warm = raw.pop("warm_start", None) or {}
    max_epochs = raw.pop("max_epochs", TrialConfig.max_epochs)
    if not isinstance(max_epochs, int) or max_epochs < 1:
        raise SpaceError(f"{path}: max_epochs must be a positive whole number, got {max_epochs!r}")
    metric = raw.pop("metric", None)
    if metric is not None and metric not in METRICS:
        raise SpaceError(f"{path}: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not isinstance(start, dict):
        raise SpaceError(f"{path}: start_from must be a mapping of setting names to values")
    for key in start:
        if key not in FIELD_NAMES:
            raise SpaceError(f"{path}: start_from names unknown setting {key!r}; allowed: {', '.join(FIELD_NAMES)}")
    recipes, warm_backbones = _warm_start(path, warm)
    params = [_parse(path, key, value) for key, value in raw.items()]
    return SearchSpace(
        name=path.stem if path.parent == SPACES_DIR else str(path),
        params=params,
        max_epochs=max_epochs,
        start_from=start,
        warm_start=recipes,
        warm_start_backbones=warm_backbones,
        metric=metric,
    )


def _extended(path: Path, raw: dict) -> dict:
    """``extends: NAME`` starts from another space (by name or path) and replaces the settings given here."""
    base = raw.pop("extends", None)
    if base is None:
        return raw
    base_path = Path(base) if Path(base).suffix in (".yaml", ".yml") else SPACES_DIR / f"{base}.yaml"
    if not base_path.is_absolute() and not base_path.is_file():
        base_path = path.parent / base_path
    if not base_path.is_file() or base_path.resolve() == path.resolve():
        raise SpaceError(f"{path}: extends {base!r}, which is not another search space (a name or a .yaml path)")
    return {**_extended(base_path, dict(yaml.safe_load(base_path.read_text()) or {})), **raw}


def _warm_start(path, warm) -> tuple[dict, int]:
    """The ``warm_start`` section: {backbones: k, recipes: {name: {setting: value}}}."""
    if not isinstance(warm, dict) or set(warm) - {"backbones", "recipes"}:
        raise SpaceError(
            f"{path}: warm_start must be a mapping with 'backbones' (how many of the best-ranked) "
            f"and 'recipes' (name: settings)"
        )
    count = warm.get("backbones", 1)
    recipes = warm.get("recipes") or {}
    if not isinstance(count, int) or count < 1:
        raise SpaceError(f"{path}: warm_start.backbones must be a positive whole number, got {count!r}")
    if not isinstance(recipes, dict) or not all(isinstance(r, dict) for r in recipes.values()):
        raise SpaceError(f"{path}: warm_start.recipes must map each recipe name to its settings")
    for name, recipe in recipes.items():
        for key in recipe:
            if key not in FIELD_NAMES or key in ("backbone", "max_epochs"):
                raise SpaceError(
                    f"{path}: warm_start recipe {name!r} sets {key!r}; allowed: "
                    f"{', '.join(n for n in FIELD_NAMES if n not in ('backbone', 'max_epochs'))}"
                )
    return recipes, count


def _parse(path, key, value) -> Param:
    where = f"{path}: {key}"
    if key not in FIELD_NAMES or key == "max_epochs":
        allowed = ", ".join(n for n in FIELD_NAMES if n != "max_epochs")
        raise SpaceError(f"{where} is not a setting autotl knows; allowed: {allowed}, max_epochs, metric, start_from")
    if not isinstance(value, dict):
        _check_vocabulary(where, key, [value])
        return Param(key, "fixed", value=value)
    if "choices" in value:
        extra = set(value) - {"choices"}
        if extra:
            raise SpaceError(f"{where} mixes 'choices' with {sorted(extra)}: give either choices or low/high")
        choices = value["choices"]
        if isinstance(choices, dict):
            _check_vocabulary(where, key, list(choices))
            children = {c: [_parse(path, k, v) for k, v in (sub or {}).items()] for c, sub in choices.items()}
            return Param(key, "choice", choices=list(choices), children=children)
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: choices must be a non-empty list (or a mapping of choice to sub-settings)")
        _check_vocabulary(where, key, choices)
        return Param(key, "choice", choices=choices)
    if {"low", "high"} <= set(value):
        extra = set(value) - {"low", "high", "log"}
        if extra:
            raise SpaceError(f"{where}: unknown key(s) {sorted(extra)}; a range takes low, high and optionally log")
        low, high = value["low"], value["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low > high:
            raise SpaceError(f"{where}: low and high must be numbers with low <= high, got {low!r} and {high!r}")
        log = bool(value.get("log", False))
        if log and low <= 0:
            raise SpaceError(f"{where}: a log range needs low > 0, got {low}")
        return Param(key, "range", low=float(low), high=float(high), log=log)
    raise SpaceError(f"{where}: give a plain value, {{choices: [...]}} or {{low: ..., high: ..., log: true|false}}")


def _check_vocabulary(where, key, values):
    allowed = VOCABULARY.get(key)
    for value in values:
        if allowed and value not in allowed:
            raise SpaceError(f"{where}: {value!r} is not allowed; use one of {', '.join(allowed)}")
