"""Role × action × door: every door (the CLI, the HTTP API, the console, the daemon) allows and
refuses exactly what the pinned policy's roles say, and every refusal is audited.

One vault, one enforced policy pinned in it, one person per role, each unlocking with their own
slot: ada (admin), olga (operator), abe (approver), aud (auditor), rudy (reader), and the daemon's
service account memo-daemon (operator, schedules.actor). Each cell does the action for real through
its door; "allowed" means the principal got past the access check (the action then did its work,
or stopped at the next real condition, e.g. "no memory is promoted yet"); "refused" means the door
answered with the role refusal and the log holds its entry. The table is printed (pytest -s).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from appliance.api.server import ApiServer
from appliance.app import tokens
from appliance.app.access import USE_CASES
from appliance.app.jobs import Runner, daemon_may_start
from appliance.app.session import Session, create_vault
from appliance.config import Settings
from appliance.errors import MemoError
from appliance.executive.agent import Executive, ExecutiveParams
from appliance.llm.llamacpp import LlamaCppModel
from appliance.llm.registry import ModelRegistry
from appliance.policy import PERMISSIONS
from appliance.vault.keys import Secret, generate_key_file
from appliance.vault.store import Vault
from tests.conftest import FAST_KDF, session_as
from tests.llm.conftest import TEST_OPTIONS

ROLES = {"admin": "ada", "operator": "olga", "approver": "abe", "auditor": "aud", "reader": "rudy"}
PARAMS = ExecutiveParams(max_sub_questions=1, max_hops=0, memory_max_tokens=12, plan_max_tokens=32, answer_max_tokens=12)

# the specification: which roles each door lets do each action (written out, then held against the policy)
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("CLI", "ingest a file"): {"admin", "operator"},
    ("CLI", "list documents"): {"admin", "operator", "auditor"},
    ("CLI", "read a document's text"): {"admin", "operator"},
    ("CLI", "forget a document"): {"admin"},
    ("CLI", "ask the memory"): {"admin", "operator", "approver", "reader"},
    ("CLI", "list approvals"): {"admin", "operator", "approver", "auditor"},
    ("CLI", "roll back the memory"): {"admin", "approver"},
    ("CLI", "read the audit log"): {"admin", "auditor"},
    ("CLI", "export the audit log"): {"admin", "auditor"},
    ("CLI", "add a person"): {"admin"},
    ("CLI", "create an API token"): {"admin"},
    ("CLI", "pin a policy"): {"admin"},
    ("CLI", "run a job"): {"admin", "operator"},
    ("CLI", "vault gc"): {"admin"},
    ("CLI", "who am I"): set(ROLES),
    ("HTTP API", "GET /v1/models"): {"admin", "operator", "approver", "reader"},
    ("HTTP API", "POST /v1/ask"): {"admin", "operator", "approver", "reader"},
    ("console", "ask (Ask tab)"): {"admin", "operator", "approver", "reader"},
    ("console", "export the audit log (Audit tab)"): {"admin", "auditor"},
    ("console", "run a job (Jobs tab)"): {"admin", "operator"},
    ("console", "pause a job (Jobs tab)"): {"admin", "operator"},
    ("daemon", "run a job (the daemon's Runner, manual)"): {"admin", "operator"},
    ("daemon", "start `memo daemon` / a scheduled run"): set(),  # only the policy's daemon account (below)
}
USE_CASE_OF = {("CLI", "ingest a file"): "ingest", ("CLI", "list documents"): "docs.list", ("CLI", "read a document's text"): "docs.text",
               ("CLI", "forget a document"): "docs.forget", ("CLI", "ask the memory"): "memory.ask",
               ("CLI", "list approvals"): "approvals.list", ("CLI", "roll back the memory"): "rollback",
               ("CLI", "read the audit log"): "audit.show", ("CLI", "export the audit log"): "audit.export",
               ("CLI", "add a person"): "people.add", ("CLI", "create an API token"): "tokens.add",
               ("CLI", "pin a policy"): "policy.pin", ("CLI", "run a job"): "jobs.run", ("CLI", "vault gc"): "vault.gc",
               ("CLI", "who am I"): "whoami", ("HTTP API", "GET /v1/models"): "ask", ("HTTP API", "POST /v1/ask"): "ask",
               ("console", "ask (Ask tab)"): "ask", ("console", "export the audit log (Audit tab)"): "audit.export",
               ("console", "run a job (Jobs tab)"): "jobs.run", ("console", "pause a job (Jobs tab)"): "jobs.pause",
               ("daemon", "run a job (the daemon's Runner, manual)"): "jobs.run"}


def _policy_text(inbox: Path) -> dict[str, str]:
    people = "".join(f"  - {{name: {n}, roles: [{r}]}}\n" for r, n in ROLES.items())
    return {
        "access.yaml": "version: 1\naccess: {enforce: true}\nprincipals:\n" + people + "  - {name: memo-daemon, roles: [operator]}\n",
        "executives.yaml": "endpoints:\n  - {name: local, kind: llamacpp, model: smollm2-135m-instruct-q4_1, purposes: [generator, executive]}\n",
        "schedules.yaml": f"schedules:\n  inbox: {inbox}\n  settle: 0\n  actor: memo-daemon\n  generator: local\n"
                          "  jobs:\n    - {name: ingest, task: ingest, every: 1h}\n",
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("matrix")
    inbox, policies = root / "inbox", root / "policies"
    inbox.mkdir()
    policies.mkdir()
    for name, text in _policy_text(inbox).items():
        (policies / name).write_text(text)
    settings = Settings(home=root / "home", kdf=FAST_KDF)
    mp = pytest.MonkeyPatch()
    mp.setenv("MEMO_POLICIES", str(policies))  # the installed folder: create_vault pins it
    admin = create_vault(settings, Secret(passphrase="ada's passphrase"), "ada")
    mp.delenv("MEMO_POLICIES")  # from here on only the pinned set counts
    sessions = {role: session_as(admin.vault, name) for role, name in ROLES.items()}
    daemon_key = root / "memo-daemon.key"
    generate_key_file(daemon_key)
    admin.vault.add_person("memo-daemon", Secret(key_file=daemon_key))
    daemon = Session.of(Vault.open(settings, Secret(key_file=daemon_key)), "daemon")
    doc = root / "note.md"
    doc.write_text("# Ward 7\n\nThe night nurse on ward 7 is Jo Brandt.\n")
    from appliance.app.corpus import ingest

    ingest(admin, [doc])
    model = LlamaCppModel.load(ModelRegistry(admin.vault), options=TEST_OPTIONS)
    yield {"root": root, "settings": settings, "admin": admin, "sessions": sessions, "daemon": daemon, "doc": doc,
           "model": model, "policies": policies, "results": {}}
    model.close()
    mp.undo()


def _refusals(vault: Vault) -> int:
    return sum(1 for e in vault.audit.entries() if e.action in ("access.refused", "job.refused", "daemon.refused"))


def _record(world: dict[str, Any], cell: tuple[str, str], role: str, allowed: bool, refusals_before: int) -> None:
    vault = world["admin"].vault
    if not allowed:  # a refusal is audited, whichever door it came by
        assert _refusals(vault) > refusals_before, f"{cell} refused for {role} but not audited"
    world["results"].setdefault(cell, {})[role] = allowed


# ---------------------------------------------------------------------- the CLI
CLI_ACTIONS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "ingest a file": lambda w: ["ingest", str(w["doc"])],
    "list documents": lambda w: ["docs", "list", "--json"],
    "read a document's text": lambda w: ["docs", "show", w["doc_id"], "--text"],
    "forget a document": lambda w: ["docs", "forget", "doc-000000000000", "--yes", "--no-candidate"],
    "ask the memory": lambda w: ["memory", "ask", "Who is the night nurse on ward 7?"],
    "list approvals": lambda w: ["approvals", "list"],
    "roll back the memory": lambda w: ["rollback", "mem-0099"],
    "read the audit log": lambda w: ["audit", "show", "--limit", "1"],
    "export the audit log": lambda w: ["audit", "export", "--out", str(w["root"] / "export.jsonl")],
    "add a person": lambda w: ["people", "add", f"new-{w['role']}"],
    "create an API token": lambda w: ["api", "token", "add", "rudy"],
    "pin a policy": lambda w: ["policy", "pin", str(w["policies"])],
    "run a job": lambda w: ["jobs", "run", "ingest"],
    "vault gc": lambda w: ["vault", "gc"],
    "who am I": lambda w: ["whoami"],
}


@pytest.mark.parametrize("role", list(ROLES))
def test_cli(world: dict[str, Any], role: str, tmp_path: Path) -> None:
    from appliance.app.access import AccessRefused
    from appliance.cli import cli

    name = ROLES[role]
    vault = world["admin"].vault
    world["doc_id"] = _doc_ids(vault)[0]
    env = {"MEMO_HOME": str(world["settings"].home), "MEMO_USER": name, "MEMO_PASSPHRASE": f"{name}'s passphrase",
           "MEMO_NEW_PASSPHRASE": "a new person's passphrase", "MEMO_KEY_FILE": "", "MEMO_ACTOR": "mallory",
           "MEMO_POLICIES": str(tmp_path / "a folder of the caller's")}  # neither changes anything
    for action, args in CLI_ACTIONS.items():
        before = _refusals(vault)
        result = CliRunner().invoke(cli, args({**world, "role": role}), env=env, catch_exceptions=True)
        refused = isinstance(result.exception, AccessRefused) or "may not operate" in str(result.exception)
        if result.exception is not None and not refused:
            assert isinstance(result.exception, MemoError), (action, role, result.exception)  # a real condition, past the check
        _record(world, ("CLI", action), role, not refused, before)
        if refused:
            assert name in str(result.exception) and "\n" not in str(result.exception)


def _doc_ids(vault: Vault) -> list[str]:
    from appliance.corpus.documents import list_documents

    return [d.id for d in list_documents(vault)]


# ---------------------------------------------------------------------- the HTTP API
def _call(url: str, method: str, token: str, body: dict | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"Bearer {token}",
                                                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_http_api(world: dict[str, Any]) -> None:
    admin, model = world["admin"], world["model"]
    server = ApiServer(admin, Executive(model, model, "test", PARAMS), port=0).start()
    try:
        for role, name in ROLES.items():
            token = tokens.add(admin, name).token
            for action, method, path, body in (("GET /v1/models", "GET", "/v1/models", None),
                                               ("POST /v1/ask", "POST", "/v1/ask", {"question": "Who is the night nurse?"})):
                before = _refusals(admin.vault)
                status = _call(server.url + path, method, token, body)
                assert status in (200, 403), (role, action, status)
                _record(world, ("HTTP API", action), role, status == 200, before)
    finally:
        server.stop()
    asked = [e.actor for e in admin.vault.audit.entries() if e.action == "qa.ask" and e.details.get("channel") == "api"]
    assert sorted(asked) == sorted(ROLES[r] for r in EXPECTED[("HTTP API", "POST /v1/ask")])  # each as the token's principal


# ---------------------------------------------------------------------- the console
def test_console(world: dict[str, Any], qtbot: Any, tmp_path: Path) -> None:
    from gui.app import MainWindow
    from tests.gui.conftest import wait_idle

    model = world["model"]
    for role, name in ROLES.items():
        session = world["sessions"][role]
        w = MainWindow(Session.of(session.vault, "gui"), refresh=False,
                       executive_factory=lambda _s, _e, _v, _p: Executive(model, model, "test", PARAMS),
                       pick_save_path=lambda _p, _t: tmp_path / f"{name}.jsonl")
        qtbot.addWidget(w)
        vault = world["admin"].vault

        before = _refusals(vault)
        w.ask.question.setText("Who is the night nurse on ward 7?")
        w.ask.ask()
        wait_idle(qtbot, w)
        _record(world, ("console", "ask (Ask tab)"), role, w.ask.last_trace is not None, before)
        if w.ask.last_trace is None:
            assert "may not ask questions" in w.ask.error.text()

        before = _refusals(vault)
        w.audit.shown = []
        w.audit.export()
        wait_idle(qtbot, w)
        _record(world, ("console", "export the audit log (Audit tab)"), role, (tmp_path / f"{name}.jsonl").exists(), before)

        w.jobs.rows = [{"name": "ingest"}]
        w.jobs.jobs.setRowCount(1)
        w.jobs.jobs.selectRow(0)
        w.jobs.selected_job = lambda: "ingest"  # type: ignore[method-assign]
        before = _refusals(vault)
        w.jobs.run_selected()
        wait_idle(qtbot, w)
        _record(world, ("console", "run a job (Jobs tab)"), role, w.jobs.message.text().startswith("run "), before)
        before = _refusals(vault)
        w.jobs.set_paused(True)
        wait_idle(qtbot, w)
        _record(world, ("console", "pause a job (Jobs tab)"), role, "paused" in w.jobs.message.text(), before)
        if "paused" in w.jobs.message.text():
            w.jobs.set_paused(False)
            wait_idle(qtbot, w)
        w.jobs.timer.stop()
        w.close()


# ---------------------------------------------------------------------- the daemon
def test_daemon(world: dict[str, Any]) -> None:
    vault = world["admin"].vault
    for role in ROLES:
        session = Session.of(world["sessions"][role].vault, "daemon")
        before = _refusals(vault)
        try:
            Runner(session).run("ingest", "manual")
            allowed = True
        except MemoError as exc:
            assert "may not operate" in str(exc)
            allowed = False
        _record(world, ("daemon", "run a job (the daemon's Runner, manual)"), role, allowed, before)
        before = _refusals(vault)
        with pytest.raises(MemoError, match="the daemon runs as memo-daemon|may not run the daemon"):
            daemon_may_start(session)
        with pytest.raises(MemoError):
            Runner(session).run("ingest", "scheduled")
        _record(world, ("daemon", "start `memo daemon` / a scheduled run"), role, False, before)
    daemon_may_start(world["daemon"])  # the service account: its own key file's slot, schedules.actor, operator
    assert Runner(world["daemon"]).run("ingest", "scheduled")["status"] == "idle"


# ---------------------------------------------------------------------- the table
def test_the_matrix_is_the_policy(world: dict[str, Any]) -> None:
    """Runs last: every cell observed is the one specified, the specification is what the policy's
    roles grant, and the table is printed."""
    results = world["results"]
    assert set(results) == set(EXPECTED), set(EXPECTED) ^ set(results)
    for cell, expected in EXPECTED.items():
        assert {r for r, ok in results[cell].items() if ok} == expected, (cell, results[cell])
        if cell in USE_CASE_OF:
            needs = USE_CASES[USE_CASE_OF[cell]].needs
            assert expected == {r for r in ROLES if not needs or PERMISSIONS[r] & needs}, cell
    width = max(len(f"{d}: {a}") for d, a in EXPECTED)
    lines = [f"{'door: action':<{width}} | " + " | ".join(f"{r:<8}" for r in ROLES)]
    lines.append("-" * len(lines[0]))
    for (door, action), row in results.items():
        lines.append(f"{door + ': ' + action:<{width}} | " + " | ".join(f"{'allowed' if row[r] else 'refused':<8}" for r in ROLES))
    print("\n" + "\n".join(lines))
