"""Reading ``policies/*.yaml`` into one :class:`Policy`, and the checks other modules ask of it.

Every file in the directory is read (sorted by name) and merged; each endpoint and principal
remembers its file, so a refusal can name the exact file an administrator must edit. A missing
directory is an empty policy: nothing external is approved.

Errors are one line, ``FILE:LINE: FIELD: problem — what to do``: the YAML is composed into nodes
first, so a schema error points at the line of the field (or of the mapping it is missing from).
:meth:`Policy.problems` adds the checks that span files (the daemon's generator is an approved
generator, its actor may operate, two approvers exist when two are required, …). The policy set has
a digest (:attr:`Policy.digest`) so a change can be audited (appliance.policy.audit).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from appliance.config import Settings
from appliance.errors import IntegrityError, MemoError
from appliance.policy.schema import (
    PERMISSIONS,
    Access,
    ApprovalRules,
    DataKind,
    Endpoint,
    PolicyFile,
    Pool,
    Principal,
    Purpose,
    Retention,
    Schedules,
    normalise_url,
)

EXECUTIVES_FILE = "executives.yaml"
APPROVERS_FILE = "approvers.yaml"
ACCESS_FILE = "access.yaml"
SCHEDULES_FILE = "schedules.yaml"
RETENTION_FILE = "retention.yaml"
SECTIONS = ("access", "approval", "schedules", "retention")  # defined once across all files


@dataclass(frozen=True)
class Policy:
    directory: Path
    endpoints: tuple[Endpoint, ...] = ()
    principals: tuple[Principal, ...] = ()
    files: tuple[Path, ...] = ()
    origin: dict[str, Path] = field(default_factory=dict)  # "endpoint:<name>" / "principal:<name>" / section -> file
    approval: ApprovalRules | None = None
    access: Access | None = None
    schedules: Schedules | None = None
    retention_rules: Retention | None = None
    file_digests: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256 of its bytes
    nodes: dict[Path, Any] = field(default_factory=dict, repr=False, compare=False)  # composed YAML, for line numbers
    pinned: bool = False  # the set a vault holds (pinned by an administrator), not a folder read as it is now
    pools: tuple[Pool, ...] = ()

    # -------------------------------------------------------------- identity
    @property
    def digest(self) -> str:
        """SHA-256 over the names and contents of every policy file: equal digests, equal rules."""
        h = hashlib.sha256(b"memo-policy-v1")
        for name, d in sorted(self.file_digests.items()):
            h.update(f"|{name}|{d}".encode())
        return h.hexdigest()

    def line_of(self, path: Path, loc: tuple[Any, ...]) -> int:
        node = self.nodes.get(path)
        return _locate(node, loc) if node is not None else 1

    def where(self, section: str, loc: tuple[Any, ...] = ()) -> str:
        """``FILE:LINE`` of a field of a section (``schedules``, ``approval``, …)."""
        path = self.origin.get(section, self.directory / _DEFAULT_FILE.get(section, EXECUTIVES_FILE))
        return f"{path}:{self.line_of(path, (section, *loc))}"

    # -------------------------------------------------------------- roles
    @property
    def enforced(self) -> bool:
        """Roles are checked (``access: {enforce: true}``); otherwise open mode."""
        return bool(self.access and self.access.enforce)

    def may(self, principal: str, action: str) -> bool:
        if action not in {a for acts in PERMISSIONS.values() for a in acts}:
            raise ValueError(f"unknown action {action!r}")
        if not self.enforced:
            return True
        return any(action in PERMISSIONS[r] for r in self.roles(principal))

    def require(self, principal: str, action: str) -> None:
        """Refuse (one line, naming the file to edit) unless ``principal`` may do ``action``."""
        if self.may(principal, action):
            return
        grant = sorted(r for r, acts in PERMISSIONS.items() if action in acts)
        path = self.origin.get(f"principal:{principal}") or self.origin.get("access", self.directory / ACCESS_FILE)
        have = ", ".join(sorted(self.roles(principal))) or "no principal entry"
        raise MemoError(f"{principal!r} may not {action} ({have}); an administrator must give them one of the roles "
                        f"{', '.join(grant)} in {path}")

    @property
    def retention(self) -> Retention:
        return self.retention_rules or Retention()

    # -------------------------------------------------------------- lookups
    def endpoint(self, name: str) -> Endpoint:
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        raise MemoError(f"no endpoint named {name!r} in {self.directory}; add it to {self.edit_file()}")

    def file_of(self, ep: Endpoint | Pool) -> Path:
        kind = "pool" if isinstance(ep, Pool) else "endpoint"
        return self.origin.get(f"{kind}:{ep.name}", self.edit_file())

    def pool(self, name: str) -> Pool | None:
        """The generator pool called ``name``, or None (then ``name`` may be a single endpoint)."""
        return next((p for p in self.pools if p.name == name), None)

    def pool_problems(self, pool: Pool) -> list[str]:
        """What makes ``pool`` unusable, one line each naming the file to edit; empty when sound."""
        out: list[str] = []
        where = self.file_of(pool)
        models: dict[str, list[str]] = {}
        for name in pool.endpoints:
            ep = next((e for e in self.endpoints if e.name == name), None)
            if ep is None:
                out.append(f"{where}: pool {pool.name!r}: no endpoint named {name!r} — define it under endpoints: or "
                           "remove it from the pool")
            elif not ep.external:
                out.append(f"{where}: pool {pool.name!r}: endpoint {name!r} is local — a pool spreads work over "
                           "OpenAI-compatible servers (kind: openai); the local engine batches on its own")
            elif "generator" not in ep.purposes or "document_text" not in ep.data_allowed_to_leave:
                out.append(f"{where}: pool {pool.name!r}: endpoint {name!r} is not an approved generator that may receive "
                           f"document_text — add generator to its purposes and document_text to data_allowed_to_leave in "
                           f"{self.file_of(ep)}, or remove it from the pool")
            else:
                models.setdefault(ep.model, []).append(name)
        if len(models) > 1:
            got = "; ".join(f"{m}: {', '.join(n)}" for m, n in sorted(models.items()))
            out.append(f"{where}: pool {pool.name!r}: members serve different models ({got}) — a pool's members must "
                       "serve the same model, so its reflections are that model's whichever member wrote them")
        if any(e.name == pool.name for e in self.endpoints):
            out.append(f"{where}: pool {pool.name!r}: an endpoint has the same name — rename one of them")
        return out

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



_DEFAULT_FILE = {"access": ACCESS_FILE, "approval": APPROVERS_FILE, "schedules": SCHEDULES_FILE, "retention": RETENTION_FILE}


def _locate(node: Any, loc: tuple[Any, ...]) -> int:
    """1-based line of the deepest node of ``loc`` present in the composed YAML."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                if isinstance(part, str) and part[:1].isupper():
                    continue  # a model name pydantic adds inside a union: not in the file
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _duplicate_key(node: Any, trail: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], int] | None:
    """The first mapping key given twice (PyYAML would silently keep the last one)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            key = getattr(k, "value", None)
            if key in seen:
                return (*trail, key), k.start_mark.line + 1
            seen.add(key)
            found = _duplicate_key(v, (*trail, key))
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            found = _duplicate_key(v, (*trail, i))
            if found:
                return found
    return None


def _model_at(loc: tuple[Any, ...]) -> Any:
    """The pydantic model that holds the last field of ``loc`` (for listing the allowed keys)."""
    import types
    import typing

    from pydantic import BaseModel

    model: Any = PolicyFile
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        while True:
            origin = typing.get_origin(ann)
            if origin in (list, tuple):
                ann = typing.get_args(ann)[0]
            elif origin in (typing.Union, types.UnionType):
                ann = next((a for a in typing.get_args(ann) if a is not type(None)), None)
            else:
                break
        model = ann
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _hint(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "missing":
        return "add it"
    if kind == "extra_forbidden":
        model = _model_at(tuple(err["loc"]))
        allowed = f" (allowed here: {', '.join(model.model_fields)})" if model is not None else ""
        return f"remove it or correct its spelling{allowed}"
    if kind in ("literal_error", "enum"):
        return "use one of the values listed"
    if kind in ("list_type", "dict_type", "model_type", "model_attributes_type"):
        return "check the indentation and the YAML form of this field"
    return "correct the value"


def _message(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "required field is missing"
    return msg.rstrip(".")


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc if not (isinstance(x, str) and x[:1].isupper())) or "(top level)"


def read_files(directory: Path) -> list[tuple[Path, bytes]]:
    """Each policy file of a folder with its bytes (what :func:`load_files` and pinning take)."""
    out = []
    for path in policy_files(directory):
        try:
            out.append((path, path.read_bytes()))
        except OSError as exc:
            raise MemoError(f"{path}: cannot be read ({exc.strerror}) — check its permissions") from None
    return out


def _read(path: Path, raw: bytes) -> tuple[PolicyFile, Any, str]:
    """The validated file, its composed YAML (for line numbers) and the SHA-256 of its bytes."""
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MemoError(f"{path}:1: not UTF-8 text — save the file as UTF-8") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = (getattr(exc, "problem", None) or "syntax error").strip()
        raise MemoError(f"{path}:{line}: not valid YAML ({problem}) — fix the syntax (indent with spaces, close brackets and quotes)") from None
    if doc is None:
        return PolicyFile(), node, digest
    if not isinstance(doc, dict):
        raise MemoError(f"{path}:1: (top level): a policy file is a mapping of sections, not a {type(doc).__name__} — "
                        "start with 'version: 1' and section names such as endpoints:, principals:, schedules:")
    dup = _duplicate_key(node)
    if dup:
        loc, line = dup
        raise MemoError(f"{path}:{line}: {_field(loc)}: given twice — keep one (YAML would silently use the last)")
    try:
        return PolicyFile.model_validate(doc), node, digest
    except ValidationError as exc:
        # a misspelt key explains the "missing" error of the key it was meant to be: report it first
        err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        loc = tuple(err["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise MemoError(f"{path}:{_locate(node, loc)}: {_field(loc)}: {_message(err)} — {_hint(err)}{more}") from None


def policy_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file() and not p.name.startswith("."))


def load_policy(directory: Path | Settings) -> Policy:
    """The policy in force for ``Settings`` (the set its vault pinned, else the installed folder),
    or the files of a folder as they are now."""
    if isinstance(directory, Settings):
        pinned = directory.pinned_policies
        if pinned is not None:
            if pinned.problem:
                raise IntegrityError(f"no policy is in force: {pinned.problem}")
            return load_files(pinned.origin, [(pinned.origin / name, raw) for name, raw in pinned.files], pinned=True)
        directory = directory.policies_dir
    if not directory.is_dir():
        return Policy(directory=directory)
    return load_files(directory, read_files(directory))


def load_files(directory: Path, contents: list[tuple[Path, bytes]], pinned: bool = False) -> Policy:
    """Merge policy files given as (path, bytes); duplicate names across files are errors.

    The same files parse to the same (frozen) policy, so a parse is kept for the next caller: every
    request of the HTTP API asks the policy in force, and parsing YAML is most of its cost."""
    return _load_files(directory, tuple(contents), pinned)


@lru_cache(maxsize=16)
def _load_files(directory: Path, contents: tuple[tuple[Path, bytes], ...], pinned: bool) -> Policy:
    files = [path for path, _ in contents]
    endpoints: list[Endpoint] = []
    pools: list[Pool] = []
    principals: list[Principal] = []
    origin: dict[str, Path] = {}
    sections: dict[str, Any] = {}
    digests: dict[str, str] = {}
    nodes: dict[Path, Any] = {}
    for path, raw in contents:
        doc, node, digest = _read(path, raw)
        digests[path.name] = digest
        if node is not None:
            nodes[path] = node
        for name in SECTIONS:
            value = getattr(doc, name)
            if value is None:
                continue
            if name in sections:
                first = origin[name]
                where = f"{first}:{_locate(nodes[first], (name,))}" if first in nodes else str(first)
                label = "approval rules are" if name == "approval" else f"{name} is"
                raise MemoError(f"{path}: {label} already defined in {where} — keep one "
                                f"(this one is at line {_locate(node, (name,))})")
            sections[name], origin[name] = value, path
        for kind, items, sink in (("endpoint", doc.endpoints, endpoints), ("pool", doc.pools, pools),
                                  ("principal", doc.principals, principals)):
            for i, item in enumerate(items):
                key = f"{kind}:{item.name}"
                if key in origin:
                    line = _locate(node, (f"{kind}s", i, "name"))
                    raise MemoError(f"{path}:{line}: {kind}s.{i}.name: {kind} {item.name!r} is already defined in "
                                    f"{origin[key]} — keep one")
                origin[key] = path
                sink.append(item)  # type: ignore[arg-type]
    return Policy(directory, tuple(endpoints), tuple(principals), tuple(files), origin, sections.get("approval"),
                  sections.get("access"), sections.get("schedules"), sections.get("retention"), digests, nodes, pinned,
                  tuple(pools))


def problems(policy: Policy) -> list[str]:
    """Checks that span files, one line each (``FILE:LINE: FIELD: problem — what to do``); empty when sound."""
    out: list[str] = []
    names = {ep.name: ep for ep in policy.endpoints}
    approvers = policy.approvers()
    rules = policy.approval_rules
    if policy.approval is not None and len(approvers) and rules.approvals_required > len([k for k in approvers.values() if k]):
        out.append(f"{policy.where('approval', ('approvals_required',))}: approval.approvals_required: {rules.approvals_required} "
                   f"approvals are required but only {len([k for k in approvers.values() if k])} approver(s) have a public_key — "
                   f"add approvers with keys in {policy.approvers_file()} or lower the requirement")
    if policy.enforced and not any("administer" in PERMISSIONS[r] for p in policy.principals for r in p.roles):
        out.append(f"{policy.where('access', ('enforce',))}: access.enforce: roles are enforced but no principal has the "
                   f"admin role — name an administrator under principals: before enforcing")
    for pool in policy.pools:
        out += policy.pool_problems(pool)
    sch = policy.schedules
    if sch is not None:
        ep = names.get(sch.generator)
        if ep is None and policy.pool(sch.generator) is not None:
            pass  # a pool: its own checks are above
        elif ep is None:
            choices = sorted(names) + sorted(p.name for p in policy.pools)
            out.append(f"{policy.where('schedules', ('generator',))}: schedules.generator: no endpoint named "
                       f"{sch.generator!r} (nor a pool) — use one of {', '.join(choices) or '(none defined)'} or add it to {policy.edit_file()}")
        elif "generator" not in ep.purposes:
            out.append(f"{policy.where('schedules', ('generator',))}: schedules.generator: endpoint {sch.generator!r} is not "
                       f"approved as a generator — add generator to its purposes in {policy.file_of(ep)}")
        if policy.enforced:
            for action in ("operate", "ingest"):
                if not policy.may(sch.actor, action):
                    out.append(f"{policy.where('schedules', ('actor',))}: schedules.actor: {sch.actor!r} may not {action} — "
                               f"give it the operator role under principals:")
                    break
        tasks = {j.task for j in sch.jobs if j.enabled}
        if "ingest" in tasks and not sch.inbox:
            out.append(f"{policy.where('schedules', ('inbox',))}: schedules.inbox: an ingest job needs an inbox — add inbox:")
    return out
