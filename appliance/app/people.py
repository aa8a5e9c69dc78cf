"""The people of a vault: each person and service account has its own keyring slot (a passphrase
and/or a key file), added and removed by an administrator; their roles come from the policy in
force. Removing someone stops their secret at once and revokes their API tokens."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from appliance.api.tokens import list_tokens, revoke_token
from appliance.app.session import Session, use
from appliance.errors import MemoError
from appliance.policy import Policy
from appliance.vault.keys import Secret


@dataclass(frozen=True)
class Person:
    name: str
    unlock_methods: list[str]
    roles: list[str]
    in_policy: bool  # named under principals: in the policy in force
    active_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _person(session: Session, name: str, methods: list[str], policy: Policy) -> Person:
    tokens = sum(1 for t in list_tokens(session.vault) if t.user == name and t.status() == "active")
    return Person(name, sorted(methods), sorted(policy.roles(name)), any(p.name == name for p in policy.principals), tokens)


def _own_keyring(session: Session) -> None:
    if session.principal != session.vault.principal:
        raise MemoError("the keyring is changed only by the person who unlocked the vault, in their own session")


@use("people.list")
def people(session: Session) -> list[Person]:
    """Everyone who can unlock the vault, with their kinds of secret and their roles in the policy."""
    policy = session.policy()
    return [_person(session, name, methods, policy) for name, methods in sorted(session.vault.keyring.principals().items())]


@use("whoami")
def whoami(session: Session) -> Person:
    methods = session.vault.keyring.principals().get(session.principal, [])
    return _person(session, session.principal, methods, session.policy())


@use("people.add")
def add(session: Session, name: str, secret: Secret, replace: bool = False) -> Person:
    """Give ``name`` a slot (audited as ``people.add``); their roles come from the policy in force."""
    _own_keyring(session)
    methods = session.vault.add_person(name, secret, replace)
    return _person(session, name, methods, session.policy())


@use("people.remove")
def remove(session: Session, name: str) -> dict[str, Any]:
    """Remove every slot of ``name`` and revoke their active API tokens (each audited)."""
    _own_keyring(session)
    policy = session.policy()
    left = [n for n in session.vault.keyring.principals() if n != name]
    if policy.enforced and name in session.vault.keyring.principals() and not any(policy.may(n, "administer") for n in left):
        raise MemoError(f"{name} is the last administrator who can unlock this vault: add another one before removing them")
    session.vault.remove_person(name)
    revoked = [revoke_token(session.vault, t.id, actor=session.principal).id
               for t in list_tokens(session.vault) if t.user == name and t.status() == "active"]
    return {"person": name, "tokens_revoked": revoked}


@use("vault.rekey")
def rekey(session: Session, secret: Secret) -> list[str]:
    """Change the acting person's own secret (audited as ``vault.rekey``); their old one stops working."""
    _own_keyring(session)
    session.vault.rekey(secret)
    return session.vault.keyring.principals()[session.principal]
