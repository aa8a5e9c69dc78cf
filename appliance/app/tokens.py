"""API tokens: each belongs to a principal and carries that principal's roles, as the policy in
force gives them at each request. A request's token becomes a session of its principal."""

from __future__ import annotations

from appliance.api.tokens import NewToken, TokenInfo, TokenVerifier, create_token, list_tokens, revoke_token
from appliance.app.session import Session, use
from appliance.errors import MemoError


def _known(session: Session, user: str) -> bool:
    """A principal of this vault: someone who unlocks it, or someone the policy in force names."""
    return user in session.vault.keyring.principals() or any(p.name == user for p in session.policy().principals)


@use("tokens.add")
def add(session: Session, user: str, expires_days: float | None = None) -> NewToken:
    """A token for principal ``user``; printed once, only its keyed hash is kept (audited)."""
    if not _known(session, user):
        raise MemoError(f"{user} is no principal of this vault: a token acts as a person or service account, so add "
                        f"them first (`memo people add {user}`) or name them in the policy")
    return create_token(session.vault, user, expires_days, actor=session.principal)


@use("tokens.list")
def tokens(session: Session) -> list[TokenInfo]:
    return list_tokens(session.vault)


@use("tokens.revoke")
def revoke(session: Session, token_id: str) -> TokenInfo:
    return revoke_token(session.vault, token_id, actor=session.principal)


class Authenticator:
    """Turns a request's bearer token into a session of its principal (a running server's)."""

    def __init__(self, server: Session) -> None:
        self.server = server
        self.verifier = TokenVerifier(server.vault)

    def authenticate(self, token: str | None, channel: str = "api") -> tuple[Session, TokenInfo]:
        """The token's session and record; :class:`appliance.api.tokens.TokenError` when refused."""
        info = self.verifier.verify(token)
        return self.server.for_principal(info.user, channel), info
