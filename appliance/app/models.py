"""The models the appliance can run: found offline, registered with their checksum (audited)."""

from __future__ import annotations

from typing import Any

from appliance.app.session import Session, use


@use("models.list")
def models(session: Session) -> tuple[list[Any], list[str]]:
    """Registered models (new files in the models folder are registered now), and problems found."""
    from appliance.llm.registry import ModelRegistry

    reg = ModelRegistry(session.vault)
    problems = reg.refresh()
    return reg.list(), problems


@use("models.list")
def model(session: Session, name: str) -> Any:
    """One model, its checksum verified now."""
    from appliance.llm.registry import ModelRegistry

    reg = ModelRegistry(session.vault)
    reg.refresh()
    return reg.verify(name)
