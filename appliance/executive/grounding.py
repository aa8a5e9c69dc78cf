"""The memory's value must be stated in a document it cites: a check, not a retrieval.

A small memory can answer a question the corpus does not answer with a value it made up ("90 EUR
per night", "19 May 2025" cited from the wrong page). Before an answer is given, its value — the
answer without the remarks the memory adds in parentheses ("in force; replaced …", the bridge of
a composed answer) — is looked up in the current text of each document the answer cites. The
texts are decrypted into RAM only, and never shown to the executive: nothing is searched for,
the memory's own citation is verified.
"""

from __future__ import annotations

import re

from appliance.reflect.validate import normalise
from appliance.vault.store import Vault

_REMARK = re.compile(r"\s*\([^()]*\)\s*$")


def core_value(answer: str) -> str:
    """The value an answer states: trailing parenthesised remarks off, and for an answer in the
    layout before the lean one ("27 days. The policy says …") its first sentence."""
    value = answer.strip()
    while _REMARK.search(value) and _REMARK.sub("", value):
        value = _REMARK.sub("", value)
    return value.split(". ")[0].strip().rstrip(".")


class SourceCheck:
    """Looks a memory answer's value up in the documents it cites (current versions, cached in RAM)."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._texts: dict[str, str] = {}

    def _text(self, doc_id: str) -> str:
        if doc_id not in self._texts:
            with self.vault.read() as db:
                row = db.execute(
                    "SELECT v.text_oid FROM versions v JOIN documents d ON d.id = v.doc_id "
                    "WHERE v.doc_id=? AND v.status='current' AND d.forgotten_at IS NULL", (doc_id,)).fetchone()
            self._texts[doc_id] = f" {normalise(self.vault.get_object(row['text_oid']).decode())} " if row else ""
        return self._texts[doc_id]

    def __call__(self, answer: str, doc_ids: list[str]) -> bool:
        value = normalise(core_value(answer))
        return bool(value) and any(f" {value} " in self._text(d) for d in doc_ids)
