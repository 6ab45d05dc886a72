"""MobileNetV2 (Sandler et al. 2018) for 32x32 inputs.

The standard inverted-residual table, except that the stem and the first stride-2 stage (24 channels)
use stride 1, as is usual for CIFAR, so a 32x32 input ends at 4x4. Residual blocks compute
`x + self.conv(x)`, so a graph pass sees a plain add of the block input and its last BN.
"""

from __future__ import annotations

from torch import Tensor, nn

# (expansion t, output channels c, repeats n, first stride s)
CIFAR_INVERTED_RESIDUAL_SETTING: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 in the ImageNet net
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round `value` to a multiple of `divisor`, never below it nor more than 10% down (as torchvision)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class ConvBNReLU(nn.Sequential):
    """Conv2d(bias=False) + BatchNorm2d + ReLU6 (not in place); `groups=in_planes` makes it depthwise."""

    def __init__(
        self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, groups: int = 1
    ):
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(),
        )


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t = 1), 3x3 depthwise, 1x1 linear projection; residual when shapes allow."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = in_planes * expand_ratio
        self.use_res_connect = stride == 1 and in_planes == out_planes
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(in_planes, hidden, kernel_size=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_planes, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_planes),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class CifarMobileNetV2(nn.Module):
    """`features` (stem, inverted residuals, 1x1 conv to `last_channel`), global avg pool, `classifier`."""

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        in_planes = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU(3, in_planes, stride=1)]
        for t, c, n, s in CIFAR_INVERTED_RESIDUAL_SETTING:
            out_planes = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(in_planes, out_planes, s if i == 0 else 1, t))
                in_planes = out_planes
        features.append(ConvBNReLU(in_planes, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(self.last_channel, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.flatten(self.pool(x))
        return self.classifier(x)


def cifar_mobilenetv2(num_classes: int = 10, width_mult: float = 1.0) -> CifarMobileNetV2:
    """Build a CIFAR MobileNetV2 with the given width multiplier."""
    return CifarMobileNetV2(num_classes=num_classes, width_mult=width_mult)
