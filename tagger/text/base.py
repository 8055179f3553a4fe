"""The sentence-generator interface shared by the offline and LLM generators."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)


@dataclass
class GenerationStats:
    """Counters of one generation run.

    ``invalid`` counts replies rejected by validation (a label missing, empty or malformed);
    ``failed`` counts label sets whose request kept failing at the transport level;
    ``dropped`` counts every label set left without a sentence (invalid or failed).
    """

    requests: int = 0
    retries: int = 0
    invalid: int = 0
    dropped: int = 0
    failed: int = 0
    cache_hits: int = 0
    generated: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def add(self, other: "GenerationStats") -> None:
        """Accumulate ``other`` into this one."""
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


@dataclass
class GenerationResult:
    """Sentences aligned to the input label sets (``None`` where dropped) plus run counters."""

    sentences: list[str | None]
    stats: GenerationStats = field(default_factory=GenerationStats)


@runtime_checkable
class SentenceGenerator(Protocol):
    """Turns label sets into one describing sentence each, aligned with the input."""

    def generate(self, label_sets: Sequence[Sequence[str]]) -> list[str | None]:
        """One sentence per label set; ``None`` marks a label set that got no valid sentence."""
        ...

    def identity(self) -> dict[str, Any]:
        """JSON-able description of what determines the output (enters the corpus id)."""
        ...
