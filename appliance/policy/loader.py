"""Reading ``policies/*.yaml`` into one :class:`Policy`, and the checks other modules ask of it.

Every file in the directory is read (sorted by name) and merged; each endpoint and principal
remembers its file, so a refusal can name the exact file an administrator must edit. A missing
directory is an empty policy: nothing external is approved.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from appliance.config import Settings
from appliance.errors import MemoError
from appliance.policy.schema import ApprovalRules, DataKind, Endpoint, PolicyFile, Principal, Purpose, normalise_url

EXECUTIVES_FILE = "executives.yaml"
APPROVERS_FILE = "approvers.yaml"


@dataclass(frozen=True)
class Policy:
    directory: Path
    endpoints: tuple[Endpoint, ...] = ()
    principals: tuple[Principal, ...] = ()
    files: tuple[Path, ...] = ()
    origin: dict[str, Path] = field(default_factory=dict)  # "endpoint:<name>" / "principal:<name>" -> file
    approval: ApprovalRules | None = None

    # -------------------------------------------------------------- lookups
    def endpoint(self, name: str) -> Endpoint:
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        raise MemoError(f"no endpoint named {name!r} in {self.directory}; add it to {self.edit_file()}")

    def file_of(self, ep: Endpoint) -> Path:
        return self.origin.get(f"endpoint:{ep.name}", self.edit_file())

    def edit_file(self) -> Path:
        return self.directory / EXECUTIVES_FILE

    def roles(self, principal: str) -> set[str]:
        return {r for p in self.principals if p.name == principal for r in p.roles}

    # -------------------------------------------------------------- approvals
    @property
    def approval_rules(self) -> ApprovalRules:
        return self.approval or ApprovalRules()

    def approvers(self) -> dict[str, str | None]:
        """Principal name -> Ed25519 public key (None: not set), for every principal with the approver role."""
        return {p.name: p.public_key for p in self.principals if "approver" in p.roles}

    def approvers_file(self) -> Path:
        return self.origin.get("approval", self.directory / APPROVERS_FILE)

    # -------------------------------------------------------------- the gate for external models
    def approve_external(
        self, url: str, model: str, purpose: Purpose, sends: Collection[DataKind] = ()
    ) -> Endpoint:
        """The approved endpoint for this URL, model and purpose, or a one-line refusal.

        Pure: reads no network, so callers can (and must) call it before opening any socket.
        """
        wanted = normalise_url(url)
        same_url = [ep for ep in self.endpoints if ep.external and ep.url and normalise_url(ep.url) == wanted]
        if not same_url:
            raise MemoError(
                f"external endpoint {url} is not approved in policy; an administrator must add it "
                f"(model {model!r}, purposes [{purpose}]) to {self.edit_file()}"
            )
        matches = [ep for ep in same_url if ep.model == model]
        if not matches:
            approved = ", ".join(sorted({ep.model for ep in same_url}))
            raise MemoError(
                f"external endpoint {url} is approved for model(s) {approved}, not {model!r}; "
                f"edit {self.file_of(same_url[0])} to approve it"
            )
        for ep in matches:
            if purpose in ep.purposes:
                break
        else:
            ep = matches[0]
            raise MemoError(
                f"external endpoint {url} (model {model!r}) is not approved as {purpose} "
                f"(only {', '.join(ep.purposes)}); edit {self.file_of(ep)} to add it to purposes"
            )
        leaving = sorted(set(sends) - set(ep.data_allowed_to_leave))
        if leaving:
            raise MemoError(
                f"external endpoint {url} (model {model!r}) may not receive {', '.join(leaving)}; "
                f"edit data_allowed_to_leave in {self.file_of(ep)} if that is intended"
            )
        return ep


def _read(path: Path) -> PolicyFile:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise MemoError(f"{path}{where}: not valid YAML; fix the file") from None
    except OSError as exc:
        raise MemoError(f"{path}: cannot be read ({exc.strerror})") from None
    if doc is None:
        return PolicyFile()
    try:
        return PolicyFile.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise MemoError(f"{path}: {loc}: {err['msg']}{more}") from None


def load_policy(directory: Path | Settings) -> Policy:
    """Read and merge every ``*.yaml``/``*.yml`` file; duplicate names across files are errors."""
    if isinstance(directory, Settings):
        directory = directory.policies_dir
    if not directory.is_dir():
        return Policy(directory=directory)
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    endpoints: list[Endpoint] = []
    principals: list[Principal] = []
    origin: dict[str, Path] = {}
    approval: ApprovalRules | None = None
    for path in files:
        doc = _read(path)
        if doc.approval is not None:
            if approval is not None:
                raise MemoError(f"{path}: approval rules are already defined in {origin['approval']}; keep one")
            approval, origin["approval"] = doc.approval, path
        for kind, items, sink in (("endpoint", doc.endpoints, endpoints), ("principal", doc.principals, principals)):
            for item in items:
                key = f"{kind}:{item.name}"
                if key in origin:
                    raise MemoError(f"{path}: {kind} {item.name!r} is already defined in {origin[key]}; keep one")
                origin[key] = path
                sink.append(item)  # type: ignore[arg-type]
    return Policy(directory, tuple(endpoints), tuple(principals), tuple(files), origin, approval)
