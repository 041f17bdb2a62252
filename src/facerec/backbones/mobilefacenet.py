"""MobileFaceNet (Chen et al., "MobileFaceNets", arXiv 1804.07573, Table 1).

MobileNetV2-style inverted-residual bottlenecks with PReLU, a fast early downsample and a global
depthwise convolution (GDC) instead of global average pooling, which keeps a learnt weight per
position of the final 7x7 map. The paper's last layer (linear conv1x1 to 128) is the job of
:class:`facerec.embedding.Embedding`; this module ends at the 512-d GDC output.

With ``Embedding((512,), 128)`` the whole network has 1.00M parameters and 0.221 GMACs at
112x112 (paper: 0.99M, 221M MAdds).

With ``memory_efficient``, a training pass keeps one tensor per layer for the backward pass
instead of three (:mod:`facerec.backbones.recompute`): the same outputs and gradients, bit for
bit, for 2.2x less activation memory and about 9% more CPU time per step (docs/performance.md);
the demo turns it on.
"""

import torch
from torch import nn

from facerec.backbones.recompute import recomputes, run_chain

__all__ = ["Bottleneck", "MobileFaceNet"]

# (expansion t, output channels c, repeats n, first stride s), Table 1 of the paper.
_BOTTLENECKS: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)


def _conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    act: bool = True,
    padding: int | None = None,
) -> nn.Sequential:
    """Conv (no bias; "same" padding by default) -> BN, then PReLU unless ``act`` is False."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2 if padding is None else padding,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
    ]
    if act:
        layers.append(nn.PReLU(out_channels))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise 3x3 (stride) -> linear 1x1 project.

    The shortcut is added when the block keeps both the resolution and the width.

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output map.
        stride: stride of the depthwise conv.
        expansion: width multiplier of the hidden layer (``t`` in the paper).
        memory_efficient: recompute BN + PReLU in the backward pass instead of keeping their
            outputs (:func:`facerec.backbones.recompute.run_chain`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expansion: int,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.block = nn.Sequential(
            _conv_bn(in_channels, hidden, 1),
            _conv_bn(hidden, hidden, 3, stride=stride, groups=hidden),
            _conv_bn(hidden, out_channels, 1, act=False),
        )
        self.residual = stride == 1 and in_channels == out_channels
        self.memory_efficient = memory_efficient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)``."""
        chained = self.memory_efficient and recomputes(self, x)
        out = run_chain(self.block, x) if chained else self.block(x)
        return x + out if self.residual else out


class MobileFaceNet(nn.Module):
    """MobileFaceNet trunk: images ``(B, 3, 112, 112)`` -> feature vector ``(B, 512)``.

    Args:
        num_features: width of the last 1x1 conv and of the GDC output (512 in the paper).
        memory_efficient: in training, recompute each BN + PReLU output in the backward pass
            rather than keep it (bit-identical gradients; one more elementwise pass per layer).

    Attributes:
        feature_shape: per-sample output shape, ``(num_features,)``.
    """

    def __init__(self, num_features: int = 512, memory_efficient: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            _conv_bn(3, 64, 3, stride=2),  # 112 -> 56
            _conv_bn(64, 64, 3, groups=64),  # depthwise
        ]
        in_channels = 64
        for t, c, n, s in _BOTTLENECKS:  # 56 -> 28 -> 14 -> 7
            for i in range(n):
                stride = s if i == 0 else 1
                layers.append(Bottleneck(in_channels, c, stride, t, memory_efficient))
                in_channels = c
        layers += [
            _conv_bn(in_channels, num_features, 1),
            # Linear GDC: a 7x7 depthwise conv over the whole 7x7 map -> 1x1, no activation.
            _conv_bn(num_features, num_features, 7, groups=num_features, act=False, padding=0),
        ]
        self.features = nn.Sequential(*layers)
        self.feature_shape: tuple[int, ...] = (num_features,)
        self.memory_efficient = memory_efficient

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 112, 112) -> (B, num_features)``."""
        if not (self.memory_efficient and recomputes(self, x)):
            return self.features(x).flatten(1)
        # The stem and the tail are chains of their own; each bottleneck chains its block.
        stem, blocks, tail = self.features[:2], self.features[2:-2], self.features[-2:]
        return run_chain(tail, blocks(run_chain(stem, x))).flatten(1)
