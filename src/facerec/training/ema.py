"""An exponential moving average of the weights (``trainer.ema``), on timm's ``ModelEmaV3``.

Every ``every`` optimizer steps, the k-th update moves the average towards the training weights:

    d_k = 0                                             k = 1 (the average starts as a copy)
    d_k = min(decay, 1 - k'^-warmup_power), k' = k     with warm-up (timm's ``use_warmup``,
                                                        ``warmup_gamma=1``), k >= 2
    d_k = decay                                         without warm-up, k >= 2
    ema = d_k * ema + (1 - d_k) * weights

so the average spans about ``every / (1 - d)`` steps. Floating-point buffers (BatchNorm's running
mean and variance) are averaged like the weights, integer ones (``num_batches_tracked``) copied:
the running statistics then belong to the averaged weights' recent past rather than to the last
step's weights, which is timm's default, and recomputing them (SWA's ``update_bn``) would cost a
pass over the data at every verification.

The loop knows no EMA: :func:`build_average` gives a :class:`NoAverage` when disabled, and both
classes say which module is *the* model (verification, ``best.pt``, the checkpoint's ``model``
entry that every tool reads) and which modules a checkpoint holds under which entry.
"""

from __future__ import annotations

from torch import nn

__all__ = ["NoAverage", "WeightEma", "build_average"]


class NoAverage:
    """``trainer.ema.enabled=false``: the training weights are the model."""

    def update(self, model: nn.Module, step: int) -> None:
        """Nothing to average."""

    def model(self, model: nn.Module) -> nn.Module:
        """The module verification and the tools use: ``model`` itself."""
        return model

    def modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """Checkpoint entries: the training weights are ``model``."""
        return {"model": model}


class WeightEma:
    """The moving average of ``model``'s state (backbone + embedding), kept in eval mode.

    Args:
        model: the training module (eager, on its device); the average starts as its copy.
        decay: the largest decay, in [0, 1).
        warmup: ramp the decay up as ``1 - k^-warmup_power`` (k: the update's index).
        warmup_power: the ramp's power (> 0); 3/4 reaches 0.99 after 464 updates.
        every: optimizer steps between updates (>= 1).
    """

    def __init__(
        self, model: nn.Module, decay: float, warmup: bool, warmup_power: float, every: int
    ) -> None:
        from timm.utils import ModelEmaV3  # timm imports slowly; only runs with EMA pay for it

        self.every = every
        self.ema = ModelEmaV3(model, decay=decay, use_warmup=warmup, warmup_power=warmup_power,
                              warmup_gamma=1.0)  # fmt: skip

    def update(self, model: nn.Module, step: int) -> None:
        """After optimizer step ``step`` (1-based): the update of index ``step // every``, if due.

        timm's ``get_decay(k)`` gives 0 at k = 1, so the first update copies the weights.
        """
        if step % self.every == 0:
            self.ema.update(model, step=step // self.every)

    def model(self, model: nn.Module) -> nn.Module:
        """The module verification and the tools use: the average."""
        return self.ema.module

    def modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """Checkpoint entries: ``model`` (what every tool reads) is the average, the training
        weights are ``train_model``. The average's whole state is its weights, so there is no
        separate EMA entry: resume loads ``model`` back into it."""
        return {"model": self.ema.module, "train_model": model}


def build_average(
    model: nn.Module, enabled: bool, decay: float, warmup: bool, warmup_power: float, every: int
) -> NoAverage | WeightEma:
    """The run's weight average: ``trainer.ema``'s keys as plain arguments."""
    if not enabled:
        return NoAverage()
    return WeightEma(model, decay, warmup, warmup_power, every)
