"""What a run leaves behind: verification results, checkpoints (``best.pt``, step files) and
``metrics.json``."""

from __future__ import annotations

import json
import logging
from typing import Any

from facerec import distributed
from facerec.files import checkpoint
from facerec.inference.preprocessing import preprocessing_entry
from facerec.training.loop import Training
from facerec.training.malloc import release_freed_memory

__all__ = ["evaluate", "finish", "save"]

log = logging.getLogger("facerec")


def evaluate(t: Training) -> None:
    """Rank 0 verifies on every set (the weight average when ``trainer.ema`` is on); the others
    wait at the barrier; a new best is saved."""
    t.report.pause()
    improved = False
    if t.env.is_main:
        # The training heap's free pages go back first: verification's passes would
        # otherwise be stacked on top of them (the demo was OOM-killed there at 8-11 GB).
        release_freed_memory()
        for name, verifier in t.verifiers.items():
            result = verifier.evaluate(t.average.model(t.recognizer.model), t.env.device,
                                       amp_dtype=t.loop.amp_dtype,
                                       channels_last=t.loop.channels_last,
                                       show_progress=t.loop.progress)  # fmt: skip
            t.state.results[name] = result.summary()
            t.report.verification(name, result, t.state.step, verifier)
            if name == t.loop.best_metric and result.accuracy > t.state.best:
                t.state.best, t.state.best_step = result.accuracy, t.state.step
                improved = True
    if distributed.broadcast(improved):  # on every rank: a criterion may write per-rank files
        save(t, "best")
    distributed.barrier()
    t.report.resume()


def save(t: Training, tag: str) -> None:
    """Write ``best.pt`` (``tag="best"``) or the next step checkpoint (``"last"``)."""
    t.report.pause()
    folder = t.run_dir / "checkpoints"
    name = "best" if tag == "best" else f"step_{t.state.step:09d}"
    entries = t.recognizer.criterion.checkpoint_entries(
        t.optimizer, folder, name, t.state.step, t.loop.keep_checkpoints
    )
    if t.env.is_main:
        ckpt = checkpoint.training_checkpoint(
            t.average.modules(t.recognizer.model), t.state,
            t.state.step // t.loop.steps_per_epoch, t.classes, t.config,
            {"scheduler": t.scheduler, "scaler": t.scaler, "guard": t.guard}, entries,
            preprocessing_entry(t.config),
        )  # fmt: skip
        if tag == "best":
            checkpoint.save(ckpt, folder / "best.pt")
        else:
            checkpoint.save_step(ckpt, folder, keep=t.loop.keep_checkpoints)
    t.report.resume()


def finish(t: Training) -> dict[str, Any]:
    """Synchronise the ranks' buffers and write ``metrics.json``; returns the metrics."""
    t.recognizer.broadcast_buffers()
    state = t.state
    metrics = {
        "step": state.step,
        "epoch": state.step / t.loop.steps_per_epoch,
        "images_per_sec": t.report.images_per_sec,
        "skipped_steps": t.guard.skipped,
        "skipped_samples": state.skipped_samples,
        "skipped_batches": state.skipped_batches,
        "best": {"set": t.loop.best_metric, "accuracy": state.best, "step": state.best_step},
        "val": state.results,
    }
    if t.loop.best_metric in state.results:
        result = state.results[t.loop.best_metric]
        metrics.update({k: result[k] for k in ("accuracy", "accuracy_std", "threshold")})
    if t.env.is_main:
        (t.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("metrics: %s", t.run_dir / "metrics.json")
    metrics["run_dir"] = str(t.run_dir)
    return metrics
