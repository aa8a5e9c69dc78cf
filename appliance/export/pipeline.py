"""Export a memory version to GGUF (q8_0 and f16), verify it against transformers, promote it.

The transformers model of the version is rebuilt from its adapters, its greedy answers on the
memory's own probe questions are the reference, and each GGUF is stored only if llama.cpp agrees
with that reference. Promotion requires a verified q8_0 (the served type); it switches the serving
memory in one catalog transaction, and only for a version the approval gate lets serve.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from appliance.config import current_actor
from appliance.errors import MemoError
from appliance.memory.serve import SERVE_TYPE, gguf_name
from appliance.memory.versions import get_version, set_status, update_metrics
from appliance.vault.store import Vault

DEFAULT_TYPES = ("f16", "q8_0")
MAX_AGREEMENT_PROBES = 16


def agreement_questions(vault: Vault, limit: int = MAX_AGREEMENT_PROBES) -> list[str]:
    """Held-out probes first, then training questions: what the memory will actually be asked."""
    from appliance.memory.train import split_probes
    from appliance.reflect.store import load_pairs

    pairs = load_pairs(vault)
    train, probes = split_probes(pairs)
    questions = [p.question for p in probes] + [p.question for p in train if p.kind == "fact"]
    return questions[:limit] or ["What do you know about this organisation?"]


def export_version(
    vault: Vault,
    version_id: str,
    types: Sequence[str] = DEFAULT_TYPES,
    min_answer_agreement: float = 0.9,
    actor: str | None = None,
) -> dict[str, Any]:
    from appliance.export.verify import export_and_verify, generate_reference
    from appliance.memory.model_io import load_version

    actor = actor or current_actor()
    get_version(vault, version_id)
    loaded = load_version(vault, version_id)
    questions = agreement_questions(vault)
    reference = generate_reference(loaded.model, loaded.tokenizer, questions)
    results: dict[str, Any] = {}
    for output_type in types:
        try:
            verified = export_and_verify(loaded.model, loaded.tokenizer, vault, gguf_name(version_id, output_type),
                                         base_gguf=str(loaded.base_path), output_type=output_type, probes=questions,
                                         min_answer_agreement=min_answer_agreement, reference=reference, actor=actor)
        except MemoError as exc:  # refused (and audited): the other types may still pass
            results[output_type] = {"refused": str(exc)}
            continue
        r = verified.report
        results[output_type] = {"answer_agreement": round(r.answer_agreement, 4), "token_agreement": round(r.token_agreement, 4),
                                "probes": len(r.probes), "sha256": verified.info.sha256, "size": verified.info.size,
                                "transformers_seconds_median": _median(r.reference_seconds),
                                "llamacpp_seconds_median": _median(r.candidate_seconds)}
    update_metrics(vault, version_id, export=results)
    if all("refused" in r for r in results.values()):
        raise MemoError(f"every export of {version_id} was refused: " + "; ".join(r["refused"] for r in results.values()))
    return results


def promote_version(vault: Vault, version_id: str, actor: str | None = None, policy: Any = None) -> None:
    """Make a version the serving memory; refused unless its served-type export passed verification,
    and — once approvals apply (appliance.approvals.records) — unless approvers signed for it."""
    from appliance.approvals.records import check_servable, forgotten_in

    actor = actor or current_actor()
    version = get_version(vault, version_id)
    if version.status == "rejected":
        raise MemoError(f"{version_id} was rejected and can never serve")
    forgotten = forgotten_in(vault, version_id)
    if forgotten:
        raise MemoError(f"{version_id} was trained on forgotten document(s) {', '.join(forgotten)} and can never serve")
    approval = check_servable(vault, version_id, policy, "be promoted")
    exported = version.metrics.get("export", {}).get(SERVE_TYPE)
    if not exported or "refused" in exported:
        raise MemoError(f"{version_id} has no verified {SERVE_TYPE} export: run `memo export {version_id}` first")
    set_status(vault, version_id, "promoted")
    vault.audit.append(actor, "memory.promote", version_id, gguf=gguf_name(version_id), sha256=exported["sha256"],
                       answer_agreement=exported["answer_agreement"],
                       approved_by=approval.approved_by if approval else None)


def _median(values: Sequence[float]) -> float | None:
    xs = sorted(values)
    return round(xs[len(xs) // 2], 4) if xs else None
