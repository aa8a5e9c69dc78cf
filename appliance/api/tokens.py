"""Per-user API tokens: shown once, stored only as a keyed hash, checked in constant time.

A token reads ``memo_<id>_<secret>``: ``id`` (12 hex characters) names the token in listings, the
audit log and ``revoke``; ``secret`` is 32 random bytes (URL-safe base64). The catalog keeps the
id, the user, and an HMAC of the whole token under a vault subkey, so neither a copy of the
catalog nor the audit log lets anyone use or test a token without the vault key. Creation and
revocation are audited; the token itself never is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from appliance.config import current_actor
from appliance.errors import MemoError
from appliance.vault.store import CATALOG, Vault

TOKEN_RE = re.compile(r"memo_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
ID_RE = re.compile(r"(?:memo_)?([0-9a-f]{12})_?")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


@dataclass(frozen=True)
class TokenInfo:
    """A token's public record (never its secret or hash)."""

    id: str
    user: str
    created_at: str
    created_by: str
    expires_at: str | None
    revoked_at: str | None
    revoked_by: str | None

    def status(self, now: datetime | None = None) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and datetime.fromisoformat(self.expires_at) <= (now or _now()):
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "status": self.status()}


@dataclass(frozen=True)
class NewToken:
    info: TokenInfo
    token: str  # the only time the secret exists outside its holder


class TokenError(MemoError):
    """A request's token was missing, malformed, unknown, revoked or expired (HTTP 401)."""


def _hash_key(vault: Vault) -> bytes:
    return vault.subkey("api-token")


def _hash(key: bytes, token: str) -> str:
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def _info(row: Any) -> TokenInfo:
    return TokenInfo(row["id"], row["user"], row["created_at"], row["created_by"], row["expires_at"], row["revoked_at"], row["revoked_by"])


def create_token(vault: Vault, user: str, expires_days: float | None = None, actor: str | None = None) -> NewToken:
    """Make a token for ``user``; the returned secret is not stored anywhere."""
    if not USER_RE.fullmatch(user or ""):
        raise MemoError(f"invalid user name {user!r}: use letters, digits and . _ @ - (at most 64 characters)")
    if expires_days is not None and not expires_days > 0:
        raise MemoError("--expires must be a positive number of days")
    actor = actor or current_actor()
    now = _now()
    expires = _iso(now + timedelta(days=expires_days)) if expires_days is not None else None
    key = _hash_key(vault)
    with vault.transaction() as db:
        while True:
            tid = secrets.token_hex(6)
            if db.execute("SELECT 1 FROM api_tokens WHERE id=?", (tid,)).fetchone() is None:
                break
        token = f"memo_{tid}_{base64.urlsafe_b64encode(os.urandom(32)).rstrip(b'=').decode()}"
        db.execute(
            "INSERT INTO api_tokens (id, user, token_hash, created_at, created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            (tid, user, _hash(key, token), _iso(now), actor, expires),
        )
    vault.audit.append(actor, "api.token.add", tid, user=user, expires_at=expires)
    return NewToken(TokenInfo(tid, user, _iso(now), actor, expires, None, None), token)


def list_tokens(vault: Vault, include_revoked: bool = True) -> list[TokenInfo]:
    with vault.read() as db:
        rows = db.execute("SELECT * FROM api_tokens ORDER BY rowid").fetchall()
    infos = [_info(r) for r in rows]
    return [i for i in infos if include_revoked or not i.revoked_at]


def revoke_token(vault: Vault, token_id: str, actor: str | None = None) -> TokenInfo:
    """Revoke by id (``memo_<id>`` prefixes are accepted); takes effect on the server's next request."""
    m = ID_RE.fullmatch(token_id.strip())
    if not m:
        raise MemoError(f"invalid token id {token_id!r}: expected 12 hex characters (see `memo api token list`)")
    tid = m.group(1)
    actor = actor or current_actor()
    with vault.transaction() as db:
        row = db.execute("SELECT * FROM api_tokens WHERE id=?", (tid,)).fetchone()
        if row is None:
            raise MemoError(f"no API token {tid}: see `memo api token list`")
        if row["revoked_at"]:
            raise MemoError(f"API token {tid} was already revoked at {row['revoked_at']}")
        at = _iso(_now())
        db.execute("UPDATE api_tokens SET revoked_at=?, revoked_by=? WHERE id=?", (at, actor, tid))
        row = db.execute("SELECT * FROM api_tokens WHERE id=?", (tid,)).fetchone()
    vault.audit.append(actor, "api.token.revoke", tid, user=row["user"])
    return _info(row)


class TokenVerifier:
    """Checks bearer tokens for a running server.

    The token table is re-read whenever the catalog file changes (every commit changes its
    modification time; a file put back changes it or its inode), so a token revoked or added by
    ``memo api token`` in another process takes effect on the next request, without reading the
    catalog for every request.
    """

    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self._key = _hash_key(vault)
        self._path = vault.home / CATALOG
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._rows: dict[str, tuple[str, TokenInfo]] = {}
        self._dummy = _hash(self._key, "memo_000000000000_" + "A" * 43)

    def _table(self) -> dict[str, tuple[str, TokenInfo]]:
        with self._lock:
            st = os.stat(self._path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                with self._vault.read() as db:
                    rows = db.execute("SELECT * FROM api_tokens").fetchall()
                self._rows = {r["id"]: (r["token_hash"], _info(r)) for r in rows}
                self._stamp = stamp
            return self._rows

    def verify(self, token: str | None, now: datetime | None = None) -> TokenInfo:
        """The token's record, or :class:`TokenError` with a message safe to send to the caller."""
        if not token:
            raise TokenError("missing bearer token: send 'Authorization: Bearer memo_…' (create one with `memo api token add USER`)")
        m = TOKEN_RE.fullmatch(token)
        entry = self._table().get(m.group(1)) if m else None
        expected = entry[0] if entry else self._dummy
        # compare even when the id is unknown, so timing does not tell which ids exist
        ok = hmac.compare_digest(_hash(self._key, token), expected) and entry is not None
        if not ok:
            raise TokenError("invalid API token")
        info = entry[1]
        status = info.status(now)
        if status != "active":
            raise TokenError(f"API token {info.id} is {status}")
        return info
