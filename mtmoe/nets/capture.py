"""What a probe forward records: activations filed by the tower they belong to, as the network runs.

Each tower (actor, critic, a shared encoder, a Q network's critic) gets a :class:`TowerActivations`:
the activations whose neurons count for the dormant ratio (torso convs/fcs, hidden layer outputs,
MoE experts' hidden units) and its *representation*, the features the tower's last layer reads
(srank and feature norm are taken there). The network fills them while it runs, so the probe
never parses layer names. ``flat`` keeps every recorded activation under '<tower>.<layer>' (the
``features()`` view).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TowerActivations:
    neurons: dict[str, torch.Tensor] = field(default_factory=dict)
    """Layer -> activations whose units count for the dormant ratio ((B, N), (B, C, H, W) or (rows, h))."""
    representation: torch.Tensor | None = None
    """(B, F): what the tower's last layer reads."""
    expert_representations: list[torch.Tensor] = field(default_factory=list)
    """Position 'big': what each expert tower's head reads, (rows, F) per expert that got rows
    (experts' features are not columns of one space, so srank is taken per expert)."""

    @property
    def representations(self) -> list[torch.Tensor]:
        """The matrices srank and feature norm are taken on: one per expert tower, else the tower's."""
        if self.expert_representations:
            return self.expert_representations
        return [] if self.representation is None else [self.representation]


class ProbeCapture:
    """Filled by ``NetBase._probe``; read through ``towers`` (grouped) or ``flat`` (by name)."""

    def __init__(self):
        self.towers: dict[str, TowerActivations] = {}
        self.flat: dict[str, torch.Tensor] = {}

    def layer(self, tower: str, name: str | None, act: torch.Tensor, neurons: bool) -> None:
        """Record one layer's activations (name None: the tower's own output, e.g. the encoder's)."""
        self.flat[tower if name is None else f"{tower}.{name}"] = act
        group = self.towers.setdefault(tower, TowerActivations())
        if neurons:
            group.neurons[name or "out"] = act

    def representation(self, tower: str, act: torch.Tensor) -> None:
        self.towers.setdefault(tower, TowerActivations()).representation = act.flatten(1)

    def expert_representation(self, tower: str, act: torch.Tensor) -> None:
        self.towers.setdefault(tower, TowerActivations()).expert_representations.append(act.flatten(1))

    def torso(self, tower: str, prefix: str | None, torso, x: torch.Tensor) -> torch.Tensor:
        """Run a torso, recording its layers (prefix.<layer>) as neurons and its output; -> output."""
        if hasattr(torso, "forward_features"):
            x, feats = torso.forward_features(x)
            for k, v in feats.items():
                self.layer(tower, f"{prefix}.{k}" if prefix else k, v, neurons=True)
        else:
            x = torso(x)
        self.layer(tower, prefix, x, neurons=False)
        return x
