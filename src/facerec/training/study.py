"""Finished training runs read back from their folders and grouped into arms (``facerec compare``).

A run folder holds ``config.yaml`` (the resolved config), ``metrics.json`` (written when the run
ends) and ``verification/<set>/step_<step>.json`` (every evaluation: its summary and per-pair
distances, :func:`facerec.training.report.write_scores`). An *arm* is the runs whose configs are
the same but for their seed and the keys that do not change what is trained (``IGNORED``): a
sweep's ``head=arcface,cosface seed=1,2`` gives two arms of two runs.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from facerec.training.report import SCORES_DIR
from facerec.training.run_dir import leaves, target_name

__all__ = ["IGNORED", "Arm", "Run", "find_runs", "group_arms", "load_run"]

# Keys that say where or how a run was watched, not what was trained: never an arm's difference
# (backbone.memory_efficient changes the memory, not one bit of the gradients).
IGNORED = ("seed", "name", "paths", "trainer.resume", "trainer.progress", "trainer.log_every",
           "trainer.checkpoint_every", "trainer.keep_checkpoints", "trainer.eval_batch_size",
           "data.num_workers", "backbone.memory_efficient")  # fmt: skip


@dataclass
class Run:
    """One finished run.

    Attributes:
        path: its folder.
        config: the resolved config (``config.yaml``) as plain data.
        metrics: ``metrics.json``: the final results per verification set under ``val``.
        evaluations: per set, every evaluation's record (``step``, ``images``, ``summary``,
            ``distances``, ``issame``) in step order; empty for runs of an older facerec.
    """

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    evaluations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    def sets(self) -> list[str]:
        return list(self.metrics.get("val") or {})

    def final(self, name: str) -> dict[str, Any] | None:
        """The last evaluation on set ``name`` with its per-pair scores, or None."""
        found = self.evaluations.get(name)
        return found[-1] if found else None


@dataclass
class Arm:
    """Runs that differ only by seed; ``label`` says what sets them apart from the other arms."""

    label: str
    runs: list[Run]

    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]


def natural_key(path: Path) -> list[Any]:
    """Sort ``.../2/...`` before ``.../10/...`` (a sweep's job folders)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path))]


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Every run folder given or under a given folder (a sweep, an output dir), in order.

    Unfinished runs (no ``metrics.json``) are left out with a line on stderr.

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run or sweep folder")
        configs = [path / "config.yaml"] if (path / "config.yaml").is_file() else []
        configs = configs or sorted(path.rglob("config.yaml"), key=natural_key)
        for config in configs:
            run = config.parent
            if (run / "metrics.json").is_file():
                found.append(run)
            elif (run / "checkpoints").is_dir():
                print(f"facerec compare: {run} has not finished (no metrics.json): left out",
                      file=sys.stderr)  # fmt: skip
    return list(dict.fromkeys(found))


def load_run(path: Path) -> Run:
    """Read one run folder.

    Raises:
        ValueError: a file that is not what the run wrote (naming it).
    """
    config = read_data(path / "config.yaml", yaml_data)
    metrics = read_data(path / "metrics.json", json.loads)
    evaluations = {
        folder.name: [read_data(f, json.loads) for f in sorted(folder.glob("step_*.json"))]
        for folder in sorted((path / SCORES_DIR).glob("*"))
        if folder.is_dir()
    }
    return Run(path, config, metrics, evaluations)


def yaml_data(text: str) -> Any:
    """A saved (resolved) config as plain data."""
    return OmegaConf.to_container(OmegaConf.create(text))


def read_data(path: Path, parse: Any) -> dict[str, Any]:
    """``parse(path's text)``, a mapping.

    Raises:
        ValueError: naming the file, one that does not parse or is not a mapping.
    """
    try:
        data = parse(path.read_text())
    except Exception as error:  # a YAML or JSON error, whichever parser it was
        raise ValueError(f"{path}: not readable ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping, found {type(data).__name__}")
    return data


def flat_config(config: Mapping[str, Any], ignore: Sequence[str]) -> dict[str, Any]:
    """``{"head.m": 0.5, ...}`` without the ignored keys (and what is under them)."""
    out = {k: v for key, value in config.items() for k, v in leaves(value, key).items()}
    return {
        k: v for k, v in out.items() if not any(k == i or k.startswith(f"{i}.") for i in ignore)
    }


def describe(values: Mapping[str, Any]) -> str:
    """``head=arcface head.m=0.5``: a ``_target_`` by its class name, then the plain values."""
    parts = [f"{key[: -len('._target_')]}={target_name({'_target_': value})}"
             for key, value in values.items() if key.endswith("._target_")]  # fmt: skip
    parts += [f"{key}={value}" for key, value in values.items()
              if not key.endswith("._target_") and value is not None]  # fmt: skip
    return " ".join(parts) or "all runs"


def group_arms(runs: Sequence[Run], ignore: Sequence[str] = IGNORED) -> list[Arm]:
    """The runs' arms, in the order their first run comes; labelled by the config keys that
    differ between arms.

    Raises:
        ValueError: two runs of one arm with the same seed (naming both folders).
    """
    flats = [flat_config(run.config, ignore) for run in runs]
    keys = sorted({k for flat in flats for k in flat})
    differing = [k for k in keys if len({repr(flat.get(k)) for flat in flats}) > 1]
    arms: dict[str, Arm] = {}
    for run, flat in zip(runs, flats, strict=True):
        label = describe({k: flat.get(k) for k in differing})
        arm = arms.setdefault(label, Arm(label, []))
        twin = next((other for other in arm.runs if other.seed == run.seed), None)
        if twin is not None:
            raise ValueError(
                f"{twin.path} and {run.path} are the same arm ({label}) and seed {run.seed}:"
                " pass one of them"
            )
        arm.runs.append(run)
    return list(arms.values())
