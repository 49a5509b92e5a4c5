"""Output-space discriminator D of Eq. (10) (paper section IV-B).

Five convolutions with {64, 128, 256, 512, 1} channels, 4x4 kernels, stride 2, padding 1,
LeakyReLU(0.2) after all but the last, no normalisation (the AdaptSegNet design the paper
follows). The input is the softmax of the segmentor's logits upsampled to the image size;
the output is a map of patch logits (one per receptive field), about 1/32 of the input size.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class OutputDiscriminator(nn.Module):
    """Patch discriminator on class-probability maps: [B, num_classes, H, W] -> [B, 1, ~H/32, ~W/32]."""

    def __init__(self, num_classes: int = 19, ndf: int = 64):
        super().__init__()
        channels = [num_classes, ndf, 2 * ndf, 4 * ndf, 8 * ndf, 1]
        layers: list[nn.Module] = []
        for i in range(5):
            layers.append(nn.Conv2d(channels[i], channels[i + 1], kernel_size=4, stride=2, padding=1))
            if i < 4:
                # The last conv emits raw logits for BCE-with-logits (losses/adversarial.py).
                layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.net = nn.Sequential(*layers)

    def forward(self, prob: torch.Tensor) -> torch.Tensor:
        return self.net(prob)
