"""Held-out probes: wordings of a fact that training never shows, asked to measure recall.

Below both training (which stops on them) and evaluation (which scores them), so neither imports
the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.reflect.store import QAPair


@dataclass
class Probe:
    question: str
    answer: str  # the short gold answer (the span)
    doc_ids: list[str]
    kind: str


def split_probes(pairs: list[QAPair]) -> tuple[list[QAPair], list[Probe]]:
    """Held-out probes (``split == "probe"``; older units: paraphrases) are not trained on."""
    def held_out(p: QAPair) -> bool:
        return p.split == "probe" or p.kind == "paraphrase"

    train = [p for p in pairs if not held_out(p)]
    probes = [Probe(p.question, p.answer_span, p.doc_ids, p.kind) for p in pairs if held_out(p) and p.answer_span]
    return train, probes
