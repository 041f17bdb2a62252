"""The pieces of a training step: the step itself, the non-finite guard and preemption.

Plain functions and two small classes, so the loop in :mod:`facerec.training.run` reads top
to bottom.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from torch import nn

from facerec import distributed

log = logging.getLogger(__name__)


def train_step(
    module: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
    grad_clip: float | None = None,
    grad_norm: Callable[[float | None], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One optimizer step over ``batches`` (gradient accumulation when there are several).

    Args:
        module: returns the scalar loss of ``(images (B,3,H,W), labels (B,))``; DDP-wrapped
            or not (with DDP, gradients are all-reduced on the last micro-batch only).
        batches: micro-batches on the training device.
        amp_dtype: autocast dtype, None for float32.
        grad_clip: max global gradient norm; None clips nothing (the norm is still computed:
            it is how a non-finite gradient is detected).
        grad_norm: computes (and clips to its argument) the global gradient norm when the
            parameters are not all replicated (Partial FC); default: over ``module``.

    Returns:
        The mean loss (detached), the gradient norm, and whether the optimizer stepped
        (False when the loss or a gradient was not finite; the step is then skipped).
    """
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=batches[0][0].device)
    for i, (images, labels) in enumerate(batches):
        last = i == len(batches) - 1
        sync = module.no_sync() if not last and hasattr(module, "no_sync") else nullcontext()
        with sync:
            with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = module(images, labels) / len(batches)
            scaler.scale(loss).backward()
        total += loss.detach()
    scaler.unscale_(optimizer)  # no-op without fp16: gradients are then already unscaled
    if grad_norm is None:
        norm = nn.utils.clip_grad_norm_(module.parameters(), grad_clip or math.inf)
    else:
        norm = grad_norm(grad_clip)
    # One host sync per step: the skip decision must precede optimizer.step(). DDP has already
    # all-reduced the gradients, so every rank takes the same decision.
    finite = bool(torch.isfinite(norm) & torch.isfinite(total))
    if scaler.is_enabled():
        scaler.step(optimizer)  # the scaler itself skips non-finite steps and lowers its scale
    elif finite:
        optimizer.step()
    scaler.update()
    scheduler.step()  # the schedule follows the step count, skipped steps included
    return total, norm.detach(), finite


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class NonFiniteGuard:
    """Counts skipped steps; stops the run after ``max_consecutive`` in a row.

    A single NaN (one bad batch, an fp16 overflow) costs one step; a run that has diverged
    stops with a message instead of training on garbage for days.
    """

    def __init__(self, max_consecutive: int = 20, min_fp16_scale: float = 1e-4) -> None:
        self.max_consecutive = max_consecutive
        self.min_fp16_scale = min_fp16_scale
        self.consecutive = 0
        self.skipped = 0

    def update(self, finite: bool, step: int, lr: float, scaler: torch.amp.GradScaler) -> None:
        if finite:
            self.consecutive = 0
        else:
            self.consecutive += 1
            self.skipped += 1
            log.warning(
                "step %d: non-finite loss or gradient at lr %.3e, step skipped (%d in a row,"
                " %d in all)", step, lr, self.consecutive, self.skipped,
            )  # fmt: skip
            if self.consecutive >= self.max_consecutive:
                raise NonFiniteError(
                    f"{self.consecutive} consecutive steps with a non-finite loss or gradient"
                    f" (last at step {step}, lr {lr:.3e}): the run has diverged; lower"
                    " optim.lr, add trainer.grad_clip, or use trainer.amp=bf16/none"
                )
        if scaler.is_enabled() and scaler.get_scale() < self.min_fp16_scale:
            raise NonFiniteError(
                f"fp16 loss scale collapsed to {scaler.get_scale():.2e} at step {step}: the"
                " gradients overflow fp16 at every scale; use trainer.amp=bf16"
            )

    def state_dict(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consecutive, self.skipped = state["consecutive"], state["skipped"]


class Preemption:
    """SIGTERM / SIGUSR1 (preemption) and SIGINT (Ctrl-C) ask for a checkpoint at the next step
    boundary, then an exit; a second Ctrl-C stops at once, without one.

    Cluster schedulers send SIGTERM (or, with ``--signal``, SIGUSR1) some time before they
    kill a job; the handler only sets a flag, the loop checks it between steps. Ctrl-C is
    treated the same way (the steps since the last checkpoint are kept, exit
    :data:`INTERRUPTED_EXIT`) instead of a ``KeyboardInterrupt`` traceback that loses them.
    The training loader's workers ignore SIGINT (:func:`facerec.training.inputs.ignore_ctrl_c`), so
    Ctrl-C, which reaches every process of the terminal, does not kill them under the step.

    Args:
        repeat_s: a SIGINT within this many seconds of the first counts as the same Ctrl-C
            (torchrun forwards the terminal's SIGINT to workers that got it already).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
    INTERRUPTED_EXIT = 128 + signal.SIGINT  # 130: the shell's status for Ctrl-C

    def __init__(self, repeat_s: float = 1.0) -> None:
        self.received: int | None = None
        self.repeat_s = repeat_s
        self._first_at = 0.0
        self._pid = os.getpid()
        self._previous = {}
        for sig in self.SIGNALS:
            # signal() raises ValueError outside the main thread: then there is no handler.
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker: the training process decides, and stops it
        now = time.monotonic()
        if self.received is None:
            self.received, self._first_at = signum, now
            if signum == signal.SIGINT and os.environ.get("RANK", "0") == "0":  # once a job
                _say("facerec: Ctrl-C: stopping at the end of this step with a checkpoint"
                     " (Ctrl-C again to stop at once, without one)")  # fmt: skip
        elif signum == signal.SIGINT and now - self._first_at > self.repeat_s:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        elif signum == signal.SIGINT:
            self.received = signum  # the exit status says it was an interrupt

    @property
    def interrupted(self) -> bool:
        """Whether this process got Ctrl-C (SIGINT) rather than a preemption signal."""
        return self.received == signal.SIGINT

    def exit_code(self, preempted: int) -> int:
        """The exit status: 130 after Ctrl-C, else ``preempted`` (``trainer.preempt_exit_code``;
        also on a rank that only learnt of another rank's signal)."""
        return self.INTERRUPTED_EXIT if self.interrupted else preempted

    def requested(self, device: torch.device) -> bool:
        """True on every rank as soon as any rank got the signal (the ranks must stop together).

        Args:
            device: this rank's device (NCCL reduces on the GPU, gloo on the CPU).
        """
        return distributed.any_rank(self.received is not None, device)

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _say(line: str) -> None:
    """One line on stderr from a signal handler: ``os.write``, not ``print``, which could
    re-enter a buffered write the signal interrupted."""
    with contextlib.suppress(OSError):
        os.write(2, f"{line}\n".encode())
