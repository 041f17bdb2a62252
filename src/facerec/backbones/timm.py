"""Any timm model as a backbone, built by name and returning its pooled feature vector.

``configs/backbone/timm.yaml`` selects it; pick the model on the command line, e.g.
``backbone.model_name=convnext_tiny``. Extra keys are passed to ``timm.create_model``, e.g.
``+backbone.drop_path_rate=0.1``, or ``+backbone.img_size=112`` for ViT-style models whose
position embeddings are sized for 224x224 inputs. Weights are never downloaded.
"""

import difflib
from typing import Any

import timm
import torch
from torch import nn

__all__ = ["TimmBackbone"]


def _close_names(model_name: str, limit: int = 10) -> list[str]:
    """Registered timm names near ``model_name``: substring matches first, then similar ones."""
    base = model_name.split(".")[0]  # drop a pretrained tag such as ".a1_in1k"
    names = timm.list_models(f"*{base}*")
    if not names:
        names = difflib.get_close_matches(base, timm.list_models(), n=limit, cutoff=0.6)
    return names[:limit]


FILE_OPTIONS = frozenset(
    {"checkpoint_path", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"}
)


class TimmBackbone(nn.Module):
    """A timm model without its classifier: images ``(B, 3, H, W)`` -> ``(B, num_features)``.

    The model is created with ``timm.create_model(model_name, pretrained=False, num_classes=0)``,
    so its forward returns the globally pooled features.

    Args:
        model_name: a timm architecture name, e.g. ``"resnet18"`` or ``"convnext_tiny"``.
        **timm_kwargs: further keyword arguments for ``timm.create_model``.

    Attributes:
        feature_shape: per-sample output shape, ``(model.num_features,)``.

    Raises:
        ValueError: if timm does not know ``model_name``; the message lists close names.
    """

    def __init__(self, model_name: str = "resnet18", **timm_kwargs: Any) -> None:
        super().__init__()
        # Options that make timm read a file (or fetch weights): a config saved in a checkpoint
        # someone else wrote must not reach them, and nothing downloads at run time.
        loaders = sorted(set(timm_kwargs) & FILE_OPTIONS)
        if loaders:
            raise ValueError(
                f"backbone option(s) {', '.join(loaders)} would make timm load files or weights;"
                " facerec builds timm backbones untrained"
            )
        if not timm.is_model(model_name):
            close = _close_names(model_name)
            hint = f" Close names: {', '.join(close)}." if close else ""
            raise ValueError(
                f"Unknown timm model {model_name!r}.{hint} "
                "See timm.list_models('*pattern*') for all names."
            )
        self.model = timm.create_model(model_name, pretrained=False, num_classes=0, **timm_kwargs)
        self.model_name = model_name
        self.feature_shape: tuple[int, ...] = (self.model.num_features,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, num_features)``."""
        return self.model(x)
