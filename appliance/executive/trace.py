"""What one answered question leaves behind: the record shown to the user and written to audit."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SubAnswer:
    """One atomic question put to the memory, and what the memory said (with the documents it cited)."""

    question: str
    answer: str
    sources: list[str]
    seconds: float
    hop: int = 0
    confidence: float = 1.0  # the memory's own: probability of its least likely answer token (citation excluded)
    grounded: bool | None = None  # a document now given in ``sources`` states the value (None: not checked)
    cited: bool | None = None  # the memory's own citation stated it (False: corrected to the documents that do)


@dataclass(frozen=True)
class Trace:
    """The whole path from question to answer, so a reviewer can see why the appliance said what it said."""

    question: str
    answer: str
    sub_answers: list[SubAnswer]
    sources: list[str]
    memory_version: str
    executive: str
    memory: str
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    confidence: float = 0.0  # of the memory answer the reply is built on (0: the memory does not know)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "Trace":
        subs = [SubAnswer(**s) for s in data.get("sub_answers", [])]
        return Trace(**{**data, "sub_answers": subs})
