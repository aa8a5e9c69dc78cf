"""Console fixtures: a real vault, a policy directory (MEMO_POLICIES: the installed folder of a vault
that pinned none) with approvers, executives and schedules, approver key files, and a MainWindow —
opened as a person whose own slot unlocked — whose dialogs are replaced by injected answers."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import

from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from appliance.approvals.keys import generate  # noqa: E402
from appliance.vault.store import Vault  # noqa: E402
from tests.conftest import session_as  # noqa: E402

EXECUTIVES = """\
version: 1
endpoints:
  - {name: local, kind: llamacpp, model: smollm2-135m-instruct-q4_1, purposes: [generator, executive]}
  - {name: writer-only, kind: llamacpp, model: smollm2-135m-instruct-q4_1, purposes: [generator]}
  - name: gpu-server
    kind: openai
    url: http://127.0.0.1:9/v1
    model: big-model
    purposes: [executive]
    data_allowed_to_leave: [questions, sub_questions, memory_answers]
"""


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (private key file, public key text)."""
    out = {}
    for name in ("alice", "bob"):
        path = tmp_path / "keys" / f"{name}.key"
        path.parent.mkdir(exist_ok=True)
        out[name] = (path, generate(path))
    return out


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    d = tmp_path / "inbox"
    d.mkdir()
    return d


@pytest.fixture
def policies(tmp_path: Path, keys: dict[str, tuple[Path, str]], inbox: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    (d / "executives.yaml").write_text(EXECUTIVES)
    (d / "approvers.yaml").write_text(
        "version: 1\napproval:\n  approvals_required: 1\nprincipals:\n"
        + "".join(f'  - {{name: {n}, roles: [approver], public_key: "{keys[n][1]}"}}\n' for n in ("alice", "bob")))
    (d / "schedules.yaml").write_text(
        f"version: 1\nschedules:\n  inbox: {inbox}\n  settle: 0\n  actor: memo-daemon\n  generator: local\n"
        "  jobs:\n    - {name: ingest, task: ingest, every: 1m}\n    - {name: retention, task: retention, cron: '30 3 * * *'}\n")
    monkeypatch.setenv("MEMO_POLICIES", str(d))
    return d


@pytest.fixture
def make_window(qtbot: Any, vault: Vault, policies: Path) -> Iterator[Callable[..., Any]]:
    """MainWindow factory (nothing is read until a test asks, unless refresh=True)."""
    from gui.app import MainWindow

    made: list[Any] = []

    def make(actor: str = "alice", **options: Any) -> Any:
        options.setdefault("refresh", False)
        w = MainWindow(session_as(vault, actor, "gui"), **options)
        qtbot.addWidget(w)
        made.append(w)
        return w

    yield make
    for w in made:
        w.state.runner.wait_all(60000)


def wait_idle(qtbot: Any, window: Any, timeout: int = 60000) -> None:
    """Until every background task of the window has finished and reported."""
    qtbot.waitUntil(lambda: not window.state.runner.busy(), timeout=timeout)
