"""A head kind that exists only for tests: one file plus its registration, as a new head would be
(a global adapter scored against the labels' text embeddings)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from tagger.method.headkinds import register_head, register_kind
from tagger.method.heads.base import FitConfig, HeadModule, softplus_ranking, zero_linear

__all__ = ["DummyConfig", "DummyModule"]


@dataclass(frozen=True)
class DummyConfig:
    logit_scale: float = 10.0
    fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=3))


class DummyModule(HeadModule):
    def __init__(self, cfg: DummyConfig, d: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.adapt = zero_linear(d, d)

    def forward(self, g: torch.Tensor, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.normalize(g + self.adapt(g), dim=-1) @ t.T

    def loss(self, g: torch.Tensor, p: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return softplus_ranking(self.cfg.logit_scale * self(g, p, t), y)


register_head("dummy", DummyConfig, DummyModule)


def register() -> None:
    """The registration line a new head adds to ``tagger/method/headkinds.py``."""
    register_kind("dummy", __name__, "a test head: one global adapter")
