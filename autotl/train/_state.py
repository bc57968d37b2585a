"""A run's training state: one value, saved after any report and loaded in another process to go on exactly.

The state is what a run has done (reports, curve, best report) plus what it needs to go
on: the weights that can change (the trainable ones, and the buffers of modules that
train; the rest is the pretrained backbone, rebuilt from its weights), the optimizer's
state, the position in the schedule and in the epoch's data order, and the random
generators. It is one safetensors file (the tensors) whose header holds the rest as
JSON, written under a temporary name and renamed into place, so a file is whole or
absent. A file that is damaged, from another format version, or of another run (recipe,
data, seed) raises StateError, and the run starts over.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..records import Report, load

FORMAT = 1  # the layout of a state file; a file of another format is not continued


SCHEDULE = (
    "last_report",
    "total_steps",
    "warmup_steps",
    "probe_steps",
    "cool_from",
    "cool_factor",
)  # what a time budget or a cool-down changes


class StateError(Exception):
    """A saved state that cannot be continued (damaged, another format, another run): the run starts over."""


@dataclass
class TrainState:
    """Where a run stands after a report. The tensors of the model, optimizer and generators live in the run."""

    report: int = 0  # reports done
    step: int = 0  # optimizer steps done
    history: list[Report] = field(default_factory=list)
    best: dict | None = None  # the best report's metrics on the validation check, and its number ("report")
    best_weights: dict | None = field(default=None, repr=False)  # the best report's weights (CPU copies)
    soup: list = field(default_factory=list, repr=False)  # (score, report, weights) of the best reports, for a soup
    order: torch.Tensor | None = field(default=None, repr=False)  # the current epoch's data order
    wall_seconds: float = 0.0  # spent by earlier processes on this run
    first_report_seconds: float | None = None
    feature_seconds: float = 0.0  # the frozen prefix's passes over the training images, by this run
    resumed_at: int | None = None  # the report this process continued from


_NUMBERS = ("report", "step", "best", "wall_seconds", "first_report_seconds", "feature_seconds")


def save_state(path: Path, state: TrainState, run, identity: dict) -> None:
    """Write ``state`` with the run's changing weights, its optimizer and its generators, atomically."""
    current = run.changing()
    keys = list(current)
    tensors = {f"weights/{k}": v for k, v in current.items()}
    if state.best_weights is not None:
        tensors.update({f"best/{k}": state.best_weights[k] for k in keys})
    for i, (_, _, weights) in enumerate(state.soup):
        tensors.update({f"soup{i}/{k}": weights[k] for k in keys})
    optimizer_state = run.optimizer.state_dict()
    loose = {}  # optimizer state entries that are not tensors
    for index, entries in optimizer_state["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer/{index}/{name}"] = value
            else:
                loose[f"{index}/{name}"] = value
    tensors["rng/generator"] = run.generator.get_state()
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and any(t.is_cuda for t in current.values()):
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    if state.order is not None:
        tensors["order"] = state.order
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    facts = {name: getattr(state, name) for name in _NUMBERS}
    facts.update(
        format=FORMAT,
        identity=identity,
        keys=keys,
        history=[asdict(r) for r in state.history],
        soup=[[list(score), report] for score, report, _ in state.soup],
        probing=run.probing,
        schedule={name: getattr(run.plan, name) for name in SCHEDULE},
        optimizer_groups=optimizer_state["param_groups"],
        optimizer_loose=loose,
        crc=_crc(tensors),
    )
    save_tensors(path, tensors, facts)


def save_tensors(path: Path, tensors: dict, facts: dict) -> None:
    """Write ``tensors`` (on the CPU, contiguous) with ``facts`` (JSON) in the header of one safetensors file,
    under a temporary name renamed into place: the file is whole or absent, whatever stops the write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, str(partial), metadata={"autotl": json.dumps(facts)})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def read_facts(path: Path) -> dict:
    """The JSON facts in the header of a file ``save_tensors`` wrote."""
    with safe_open(str(path), "pt") as handle:
        return json.loads(handle.metadata()["autotl"])


def load_state(path: Path, run, identity: dict) -> TrainState:
    """The state saved in ``path``, with its weights, optimizer state and generators put back into ``run``.

    A run past LP-FT's probe switches to training everything first (its penalty must see the pretrained
    weights). Raises StateError when the file cannot be continued.
    """
    model = run.model
    tensors, facts = _read(path)
    if facts.get("format") != FORMAT:
        raise StateError(f"{path} is of state format {facts.get('format')!r}, not {FORMAT} (another autotl version)")
    if facts.get("identity") != identity:
        raise StateError(f"{path} was saved by another run (another recipe, dataset or seed)")
    state = TrainState(
        **{name: facts[name] for name in _NUMBERS},
        history=load(list[Report], facts["history"]),
        order=tensors.get("order"),
    )
    keys = facts["keys"]
    if any(name.startswith("best/") for name in tensors):
        state.best_weights = _full(model, tensors, "best/", keys)
    state.soup = [(tuple(s), r, _full(model, tensors, f"soup{i}/", keys)) for i, (s, r) in enumerate(facts["soup"])]
    for name in SCHEDULE:  # where a time budget had shortened the schedule, or a cool-down begun
        setattr(run.plan, name, facts["schedule"].get(name, getattr(run.plan, name)))
    if run.probing and not facts["probing"]:
        run.fine_tune_all()
    try:
        loaded = model.load_state_dict({k: tensors["weights/" + k] for k in keys}, strict=False)
        if loaded.unexpected_keys or keys != list(run.changing()):
            raise ValueError(f"its weights are not this model's trainable ones ({len(keys)} saved)")
        run.optimizer.load_state_dict(_optimizer_state(tensors, facts))
    except (KeyError, RuntimeError, ValueError) as error:
        raise StateError(f"{path} does not fit this run's model ({str(error).splitlines()[0][:120]})") from error
    run.generator.set_state(tensors["rng/generator"])
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    return state


def _read(path: Path) -> tuple[dict, dict]:
    """The file's tensors and facts, checked against the checksum saved with them."""
    try:
        tensors, facts = load_file(str(path)), read_facts(path)
    except (OSError, SafetensorError, ValueError, KeyError, TypeError) as error:
        raise StateError(f"{path} is damaged ({error.__class__.__name__})") from error
    if facts.get("crc") != _crc(tensors):
        raise StateError(f"{path} is damaged (its checksum does not match)")
    return tensors, facts


def _full(model, tensors: dict, prefix: str, keys: list[str]) -> dict:
    """A whole state dict: the saved entries under ``prefix``, the model's own (pretrained) values for the rest."""
    out = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    for key in keys:
        out[key] = tensors[prefix + key]
    return out


def _optimizer_state(tensors: dict, facts: dict) -> dict:
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("optimizer/"):
            _, index, entry = name.split("/", 2)
            state.setdefault(int(index), {})[entry] = value
    for name, value in facts["optimizer_loose"].items():
        index, entry = name.split("/", 1)
        state.setdefault(int(index), {})[entry] = value
    return {"state": state, "param_groups": facts["optimizer_groups"]}


def _crc(tensors: dict) -> int:
    """CRC-32 of every tensor's bytes, in name order: a bit flipped anywhere on disk is found."""
    crc = 0
    for name in sorted(tensors):
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy(), crc)
    return crc
