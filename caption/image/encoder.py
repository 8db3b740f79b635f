"""Image encoders: (B, 3, P, P) in [0, 1] -> annotations (B, L, D) on a grid of L = gh * gw locations.

The paper takes VGG's conv5_4 (14 x 14 x 512) so that each annotation describes one region
(Xu et al. 2015, sec. 3.1.1). `SceneCNN` does the same from scratch at a fraction of the cost:
five 3x3 convolutions with stride 8 in all, a 14 x 14 grid at 112 px, receptive field 39 px (as big
as the largest scene object). torchvision backbones keep their convolutional trunk; their ImageNet
weights come from a local file only (no download), and they are frozen unless fine-tuned.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ..checkpoint import load_weights_into
from ..config import ENCODERS, CaptionConfig
from ..kernels.batch_norm import batch_norm_relu

BACKBONE_GRID = 14    # the paper's 14 x 14 annotations (VGG conv5 at 224 px)
# ImageNet statistics; the built-in CNN uses them too, so every encoder takes the same input.
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class SceneCNN(nn.Sequential):
    """The default encoder, trained from scratch with the decoder."""

    def __init__(self, feature_dim: int = 128):
        D = feature_dim
        super().__init__(_block(3, 32, 2), _block(32, 64, 2), _block(64, 64, 1),
                         _block(64, D, 2), _block(D, D, 1))

    def forward(self, x: Tensor) -> Tensor:
        for conv, norm, relu in self:
            # relu(norm(x)); in CPU training on channels-last maps, one C kernel each way
            x = batch_norm_relu(conv(x), norm, relu)
        return x


def _torchvision_trunk(name: str, weights: str | None) -> tuple[nn.Module, int, str | None]:
    """The convolutional trunk, its channels D, and the sha256 of the weights file it was read from."""
    import torchvision
    model = getattr(torchvision.models, name)(weights=None)
    digest = load_weights_into(model, weights, name) if weights else None
    if name.startswith("resnet"):   # everything up to layer4: stride 32, 512 or 2048 channels
        trunk = nn.Sequential(*list(model.children())[:-2])
        dim = model.fc.in_features
    else:                           # vgg: conv5 without the last pooling (the paper's conv5_4)
        trunk = nn.Sequential(*list(model.features.children())[:-1])
        dim = 512
    return trunk, dim, digest


class Encoder(nn.Module):
    """Normalise, run the trunk, pool to the grid, flatten (`features`: what a frozen backbone
    gives, and what the feature cache stores), then add a position embedding (`annotate`)."""

    def __init__(self, config: CaptionConfig):
        super().__init__()
        c = config
        if c.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {c.encoder!r}")
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.weights_sha256 = None    # of the backbone's weights file, when it was read from one
        if c.encoder == "cnn":
            self.trunk, self.dim = SceneCNN(c.feature_dim), c.feature_dim
            self.frozen = False
        else:
            self.trunk, self.dim, self.weights_sha256 = _torchvision_trunk(c.encoder, c.encoder_weights)
            self.frozen = not c.fine_tune
            self.trunk.requires_grad_(not self.frozen)
        with torch.no_grad():   # the trunk's map size; eval mode, as batch norm cannot see one 1 x 1 map
            self.trunk.eval()
            gh, gw = self.trunk(torch.zeros(1, 3, c.image_size, c.image_size)).shape[-2:]
            self.trunk.train()
        side = c.grid or (None if c.encoder == "cnn" else BACKBONE_GRID)
        self.grid = (side, side) if side else (gh, gw)
        self.pool = nn.AdaptiveAvgPool2d(self.grid) if self.grid != (gh, gw) else nn.Identity()
        L = self.grid[0] * self.grid[1]
        # Convolutions are nearly translation-equivariant: without this the annotations hardly
        # say where they are, and "left of" / "above" cannot be read off the attended context.
        self.position = nn.Parameter(torch.zeros(L, self.dim)) if c.position else None

    def train(self, mode: bool = True) -> "Encoder":
        super().train(mode)
        if self.frozen:   # a frozen backbone keeps its batch-norm statistics
            self.trunk.eval()
        return self

    def features(self, images: Tensor) -> Tensor:
        """images (B, 3, P, P) in [0, 1] -> the trunk's pooled map (B, L, D), before the position."""
        B, C, P, _ = images.shape
        x = (images - self.mean) / self.std
        if self.training and x.device.type == "cpu" and isinstance(self.trunk, SceneCNN):
            # oneDNN's convolutions run faster channels-last on the CPU (BENCHMARKS.md, "Fusing the
            # CPU step's elementwise work"); training only, so decoding a model gives the same bits.
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.pool(self.trunk(x))                                        # (B, D, gh, gw)
        return x.flatten(2).transpose(1, 2)                                 # (B, L, D)

    def annotate(self, feats: Tensor) -> Tensor:
        """The annotations a_i: features (B, L, D) with each location's embedding added."""
        return feats + self.position if self.position is not None else feats

    def forward(self, images: Tensor) -> Tensor:
        B, C, P, _ = images.shape
        return self.annotate(self.features(images))                         # (B, L, D)
