"""The shape of policy files (``policies/*.yaml``), validated strictly.

Unknown keys are errors, not ignored: a misspelt ``purposes`` must not silently approve nothing
(or, worse, something). Sections: ``endpoints`` (executives and generators), ``pools`` (several
generator endpoints used as one), ``principals`` (who,
with which roles), ``access`` (whether roles are enforced), ``approval`` (merge gates),
``schedules`` (the daemon's jobs), ``retention`` (what old data is dropped, and when).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from appliance.memory.merge import MERGE_METHODS

Purpose = Literal["generator", "executive"]
"""What a model is used for: writing reflections from documents, or answering questions."""

DataKind = Literal["questions", "sub_questions", "memory_answers", "sources", "document_text", "reflections"]
"""Kinds of data that may be sent to an external endpoint; none leaves unless listed."""

Role = Literal["admin", "approver", "operator", "auditor", "reader"]

Action = Literal["ingest", "ask", "approve", "operate", "administer", "audit"]
"""What a principal may be allowed to do; :data:`PERMISSIONS` says which role grants what."""

PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"administer", "operate", "ingest", "ask", "audit"}),
    "operator": frozenset({"operate", "ingest", "ask"}),
    "approver": frozenset({"approve", "ask"}),  # approving is never implied by another role
    "auditor": frozenset({"audit"}),
    "reader": frozenset({"ask"}),
}

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*$")


ENDPOINT_KINDS: dict[str, bool] = {"llamacpp": False, "openai": True}
"""Every kind of model endpoint, and whether it is external (data leaves the machine): the schema's
``kind`` and :attr:`Endpoint.external` derive from it."""

EndpointKind = Literal[tuple(ENDPOINT_KINDS)]  # type: ignore[valid-type]

UPDATE_METHODS: tuple[str, ...] = ("sequential", *MERGE_METHODS, "retrain")
"""How an update becomes a candidate: train on top, each merge method of
:data:`appliance.memory.merge.MERGE_METHODS`, or a full retrain. ``memo update --method`` and
``schedules.update_method`` take these."""

UpdateMethod = Literal[UPDATE_METHODS]  # type: ignore[valid-type]


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
    kind: EndpointKind
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
        if self.external and self.url is None:
            raise ValueError(f"an {self.kind} endpoint needs a url")
        if not self.external and (self.url or self.data_allowed_to_leave or self.api_key_env):
            raise ValueError(f"a {self.kind} endpoint runs locally: no url, api_key_env or data_allowed_to_leave")
        return self

    @property
    def external(self) -> bool:
        return ENDPOINT_KINDS[self.kind]


class Pool(_Strict):
    """Several OpenAI-compatible generator endpoints used as one generator (``memo reflect
    --endpoint NAME``): requests are spread over them with ``in_flight`` requests outstanding at
    each, a failed or timed-out request is retried on another member (at most ``retries`` more
    tries), and a failing member rests ``backoff_s`` (doubling per failure, at most
    ``max_backoff_s``) before it is sent work again. Every member must be an approved generator
    for the same model, allowed to receive ``document_text``: the pool's reflections are the
    model's, whichever member wrote them, so members can be added or removed without redoing any."""

    name: str = Field(pattern=_NAME)
    purpose: Literal["generator"] = "generator"
    endpoints: list[str] = Field(min_length=1, max_length=256)
    in_flight: int = Field(default=4, ge=1, le=256)
    retries: int = Field(default=3, ge=0, le=100)
    backoff_s: float = Field(default=1.0, gt=0, le=600)
    max_backoff_s: float = Field(default=60.0, gt=0, le=3600)
    description: str = ""

    @field_validator("endpoints")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("an endpoint is listed twice; list each member once")
        return v


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


class Access(_Strict):
    """``enforce: true``: every action named in :data:`PERMISSIONS` needs a principal with a role
    that grants it. ``false`` (open mode, a fresh box): roles are recorded but not checked."""

    enforce: bool = False


_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
Task = Literal["ingest", "reflect", "update", "retrain", "retention"]


