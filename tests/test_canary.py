"""Acceptance: no plaintext of an ingested document lands anywhere under the appliance's data dir."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

from tests.corpus.test_readers import make_docx, make_pdf


def forms(canary: str) -> list[bytes]:
    return [canary.encode(), canary.encode("utf-16-le"), canary.encode("utf-16-be"), canary.lower().encode(), canary.upper().encode()]


def scan(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            hits += [f"{p}: {n!r}" for n in needles if n in data]
    return hits


def memo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], env=env, capture_output=True, text=True, timeout=300)


def test_canary_never_reaches_disk_in_clear(tmp_path: Path, cli_env: dict[str, str]) -> None:
    canary = "CANARY" + secrets.token_hex(12)
    docs = tmp_path / "docs"
    docs.mkdir()
    para = f"The vault access code for the Kestrel Yard cold room is {canary}. Keep it secret."
    (docs / "note.txt").write_text(para)
    (docs / "page.md").write_text(f"# Secret page\n\n{para}\n\nMore text follows here.")
    (docs / "page.html").write_text(f"<html><title>{canary}</title><body><p>{para}</p></body></html>")
    (docs / "sop.docx").write_bytes(make_docx(["SOP", para]))
    (docs / "reg.pdf").write_bytes(make_pdf(["Register", para]))
    (docs / f"{canary}-named.md").write_text("A file whose name is the secret.\n\nIt has another line.")
    (docs / "utf16.txt").write_bytes(para.encode("utf-16"))

    home = Path(cli_env["MEMO_HOME"])
    for args in (["init"], ["ingest", str(docs)], ["docs", "list"], ["vault", "verify"], ["audit", "verify"], ["audit", "show"], ["vault", "status"]):
        r = memo(cli_env, *args)
        assert r.returncode == 0, (args, r.stderr)
    listing = memo(cli_env, "docs", "list", "--json")
    assert canary in listing.stdout  # the authorised user sees it: it was ingested
    assert len(scan(docs, forms(canary))) >= 5  # the scanner finds it where it is in clear
    assert scan(home, forms(canary)) == []
    # nothing else was written next to the vault either (e.g. temp files)
    assert {p.name for p in home.parent.iterdir()} == {"docs", home.name}
    assert os.stat(home).st_mode & 0o077 == 0
