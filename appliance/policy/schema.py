"""The shape of policy files (``policies/*.yaml``), validated strictly.

Unknown keys are errors, not ignored: a misspelt ``purposes`` must not silently approve nothing
(or, worse, something). Later policies add fields here; ``approval`` holds the rules for promoting a memory.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Purpose = Literal["generator", "executive"]
"""What a model is used for: writing reflections from documents, or answering questions."""

DataKind = Literal["questions", "sub_questions", "memory_answers", "sources", "document_text", "reflections"]
"""Kinds of data that may be sent to an external endpoint; none leaves unless listed."""

Role = Literal["admin", "approver", "operator", "auditor", "reader"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def normalise_url(url: str) -> str:
    """Canonical form for comparing endpoint URLs: lower-case scheme and host, default port and
    trailing slash dropped. Paths are compared exactly: approving ``/v1`` approves nothing else."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}.get(scheme)
    netloc = host if port in (None, default) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return f"{scheme}://{netloc}{path}"


class Endpoint(_Strict):
    """A model the appliance may use. ``kind: llamacpp`` runs locally on a registered model;
    ``kind: openai`` is an external OpenAI-compatible server, allowed only for the listed
    purposes and receiving only the listed kinds of data."""

    name: str = Field(pattern=_NAME)
    kind: Literal["llamacpp", "openai"]
    model: str = Field(min_length=1)
    url: str | None = None
    purposes: list[Purpose] = Field(min_length=1)
    data_allowed_to_leave: list[DataKind] = Field(default_factory=list)
    api_key_env: str | None = None
    json_mode: Literal["json_schema", "json_object"] = "json_schema"
    timeout_s: float = Field(default=120.0, gt=0, le=3600)
    description: str = ""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be http(s)://host[:port]/path")
        if parts.username or parts.password:
            raise ValueError("url must not contain credentials; use api_key_env")
        if parts.query or parts.fragment:
            raise ValueError("url must not contain a query or fragment")
        return v

    @field_validator("api_key_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not _ENV.match(v):
            raise ValueError("api_key_env names an environment variable (A-Z, 0-9, _), not the key itself")
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> "Endpoint":
        if self.kind == "openai" and self.url is None:
            raise ValueError("an openai endpoint needs a url")
        if self.kind == "llamacpp" and (self.url or self.data_allowed_to_leave or self.api_key_env):
            raise ValueError("a llamacpp endpoint runs locally: no url, api_key_env or data_allowed_to_leave")
        return self

    @property
    def external(self) -> bool:
        return self.kind != "llamacpp"


_PUBLIC_KEY = re.compile(r"^ed25519:[A-Za-z0-9+/]{43}=$")


class Principal(_Strict):
    """A person or service account and what it may do. An ``approver`` signs approvals with the
    Ed25519 key whose public half is ``public_key`` (``memo approvals keygen`` prints it); an
    approver without one cannot sign anything."""

    name: str = Field(min_length=1, max_length=128)
    roles: list[Role] = Field(min_length=1)
    public_key: str | None = None

    @field_validator("public_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None and not _PUBLIC_KEY.match(v.strip()):
            raise ValueError("public_key must be 'ed25519:' and 44 base64 characters, as `memo approvals keygen` prints it")
        return v.strip() if v else v


class ApprovalRules(_Strict):
    """What a candidate memory needs before it may serve.

    ``approvals_required``: distinct approvers who must sign (1 or 2); ``min_retention``: the
    least share of the serving memory's answered probes the candidate must still answer;
    ``min_superseded``: the least accuracy on "value in force now" questions of changed policies.
    """

    approvals_required: int = Field(default=1, ge=1, le=2)
    min_retention: float | None = Field(default=None, ge=0.0, le=1.0)
    min_superseded: float | None = Field(default=None, ge=0.0, le=1.0)


class PolicyFile(_Strict):
    """One ``policies/*.yaml`` file; all files of the directory are merged."""

    version: Literal[1] = 1
    endpoints: list[Endpoint] = Field(default_factory=list)
    principals: list[Principal] = Field(default_factory=list)
    approval: ApprovalRules | None = None
