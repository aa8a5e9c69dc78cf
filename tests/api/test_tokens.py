"""API tokens on a real vault: shown once, stored as a keyed hash, revoked and expired for real, audited."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from appliance.api.tokens import TokenError, TokenVerifier, create_token, list_tokens, revoke_token
from appliance.errors import MemoError
from appliance.vault.store import Vault
from tests.conftest import PASSPHRASE


def catalog_bytes(vault: Vault) -> bytes:
    """The decrypted catalog: every row of every table, as text."""
    with vault.read() as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(repr(tuple(row)) for t in tables for row in db.execute(f'SELECT * FROM "{t}"')).encode()


def test_token_verifies_and_is_stored_only_as_a_keyed_hash(vault: Vault) -> None:
    new = create_token(vault, "alice", expires_days=30, actor="admin")
    assert new.token.startswith(f"memo_{new.info.id}_") and len(new.token) == 5 + 12 + 1 + 43
    info = TokenVerifier(vault).verify(new.token)
    assert (info.user, info.id, info.status()) == ("alice", new.info.id, "active")

    secret = new.token[len(f"memo_{new.info.id}_"):]  # the base64url secret may itself contain "_"
    assert len(secret) == 43
    plain_catalog = catalog_bytes(vault)
    assert new.token.encode() not in plain_catalog and secret.encode() not in plain_catalog
    with vault.read() as db:
        stored = db.execute("SELECT token_hash FROM api_tokens WHERE id=?", (new.info.id,)).fetchone()[0]
    assert len(stored) == 64 and stored not in new.token
    for path in vault.home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    entries = [e for e in vault.audit.entries() if e.action.startswith("api.token")]
    assert [(e.action, e.actor, e.target, e.details["user"]) for e in entries] == [("api.token.add", "admin", new.info.id, "alice")]
    assert secret not in json.dumps([e.to_dict() for e in vault.audit.entries()])


def test_listing_has_no_secret_or_hash(vault: Vault) -> None:
    a = create_token(vault, "alice")
    b = create_token(vault, "bob@ward-7", expires_days=1)
    listed = [t.to_dict() for t in list_tokens(vault)]
    assert [(t["id"], t["user"], t["status"]) for t in listed] == [(a.info.id, "alice", "active"), (b.info.id, "bob@ward-7", "active")]
    text = json.dumps(listed)
    assert a.token not in text and "hash" not in text and listed[0]["expires_at"] is None


@pytest.mark.parametrize("bad", [None, "", "memo_", "Bearer x", "memo_0123456789ab_" + "A" * 43, "memo_zzzzzzzzzzzz_" + "A" * 43])
def test_missing_malformed_and_unknown_tokens_fail(vault: Vault, bad: str | None) -> None:
    create_token(vault, "alice")
    with pytest.raises(TokenError):
        TokenVerifier(vault).verify(bad)


def test_a_token_with_one_changed_character_fails(vault: Vault) -> None:
    new = create_token(vault, "alice")
    last = new.token[-1]
    forged = new.token[:-1] + ("A" if last != "A" else "B")
    with pytest.raises(TokenError, match="invalid"):
        TokenVerifier(vault).verify(forged)


def test_revocation_reaches_a_running_verifier_through_the_catalog(vault: Vault, settings, secret) -> None:  # noqa: ANN001
    new = create_token(vault, "alice")
    verifier = TokenVerifier(vault)
    assert verifier.verify(new.token).user == "alice"
    other = Vault.open(settings, secret)  # as `memo api token revoke` in another process would
    info = revoke_token(other, f"memo_{new.info.id}", actor="admin")
    assert info.revoked_by == "admin" and info.status() == "revoked"
    with pytest.raises(TokenError, match="revoked"):
        verifier.verify(new.token)
    with pytest.raises(MemoError, match="already revoked"):
        revoke_token(vault, new.info.id)
    with pytest.raises(MemoError, match="no API token"):
        revoke_token(vault, "0123456789ab")
    with pytest.raises(MemoError, match="invalid token id"):
        revoke_token(vault, "nope")
    revoked = [e for e in vault.audit.entries() if e.action == "api.token.revoke"]
    assert [(e.actor, e.target, e.details["user"]) for e in revoked] == [("admin", new.info.id, "alice")]


def test_expired_token_fails(vault: Vault) -> None:
    new = create_token(vault, "alice", expires_days=2)
    verifier = TokenVerifier(vault)
    now = datetime.now(timezone.utc)
    assert verifier.verify(new.token, now=now + timedelta(days=1)).user == "alice"
    with pytest.raises(TokenError, match="expired"):
        verifier.verify(new.token, now=now + timedelta(days=3))


@pytest.mark.parametrize("user", ["", "two words", "x" * 65, "-lead", "a/b"])
def test_invalid_user_names_are_refused(vault: Vault, user: str) -> None:
    with pytest.raises(MemoError, match="invalid user name"):
        create_token(vault, user)


def test_non_positive_expiry_is_refused(vault: Vault) -> None:
    with pytest.raises(MemoError, match="positive"):
        create_token(vault, "alice", expires_days=0)


def test_cli_add_list_revoke(cli_env: dict[str, str]) -> None:
    def memo(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "appliance.cli", *args], env={**cli_env, **env}, capture_output=True,
                              text=True, timeout=300)

    assert memo("init").returncode == 0
    nobody = memo("api", "token", "add", "carol")  # a token acts as a principal: carol is none yet
    assert nobody.returncode == 1 and "carol is no principal of this vault" in nobody.stderr
    assert memo("people", "add", "carol", MEMO_NEW_PASSPHRASE="carol's own passphrase").returncode == 0
    added = memo("api", "token", "add", "carol", "--expires", "7")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("memo_") and "\n" not in token and "not shown again" in added.stderr
    listed = memo("api", "token", "list", "--json")
    rows = json.loads(listed.stdout)
    assert [(r["user"], r["status"]) for r in rows] == [("carol", "active")] and token not in listed.stdout
    assert memo("api", "token", "revoke", rows[0]["id"]).returncode == 0
    again = memo("api", "token", "revoke", rows[0]["id"])
    assert again.returncode == 1 and again.stderr.startswith("error:") and "already revoked" in again.stderr
    assert json.loads(memo("api", "token", "list", "--json").stdout)[0]["status"] == "revoked"
    assert PASSPHRASE not in listed.stdout
