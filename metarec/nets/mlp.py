"""Plain multi-layer perceptrons shared by the feature networks (MeLU's decision MLP, DeepFM's deep part)."""

from __future__ import annotations

from torch import nn


def mlp(inp: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers, d = [], inp
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, 1))
    return nn.Sequential(*layers)
