"""IResNet ("improved ResNet") backbones for face recognition.

The ArcFace/insightface design (Deng et al., arXiv 1801.07698; reference implementation
``recognition/arcface_torch/backbones/iresnet.py``): a stride-1 stem keeps the 112x112 input at
full resolution, then four stages of pre-activation-style blocks, each halving the map, give a
``(B, 512, 7, 7)`` feature map. The reference's output layer (BN2d -> Dropout -> FC -> BN1d) lives
in :class:`facerec.embedding.Embedding`, not here.

Parameter counts (backbone + ``Embedding((512, 7, 7), 512)``): iresnet18 24.0M, iresnet34 34.1M,
iresnet50 43.6M, iresnet100 65.2M (the 25088 -> 512 linear alone is 12.8M of each); forward cost at
112x112: 2.61, 4.46, 6.31 and 12.09 GMACs.
"""

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["IBasicBlock", "IResNet", "iresnet18", "iresnet34", "iresnet50", "iresnet100"]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus an identity/projection shortcut.

    Unlike torchvision's BasicBlock there is no activation after the addition and the stride sits
    on the second conv.

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output map.
        stride: stride of the second conv (and of the 1x1 projection shortcut).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.prelu = nn.PReLU(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels, stride)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)``."""
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


def _stage(in_channels: int, out_channels: int, depth: int) -> nn.Sequential:
    """``depth`` blocks; the first one halves the map and changes the width."""
    blocks = [IBasicBlock(in_channels, out_channels, stride=2)]
    blocks += [IBasicBlock(out_channels, out_channels) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class IResNet(nn.Module):
    """IResNet trunk: images ``(B, 3, 112, 112)`` -> feature map ``(B, 512, 7, 7)``.

    Args:
        layers: number of :class:`IBasicBlock` in each of the four stages (widths 64, 128, 256,
            512; every stage has stride 2).
        conv_init_std: standard deviation of the normal init of every conv weight. The default
            0.1 is what the insightface reference uses (``nn.init.normal_(w, 0, 0.1)``); ``None``
            uses Kaiming-normal (fan_out) instead. Every conv is followed by a BatchNorm, so this
            only changes the weights' scale, i.e. the effective learning rate under weight decay.
        zero_init_residual: start every block as the identity by zeroing the weight of its last
            BatchNorm (``bn3``). (The reference zeroes ``bn2``, which does the same to the
            forward pass but also blocks the gradient of ``conv2`` at the first step.)

    Attributes:
        feature_shape: per-sample output shape, ``(512, 7, 7)`` for 112x112 inputs.
    """

    widths = (64, 128, 256, 512)

    def __init__(
        self,
        layers: Sequence[int],
        conv_init_std: float | None = 0.1,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != len(self.widths):
            raise ValueError(f"IResNet needs 4 stage depths, got {list(layers)}")
        # Module names follow the reference (conv1, bn1, prelu, layer1..layer4) so that its
        # backbone checkpoints load after dropping their output-layer keys.
        self.conv1 = _conv3x3(3, self.widths[0])
        self.bn1 = nn.BatchNorm2d(self.widths[0])
        self.prelu = nn.PReLU(self.widths[0])
        w1, w2, w3, w4 = self.widths
        self.layer1 = _stage(w1, w1, layers[0])
        self.layer2 = _stage(w1, w2, layers[1])
        self.layer3 = _stage(w2, w3, layers[2])
        self.layer4 = _stage(w3, w4, layers[3])
        self.feature_shape: tuple[int, ...] = (w4, 7, 7)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if conv_init_std is None:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                else:
                    nn.init.normal_(m.weight, 0.0, conv_init_std)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, IBasicBlock):
                    nn.init.zeros_(m.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 112, 112) -> (B, 512, 7, 7)``."""
        x = self.prelu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def iresnet18(conv_init_std: float | None = 0.1, zero_init_residual: bool = False) -> IResNet:
    """IResNet-18: stages [2, 2, 2, 2]."""
    return IResNet([2, 2, 2, 2], conv_init_std, zero_init_residual)


def iresnet34(conv_init_std: float | None = 0.1, zero_init_residual: bool = False) -> IResNet:
    """IResNet-34: stages [3, 4, 6, 3]."""
    return IResNet([3, 4, 6, 3], conv_init_std, zero_init_residual)


def iresnet50(conv_init_std: float | None = 0.1, zero_init_residual: bool = False) -> IResNet:
    """IResNet-50: stages [3, 4, 14, 3]."""
    return IResNet([3, 4, 14, 3], conv_init_std, zero_init_residual)


def iresnet100(conv_init_std: float | None = 0.1, zero_init_residual: bool = False) -> IResNet:
    """IResNet-100: stages [3, 13, 30, 3]."""
    return IResNet([3, 13, 30, 3], conv_init_std, zero_init_residual)