def parse_duration(value: object) -> int:
    """Seconds from ``90``, ``"30s"``, ``"5m"``, ``"2h"`` or ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 30s, 5m, 2h, 1d")
    if isinstance(value, int):
        seconds = value
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError("a duration is a number of seconds or a string like 30s, 5m, 2h, 1d")
        seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds < 1:
        raise ValueError("a duration must be at least 1 second")
    return seconds


class Job(_Strict):
    """One scheduled job: a task run ``every`` so often or on a ``cron`` line (5 fields, local time).

    ``coalesce``: runs missed while the appliance was off are run once, not once per missed slot;
    ``misfire_grace``: a run later than this is skipped until its next slot (null: run however late).
    """

    name: str = Field(pattern=_NAME)
    task: Task
    every: int | None = None
    cron: str | None = None
    enabled: bool = True
    coalesce: bool = True
    misfire_grace: int | None = 3600
    jitter: int = Field(default=0, ge=0, le=3600)

    @field_validator("every", "misfire_grace", mode="before")
    @classmethod
    def _duration(cls, v: object) -> int | None:
        return None if v is None else parse_duration(v)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if len(v.split()) != 5:
            raise ValueError("cron needs 5 fields: minute hour day month weekday (e.g. '0 2 * * *')")
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(v, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a valid cron line ({exc})") from None
        return v

    @model_validator(mode="after")
    def _one_trigger(self) -> "Job":
        if (self.every is None) == (self.cron is None):
            raise ValueError("give exactly one of every (e.g. 5m) or cron (e.g. '0 2 * * *')")
        return self


class Training(_Strict):
    """What scheduled trainings use; unset fields keep the appliance defaults (``memo train``'s).

    ``processes``: training processes on this machine (torch.distributed: one per GPU with NCCL,
    CPU processes with gloo); ``auto`` (the default when unset): one per visible GPU, one without."""

    base_model: str | None = Field(default=None, min_length=1)  # first memory only; later ones keep their base
    method: Literal["lora", "full"] | None = None
    epochs: int | None = Field(default=None, ge=1, le=1000)
    batch_size: int | None = Field(default=None, ge=1, le=1024)
    max_length: int | None = Field(default=None, ge=16, le=8192)
    rank: int | None = Field(default=None, ge=1, le=1024)
    learning_rate: float | None = Field(default=None, gt=0, le=1)
    checkpoint_every: int | None = Field(default=None, ge=1)
    processes: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] | None = None


class Schedules(_Strict):
    """The daemon (``memo daemon``): where documents arrive, who it acts as, and its jobs."""

    inbox: str = Field(min_length=1)  # absolute (or ~/...), outside MEMO_HOME; files are ingested from it
    after_ingest: Literal["delete", "move"] = "delete"  # move: into <inbox>/ingested/
    settle: int = 2  # seconds a file must be unchanged before it is ingested (still being copied)
    actor: str = Field(default="memo-daemon", min_length=1, max_length=128)
    generator: str = Field(default="local", pattern=_NAME)
    update_method: UpdateMethod = "ties"
    training: Training = Field(default_factory=Training)
    jobs: list[Job] = Field(default_factory=list)

    @field_validator("inbox")
    @classmethod
    def _inbox(cls, v: str) -> str:
        if not (v.startswith("/") or v.startswith("~")):
            raise ValueError("inbox must be an absolute path (outside MEMO_HOME), e.g. /var/lib/memo-inbox")
        return v

    @field_validator("settle", mode="before")
    @classmethod
    def _settle(cls, v: object) -> int:
        return 0 if v in (0, "0", "0s") else parse_duration(v)

    @field_validator("jobs")
    @classmethod
    def _unique(cls, jobs: list[Job]) -> list[Job]:
        seen: set[str] = set()
        for job in jobs:
            if job.name in seen:
                raise ValueError(f"job name {job.name!r} is used twice; job names must be unique")
            seen.add(job.name)
        return jobs


class MemoryRetention(_Strict):
    """Weights of old memory versions. Never deleted: the serving version, candidates waiting for a
    decision, the ``keep_retired`` most recent versions that served before (rollback targets), and
    any version those are built on. Catalog rows (lineage, metrics, approvals) are always kept."""

    keep_retired: int = Field(default=3, ge=0, le=1000)
    delete_after: int = 30 * 86400  # seconds since the version was made

    @field_validator("delete_after", mode="before")
    @classmethod
    def _d(cls, v: object) -> int:
        return parse_duration(v)


class ReflectionRetention(_Strict):
    """Reflections of document content that is no longer current (a newer version or a forgotten
    document) are deleted this long after they were written; current ones are kept."""

    stale_after: int = 30 * 86400

    @field_validator("stale_after", mode="before")
    @classmethod
    def _d(cls, v: object) -> int:
        return parse_duration(v)


class AuditRetention(_Strict):
    """The audit log is append-only and never truncated; every ``archive_every`` a copy of the
    signed, encrypted chain is written to ``archive_dir`` (relative: under MEMO_HOME) for off-box
    write-once storage. It verifies with the public key alone."""

    keep: Literal["forever"] = "forever"
    archive_every: int | None = 7 * 86400
    archive_dir: str = Field(default="archive/audit", min_length=1)

    @field_validator("archive_every", mode="before")
    @classmethod
    def _d(cls, v: object) -> int | None:
        return None if v is None else parse_duration(v)


class Retention(_Strict):
    memory_versions: MemoryRetention = Field(default_factory=MemoryRetention)
    reflections: ReflectionRetention = Field(default_factory=ReflectionRetention)
    audit: AuditRetention = Field(default_factory=AuditRetention)


class PolicyFile(_Strict):
    """One ``policies/*.yaml`` file; all files of the directory are merged."""

    version: Literal[1] = 1
    endpoints: list[Endpoint] = Field(default_factory=list)
    pools: list[Pool] = Field(default_factory=list)
    principals: list[Principal] = Field(default_factory=list)
    access: Access | None = None
    approval: ApprovalRules | None = None
    schedules: Schedules | None = None
    retention: Retention | None = None
