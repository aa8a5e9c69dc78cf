"""A session: an unlocked vault and the principal whose slot unlocked it (or, for an API request,
whose token it carries). Every use case of the application layer takes one, checks that the
principal's roles grant it, does the work as that principal, and audits it.

The doors make sessions only here: :func:`open_session` (a passphrase or key file opens one slot,
and that slot names the principal), :func:`create_vault` (the first administrator), and
:meth:`Session.for_principal` (an API token's principal, on the server's unlocked vault). Nothing
about the actor comes from the environment.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from appliance.actor import acting
from appliance.app.access import AccessRefused, use_case
from appliance.config import Settings
from appliance.errors import MemoError
from appliance.policy import PERMISSIONS, Policy, load_policy
from appliance.policy.audit import pin_policy
from appliance.vault.keys import LEGACY_PRINCIPAL, PRINCIPAL_NAME, Keyring, Secret
from appliance.vault.store import KEYRING, Vault

R = TypeVar("R")


@dataclass(frozen=True)
class Session:
    vault: Vault
    principal: str
    channel: str = "cli"  # cli, gui, api, daemon, demo, bench: recorded with what the session does

    @classmethod
    def of(cls, vault: Vault, channel: str = "cli") -> "Session":
        """The session of whoever unlocked ``vault``."""
        return cls(vault, vault.principal, channel)

    def for_principal(self, principal: str, channel: str) -> "Session":
        """A session for another principal on this unlocked vault: an API token's holder."""
        return replace(self, principal=principal, channel=channel)

    # ------------------------------------------------------------------ policy and roles
    def policy(self) -> Policy:
        """The policy set in force: the one pinned in the vault, read again now."""
        self.vault.refresh_settings()
        return load_policy(self.vault.settings)

    def roles(self, policy: Policy | None = None) -> list[str]:
        return sorted((policy or self.policy()).roles(self.principal))

    def may(self, name: str, policy: Policy | None = None) -> bool:
        uc = use_case(name)
        policy = policy or self.policy()
        return not uc.needs or any(policy.may(self.principal, action) for action in uc.needs)

    def require(self, name: str) -> Policy:
        """The policy in force, if the principal may do use case ``name``; otherwise the refusal is
        audited (``access.refused``) and raised as one line naming the roles that would grant it."""
        policy = self.policy()
        if self.may(name, policy):
            return policy
        uc = use_case(name)
        grant = sorted(r for r, acts in PERMISSIONS.items() if acts & uc.needs)
        have = ", ".join(self.roles(policy)) or "no roles"
        where = policy.origin.get(f"principal:{self.principal}") or policy.directory / "access.yaml"
        self.vault.audit.append(self.principal, "access.refused", name, channel=self.channel, roles=self.roles(policy),
                                needs=sorted(uc.needs))
        raise AccessRefused(f"{self.principal} may not {uc.says} ({have}); an administrator can give them one of the "
                            f"roles {', '.join(grant)} in {where} and pin it (`memo policy pin`)")


def use(name: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Mark an application function as use case ``name``: the permission is checked, then the work
    runs as the session's principal (what the modules below audit without being told is theirs)."""
    use_case(name)

    def wrap(fn: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(fn)
        def run(session: Session, *args: Any, **kwargs: Any) -> R:
            session.require(name)
            with acting(session.principal):
                return fn(session, *args, **kwargs)

        run.use_case = name  # type: ignore[attr-defined]
        return run

    return wrap


# ---------------------------------------------------------------------- making sessions
def open_session(settings: Settings, secret: Secret, channel: str = "cli") -> Session:
    """Unlock the vault with ``secret``: the slot that opens names the principal.

    A vault from before principals is migrated on this open: its slots become one administrator's
    (the installed policy's first admin when roles are enforced, else ``admin``), and the installed
    policy set is pinned, both audited.
    """
    if not Vault.exists(settings):
        raise MemoError(f"no appliance at {settings.home}; create it with `memo init` (or set MEMO_HOME)")
    legacy = Keyring.load(settings.home / KEYRING).legacy
    vault = Vault.open(settings, secret, legacy_principal=_legacy_admin(settings) if legacy else LEGACY_PRINCIPAL)
    session = Session.of(vault, channel)
    if vault.settings.pinned_policies is None:
        with acting(session.principal):
            pin_policy(vault, settings.policies_dir, session.principal, reason="the installed policies, pinned by the "
                       "first open of a vault that had none", first=True)
    return session


def create_vault(settings: Settings, secret: Secret, principal: str | None = None, channel: str = "cli") -> Session:
    """A new vault whose first slot is its first administrator's, with the installed policies pinned."""
    name = principal or secret.principal or LEGACY_PRINCIPAL
    installed = load_policy(settings.policies_dir)
    if installed.enforced and not installed.may(name, "administer"):
        admins = sorted(p.name for p in installed.principals if "admin" in p.roles)
        raise MemoError(f"{name} would not be an administrator under {settings.policies_dir} (roles are enforced there): "
                        f"create the vault as {' or '.join(admins) or 'an admin named in it'} (--user NAME), or name {name} "
                        "with roles [admin] first")
    vault = Vault.init(settings, secret, name)
    session = Session.of(vault, channel)
    with acting(session.principal):
        pin_policy(vault, settings.policies_dir, name, reason="pinned at vault creation", first=True)
    return session


def _legacy_admin(settings: Settings) -> str:
    """Whose the slots of a keyring from before principals become: the installed policy's first
    administrator when it enforces roles (so they stay an administrator), else ``admin``."""
    try:
        policy = load_policy(settings.policies_dir)
    except MemoError:
        return LEGACY_PRINCIPAL
    if policy.enforced:
        admins = sorted(p.name for p in policy.principals if "admin" in p.roles and PRINCIPAL_NAME.fullmatch(p.name))
        if admins:
            return admins[0]
    return LEGACY_PRINCIPAL
