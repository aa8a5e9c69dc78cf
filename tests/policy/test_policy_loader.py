"""Policy files: strict schema, merged directory, errors that name the file to fix, the external gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.errors import MemoError
from appliance.policy import load_policy, normalise_url

REPO = Path(__file__).resolve().parents[2]

EXTERNAL = """
version: 1
endpoints:
  - name: gpu
    kind: openai
    url: https://LLM.internal.example:443/v1/
    model: big-model
    purposes: [executive]
    data_allowed_to_leave: [questions, memory_answers]
    api_key_env: MEMO_GPU_KEY
principals:
  - {name: alice, roles: [admin, approver]}
  - {name: bob, roles: [reader]}
"""


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_shipped_default_has_local_executive_and_no_external_endpoint() -> None:
    policy = load_policy(REPO / "policies")
    local = policy.endpoint("local")
    assert local.kind == "llamacpp" and set(local.purposes) == {"generator", "executive"}
    assert not [ep for ep in policy.endpoints if ep.external]


def test_policies_dir_defaults_to_source_tree_and_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(home=tmp_path / "home")
    monkeypatch.delenv("MEMO_POLICIES", raising=False)
    assert settings.policies_dir == REPO / "policies"
    monkeypatch.setenv("MEMO_POLICIES", str(tmp_path / "p"))
    assert settings.policies_dir == tmp_path / "p"
    assert load_policy(settings).endpoints == ()  # a missing directory approves nothing


def test_files_are_merged_and_remember_their_origin(tmp_path: Path) -> None:
    _write(tmp_path, "executives.yaml", "endpoints:\n  - {name: local, kind: llamacpp, model: m, purposes: [executive]}\n")
    ext = _write(tmp_path, "external.yml", EXTERNAL)
    _write(tmp_path, "notes.txt", "not a policy")
    policy = load_policy(tmp_path)
    assert [ep.name for ep in policy.endpoints] == ["local", "gpu"]
    assert policy.file_of(policy.endpoint("gpu")) == ext
    assert policy.roles("alice") == {"admin", "approver"} and policy.roles("carol") == set()


def test_approval_matches_normalised_url_exactly(tmp_path: Path) -> None:
    _write(tmp_path, "x.yaml", EXTERNAL)
    policy = load_policy(tmp_path)
    ep = policy.approve_external("https://llm.internal.example/v1", "big-model", "executive", ["questions"])
    assert ep.name == "gpu"
    for other in ("https://llm.internal.example/v2", "http://llm.internal.example/v1", "https://llm.internal.example:8443/v1"):
        with pytest.raises(MemoError, match="not approved in policy"):
            policy.approve_external(other, "big-model", "executive")


def test_refusals_name_the_file_to_edit(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.yaml", EXTERNAL)
    policy = load_policy(tmp_path)
    url = "https://llm.internal.example/v1"
    cases = [
        (("other", "executive", ()), "not 'other'"),
        (("big-model", "generator", ()), "not approved as generator"),
        (("big-model", "executive", ("document_text",)), "may not receive document_text"),
    ]
    for (model, purpose, sends), expect in cases:
        with pytest.raises(MemoError, match=expect) as err:
            policy.approve_external(url, model, purpose, sends)  # type: ignore[arg-type]
        assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("endpoints:\n  - name: x\n    kind: openai\n    model: m\n    purposes: [executive]\n", "needs a url"),
        ("endpoints:\n  - {name: x, kind: llamacpp, model: m, url: 'http://h/v1', purposes: [executive]}\n", "runs locally"),
        ("endpoints:\n  - {name: x, kind: openai, model: m, url: 'ftp://h', purposes: [executive]}\n", "http"),
        ("endpoints:\n  - {name: x, kind: openai, model: m, url: 'https://u:p@h/v1', purposes: [executive]}\n", "credentials"),
        ("endpoints:\n  - {name: x, kind: openai, model: m, url: 'https://h', purposes: [executive], api_key_env: sk-123}\n", "api_key_env"),
        ("endpoints:\n  - {name: x, kind: openai, model: m, url: 'https://h', purposes: [exec]}\n", "purposes"),
        ("endpoints:\n  - {name: x, kind: openai, model: m, url: 'https://h', purpose: [executive]}\n", "endpoints.0"),
        ("principals:\n  - {name: a, roles: [superuser]}\n", "principals.0.roles"),
        ("executives: []\n", "executives"),
    ],
)
def test_invalid_files_are_rejected_with_location(tmp_path: Path, text: str, expect: str) -> None:
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(MemoError) as err:
        load_policy(tmp_path)
    assert str(path) in str(err.value) and expect in str(err.value)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    _write(tmp_path, "bad.yaml", "endpoints:\n  - name: x\n   kind: [\n")
    with pytest.raises(MemoError, match=r"bad\.yaml:3: not valid YAML"):
        load_policy(tmp_path)


def test_duplicate_names_across_files_are_errors(tmp_path: Path) -> None:
    first = _write(tmp_path, "a.yaml", EXTERNAL)
    _write(tmp_path, "b.yaml", EXTERNAL.replace("principals:", "principals-unused:").split("principals-unused:")[0])
    with pytest.raises(MemoError) as err:
        load_policy(tmp_path)
    assert "'gpu'" in str(err.value) and str(first) in str(err.value)


def test_empty_file_is_an_empty_policy(tmp_path: Path) -> None:
    _write(tmp_path, "empty.yaml", "# nothing yet\n")
    assert load_policy(tmp_path).endpoints == ()


def test_normalise_url() -> None:
    assert normalise_url("HTTPS://Host.Example:443/v1/") == "https://host.example/v1"
    assert normalise_url("http://h:8080/v1") == "http://h:8080/v1"
    assert normalise_url("http://[::1]:80/v1") == "http://[::1]/v1"
