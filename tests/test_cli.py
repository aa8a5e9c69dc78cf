"""The `memo` command as a script or a service uses it: env unlock, --json, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import SAMPLE_CORPUS


def memo(env: dict[str, str], *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], env=env, capture_output=True, text=True, timeout=300, input=input)


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 1, r
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _command_paths(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:  # noqa: ANN001
    import click

    paths = [prefix]
    for name, cmd in group.commands.items():
        paths += _command_paths(cmd, prefix + (name,)) if isinstance(cmd, click.Group) else [prefix + (name,)]
    return paths


def test_every_command_has_help(cli_env: dict[str, str]) -> None:
    """Walks the whole command tree, so a new command cannot ship without a working --help."""
    from click.testing import CliRunner

    from appliance.cli import cli

    paths = _command_paths(cli)
    assert {("ask",), ("bench",), ("serve",), ("api", "token", "add")} <= set(paths)
    runner = CliRunner()
    for path in paths:
        r = runner.invoke(cli, [*path, "--help"], env=cli_env)
        assert r.exit_code == 0 and "Usage:" in r.output, (path, r.output)
        assert r.output.split("Usage:")[1].strip(), path
    assert memo(cli_env, "--help").returncode == 0  # and once as the installed script runs it


def test_full_cli_flow(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = cli_env
    one_line_error(memo(env, "vault", "status"), "memo init")
    assert memo(env, "init").returncode == 0
    one_line_error(memo(env, "init"), "already exists")

    r = memo(env, "ingest", str(SAMPLE_CORPUS), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)["summary"]
    assert summary["added"] >= 20 and summary["duplicate"] == 1

    docs = json.loads(memo(env, "docs", "list", "--json").stdout)
    assert len(docs) == summary["files"]
    first = docs[0]["id"]
    shown = json.loads(memo(env, "docs", "show", first, "--text", "--json").stdout)
    assert shown["id"] == first and shown["text"]

    status = json.loads(memo(env, "vault", "status", "--json").stdout)
    assert status["documents"] == summary["files"] and status["chunks"] > 0
    assert json.loads(memo(env, "vault", "verify", "--json").stdout)["ok"]
    assert memo(env, "audit", "verify").returncode == 0
    chain_only = {k: v for k, v in env.items() if k != "MEMO_PASSPHRASE"}
    pinned = tmp_path / "pinned.pem"  # the auditor's copy, taken when the vault was set up
    pinned.write_bytes((Path(env["MEMO_HOME"]) / "audit" / "public-key.pem").read_bytes())
    one_line_error(memo(chain_only, "audit", "verify", "--chain-only"), "--public-key")
    saved = tmp_path / "auditor-head.json"
    r = memo(chain_only, "audit", "verify", "--chain-only", "--public-key", str(pinned), "--save-head", str(saved))
    assert "OK" in r.stdout and saved.exists(), r.stderr
    assert "OK" in memo(env, "audit", "verify", "--expect-head", str(saved), "--public-key", str(pinned)).stdout

    entries = json.loads(memo(env, "audit", "show", "--action", "ingest", "--limit", "0", "--json").stdout)
    assert entries and all(e["action"].startswith("ingest.") for e in entries)
    assert all(e["actor"] == "cli-tester" for e in entries)
    out = tmp_path / "audit.jsonl"
    assert memo(env, "audit", "export", "--out", str(out)).returncode == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["seq"] for e in exported] == list(range(1, len(exported) + 1))

    one_line_error(memo(env, "docs", "forget", first), "--yes")
    assert memo(env, "docs", "forget", first, "--yes").returncode == 0
    one_line_error(memo(env, "docs", "show", "doc-nope"), "no document")

    # wrong passphrase and non-interactive use without a secret
    one_line_error(memo({**env, "MEMO_PASSPHRASE": "wrong wrong"}, "vault", "status"), "wrong passphrase")
    one_line_error(memo(chain_only, "vault", "status"), "MEMO_PASSPHRASE")

    # key file + rekey
    key = tmp_path / "vault.key"
    assert memo(env, "vault", "keygen", str(key)).returncode == 0
    r = memo({**env, "MEMO_NEW_PASSPHRASE": "a brand new passphrase"}, "vault", "rekey", "--new-key-file", str(key))
    assert r.returncode == 0, r.stderr
    one_line_error(memo(env, "vault", "status"), "wrong passphrase")
    assert memo(chain_only, "--key-file", str(key), "vault", "status").returncode == 0
    assert memo({**env, "MEMO_PASSPHRASE": "a brand new passphrase"}, "vault", "status").returncode == 0


def test_input_errors_are_one_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert memo(cli_env, "init").returncode == 0
    one_line_error(memo(cli_env, "ingest", str(tmp_path / "missing.md")), "no such file")
    blob = tmp_path / "blob.txt"
    blob.write_bytes(bytes(range(256)) * 4)
    r = memo(cli_env, "ingest", str(blob))
    assert r.returncode == 0 and "binary" in r.stderr and "1 skipped" in r.stdout


def test_tampered_catalog_is_named(cli_env: dict[str, str]) -> None:
    assert memo(cli_env, "init").returncode == 0
    catalog = Path(cli_env["MEMO_HOME"]) / "catalog.db.enc"
    data = bytearray(catalog.read_bytes())
    data[100] ^= 0x01
    catalog.write_bytes(bytes(data))
    r = memo(cli_env, "vault", "verify")
    assert r.returncode == 1 and "catalog.db.enc" in r.stderr


def test_refused_commands_are_audited(cli_env: dict[str, str]) -> None:
    assert memo(cli_env, "init").returncode == 0
    one_line_error(memo(cli_env, "ask", "Who leads Fleet Dispatch?", "--executive", "nowhere"), "error:")
    one_line_error(memo(cli_env, "docs", "show", "doc-nope"), "no document")
    entries = json.loads(memo(cli_env, "audit", "show", "--action", "cli.refused", "--json").stdout)
    assert [(e["target"], e["actor"]) for e in entries] == [("ask", "cli-tester"), ("docs show", "cli-tester")]
    assert all(e["details"]["error"] and "\n" not in e["details"]["error"] for e in entries)
    assert "Who leads" not in json.dumps(entries)  # the command is named, its arguments are not
