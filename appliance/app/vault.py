"""The vault itself: status, verification of every file, garbage collection, TLS material."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from appliance.api.tls import TlsMaterial, import_into_vault
from appliance.app.session import Session, use
from appliance.vault.store import VaultStatus, VaultVerifyReport


@use("vault.status")
def status(session: Session) -> VaultStatus:
    return session.vault.status()


@use("vault.verify")
def verify(session: Session, progress: Callable[[int, int], None] | None = None) -> VaultVerifyReport:
    return session.vault.verify(progress)


@use("vault.gc")
def gc(session: Session) -> int:
    return session.vault.gc(session.principal)


@use("tls.import")
def import_tls(session: Session, cert: Path, key: Path) -> TlsMaterial:
    return import_into_vault(session.vault, cert, key, actor=session.principal)
