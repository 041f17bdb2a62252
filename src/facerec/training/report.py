"""What a run shows: the tqdm bar, log lines, TensorBoard scalars and figures (rank 0 only)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from facerec.eval.plots import distance_histogram_image, pair_grid_image, roc_image
from facerec.eval.verification import hardest_pairs
from facerec.training.verifier import Verifier

log = logging.getLogger("facerec")
SCORES_DIR = "verification"  # <run>/verification/<set>/step_<step>.json, read by facerec compare
DISTANCE_BINS = np.linspace(0.0, 4.0, 81)  # squared distances of unit vectors, steps of 0.05


def scores_file(run_dir: Path, name: str, step: int) -> Path:
    """Where the per-pair scores of set ``name`` at ``step`` are kept."""
    return run_dir / SCORES_DIR / name / f"step_{step:09d}.json"


def write_scores(path: Path, result: Any, step: int, images: int) -> None:
    """One evaluation as data: its summary and every pair's distance and label.

    The paired comparison of two runs (``facerec compare``) needs the pairs themselves, not only
    the accuracy: ~20 bytes per pair (pairsDevTest: 1,000 pairs, 20 kB), floats written in full
    so the 10-fold protocol re-run on them gives the run's own numbers.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "step": step,
        "images": images,  # training images seen by then (all processes)
        "summary": result.summary(),
        "distances": np.asarray(result.distances, dtype=np.float64).tolist(),
        "issame": np.asarray(result.issame, dtype=bool).astype(int).tolist(),
    }
    path.write_text(json.dumps(record))


def hardest_pairs_grid(verifier: Verifier, result: Any, k: int = 8) -> np.ndarray:
    """The ``k`` worst false accepts, then the ``k`` worst false rejects, as one image."""
    accepts, rejects = hardest_pairs(result.distances, result.issame, result.threshold, k)
    order = np.concatenate([accepts, rejects])
    first, second = verifier.pair_images(order)
    captions = [f"FA d={result.distances[i]:.2f}" for i in accepts]
    captions += [f"FR d={result.distances[i]:.2f}" for i in rejects]
    title = f"false accepts / false rejects at threshold {result.threshold:.2f}"
    return pair_grid_image(first, second, captions, title=title)


class Reporter:
    """Progress and metrics of the main process; every method is a no-op on other ranks.

    Args:
        run_dir: where ``tb/`` and ``train.log`` go.
        enabled: False on every rank but 0.
        total_steps: length of the run, for the bar.
        start_step: where a resumed run starts.
        progress: show a tqdm bar; without one, ``log_every`` steps print a log line instead.
    """

    def __init__(
        self, run_dir: Path, enabled: bool, total_steps: int, start_step: int, progress: bool
    ) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self.global_batch = 0  # images per step, all processes (from count())
        self.total_steps = total_steps
        self.progress = progress and enabled
        self.writer: SummaryWriter | None = None
        self.file_log: logging.Handler | None = None
        self.images = 0
        self.seconds = 0.0
        self.tick = time.perf_counter()
        if enabled:
            self.file_log = logging.FileHandler(run_dir / "train.log")
            self.file_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logging.getLogger().addHandler(self.file_log)
            # purge_step: a resumed run overwrites the curves logged after its checkpoint.
            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step or None)
        self.bar = tqdm(
            total=total_steps, initial=start_step, desc="train", unit="step",
            disable=not self.progress, dynamic_ncols=True,
        )  # fmt: skip

    @property
    def images_per_sec(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def count(self, images: int) -> None:
        """Images trained since the last call; feeds the images/s figure."""
        self.images += images
        self.global_batch = images
        self.bar.update()

    def pause(self) -> None:
        """Stop the throughput clock (evaluation and checkpoints are not training time)."""
        self.seconds += time.perf_counter() - self.tick

    def resume(self) -> None:
        self.tick = time.perf_counter()

    def train_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self.pause()
        self.resume()
        scalars = {**scalars, "images_per_sec": self.images_per_sec}
        if not self.enabled:
            return
        self.bar.set_postfix(
            loss=f"{scalars['loss']:.3f}", lr=f"{scalars['lr']:.2e}",
            img_s=f"{scalars['images_per_sec']:.1f}",
        )  # fmt: skip
        if not self.progress:
            text = " ".join(f"{k} {v:.4g}" for k, v in scalars.items())
            log.info("step %d/%d %s", step, self.total_steps, text)
        for key, value in scalars.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def verification(self, name: str, result: Any, step: int, verifier: Verifier) -> None:
        """Scalars, ROC curve, distance histograms and the hardest pairs of one set; its
        per-pair scores in ``<run>/verification/<set>/step_<step>.json``."""
        if not self.enabled:
            return
        write_scores(scores_file(self.run_dir, name, step), result, step, step * self.global_batch)
        # Tied distances (an untrained or collapsed model) make the protocol's FAR curve jump
        # past its target: the held-out FAR is then far above it and the TAR means nothing.
        far_note = (
            f" but held-out FAR {result.far:.4f}: distances too tied to reach 1e-3"
            if result.far > 10 * result.far_target
            else ""
        )
        log.info(
            "step %d %s: accuracy %.4f ± %.4f (threshold %.3f, TAR@FAR=1e-3 %.4f%s, no flip %.4f)",
            step, name, result.accuracy, result.accuracy_std, result.threshold,
            result.tar_at_far, far_note, result.accuracy_noflip or float("nan"),
        )  # fmt: skip
        for key, value in result.summary().items():
            self.writer.add_scalar(f"val/{name}_{key}", value, step)
        self.writer.add_image(f"val/{name}_roc", roc_image(result.fpr, result.tpr), step,
                              dataformats="HWC")  # fmt: skip
        histogram = distance_histogram_image(result.distances, result.issame,
                                             threshold=result.threshold)  # fmt: skip
        self.writer.add_image(f"val/{name}_distances", histogram, step, dataformats="HWC")
        # TensorBoard's own histograms beside the drawn figure: its Histograms and
        # Distributions tabs show both distributions moving apart over the steps. Fixed bins
        # over [0, 4] (squared distances of unit vectors) keep the steps comparable.
        distances, same = np.asarray(result.distances), np.asarray(result.issame, dtype=bool)
        for kind, values in (("same", distances[same]), ("different", distances[~same])):
            self.writer.add_histogram(f"val/{name}_distance_{kind}", values, step,
                                      bins=DISTANCE_BINS)  # fmt: skip
        grid = hardest_pairs_grid(verifier, result)
        self.writer.add_image(f"val/{name}_hardest_pairs", grid, step, dataformats="HWC")
        self.projector(name, verifier, step)

    def projector(self, name: str, verifier: Verifier, step: int, limit: int = 500) -> None:
        """The embedding projector over (up to ``limit``) evaluation images, with thumbnails."""
        if verifier.embeddings is None:
            return
        images = verifier.decode()[:limit]
        thumbs = F.interpolate(images.float() / 255.0, size=(32, 32), mode="area")
        keys = verifier.pairs.images[:limit]
        labels = [key.parent.name if isinstance(key, Path) else str(key) for key in keys]
        self.writer.add_embedding(torch.from_numpy(verifier.embeddings[:limit]), metadata=labels,
                                  label_img=thumbs, global_step=step, tag=name)  # fmt: skip

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.file_log is not None:
            logging.getLogger().removeHandler(self.file_log)
            self.file_log.close()
