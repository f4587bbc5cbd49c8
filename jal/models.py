"""The backbones of the paper (docs/protocol.md sections 1 and 7): an 8-layer CNN for CIFAR-10 (and small images
of a dataset of yours), a CIFAR ResNet-34 for CIFAR-100, and torchvision's ResNet-50 for WebVision and Clothing1M
(and large images of yours)."""

import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class CNN8(nn.Module):
    """Six 3x3 conv layers in three blocks (64, 128, 196 channels, max-pool after each) and two linear layers.

    32x32 -> 16 -> 8 -> 4, so the flattened features are 196 * 4 * 4 = 3136. Other square images of side s (a
    dataset of yours, docs/your-data.md) flatten to 196 * (s // 8)^2: the network for images up to 64 pixels;
    beyond, jal.config_check asks for ResNet-50.
    """

    def __init__(self, num_classes: int = 10, image_size: int = 32):
        super().__init__()
        side = image_size // 8  # three 2x2 max-pools, each rounding down
        layers, in_channels = [], 3
        for width in (64, 128, 196):
            layers += _conv_bn_relu(in_channels, width) + _conv_bn_relu(width, width) + [nn.MaxPool2d(2)]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(196 * side * side, 256),
            nn.BatchNorm1d(256),
            nn.ReLU(inplace=True),
            nn.Linear(256, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet34(nn.Module):
    """ResNet-34 (BasicBlock x [3, 4, 6, 3]) with the CIFAR stem: 3x3 conv, stride 1, no max-pool."""

    def __init__(self, num_classes: int = 100, blocks: tuple[int, ...] = (3, 4, 6, 3)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        stages, in_channels = [], 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                stages.append(BasicBlock(in_channels, width, stride))
                in_channels = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


def resnet50(num_classes: int, pretrained: bool = False, zero_init_residual: bool = False) -> nn.Module:
    """torchvision's ResNet-50: from scratch (WebVision: the last BatchNorm of each residual branch zeroed), or
    with its ImageNet weights (ResNet50_Weights.DEFAULT, through torchvision's weights API into torch's cache,
    $TORCH_HOME) and a new `num_classes`-way head (Clothing1M), as the reference builds them."""
    from torchvision.models import ResNet50_Weights
    from torchvision.models import resnet50 as torchvision_resnet50

    if not pretrained:
        return torchvision_resnet50(num_classes=num_classes, zero_init_residual=zero_init_residual)
    weights = ResNet50_Weights.DEFAULT
    try:
        model = torchvision_resnet50(weights=weights)
    except Exception as err:  # no network, a proxy, a damaged download: say where the file must go
        raise FileNotFoundError(
            f"the ImageNet weights of ResNet-50 ({weights.url}) could not be had ({type(err).__name__}): download "
            "that file into $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/hub/checkpoints), or train from "
            "scratch with model.pretrained=false") from None
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model
