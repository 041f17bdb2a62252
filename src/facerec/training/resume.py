"""Resume a run from its checkpoint, naming the file when it is not a training checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from facerec.files import checkpoint
from facerec.files.checkpoint import TrainState
from facerec.messages import first_line
from facerec.model import Recognizer
from facerec.training.ema import NoAverage, WeightEma

__all__ = ["resume"]

log = logging.getLogger("facerec")


def resume(
    path: Path, ckpt: dict[str, Any], recognizer: Recognizer, average: NoAverage | WeightEma,
    classes: list[str], optimizer: torch.optim.Optimizer, **stateful: Any,
) -> TrainState:  # fmt: skip
    """Load checkpoint ``path`` into the run's objects; the criterion loads its own part, the
    weight average says which entries hold the training weights and the average.

    Raises:
        ValueError: naming ``path``: another run's data or architecture, or a file that holds
            ``model`` and ``step`` but not the rest of a training checkpoint.
    """
    try:
        state = checkpoint.restore_training(ckpt, path, average.modules(recognizer.model), classes,
                                           **stateful)  # fmt: skip
        recognizer.criterion.restore(ckpt, path, optimizer)
    except (KeyError, TypeError, AttributeError, IndexError, RuntimeError) as error:
        what = (f"no {error.args[0]!r} entry" if isinstance(error, KeyError)
                else f"{type(error).__name__}: {first_line(error)}")  # fmt: skip
        raise ValueError(
            f"trainer.resume={path} is not a complete facerec training checkpoint ({what});"
            " resume takes a run's checkpoints/last.pt, trainer.init_from a trained model"
        ) from None
    log.info("resumed from %s at step %d", path, state.step)
    return state
