"""The hostile corpus: files built to crash, hang, balloon or escape the ingester, each one with
its outcome asserted, in one real ingest run beside good files that must all get in."""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from pathlib import Path

import pytest

from appliance.corpus.documents import list_documents
from appliance.corpus.ingest import ingest
from appliance.corpus.limits import ParseLimits
from appliance.corpus.readers import UnreadableInput
from appliance.corpus.sandbox import ParserPool
from appliance.vault.store import Vault
from bench import hostile_files as h

GOOD = "Kestrel Yard opens at 06:00 and the cold room is checked every four hours."


def build(folder: Path, outside: Path) -> dict[str, tuple[str, str | None]]:
    """Write the corpus; return file name -> (expected status, a word the reason must hold)."""
    folder.mkdir()
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("payroll: not for the vault")
    (folder / "good.md").write_text(f"# Good page\n\n{GOOD}\n")
    h.docx_text(folder / "good.docx", "The Fleet Dispatch lead is Ann Quist.")
    cases: dict[str, tuple[str, str | None]] = {
        "good.md": ("added", None),
        "good.docx": ("added", None),
        "bomb.docx": ("skipped", "zip bomb"),
        "lying-sizes.docx": ("skipped", "BadZipFile"),
        "billion-laughs.docx": ("skipped", "DTD or entities"),
        "huge-text-node.docx": ("skipped", "XMLSyntaxError"),
        "broken-xml.docx": ("skipped", "XMLSyntaxError"),
        "no-body.docx": ("skipped", "AttributeError"),
        "not-a-zip.docx": ("skipped", "BadZipFile"),
        "looping-pages.pdf": ("skipped", "not a readable PDF"),
        "truncated.pdf": ("skipped", "not a readable PDF"),
        "deep-tables.html": ("skipped", "nests elements"),
        "passwd-link.txt": ("skipped", "outside"),
        "etc-link": ("skipped", "outside"),
        "broken-link.md": ("skipped", "broken symbolic link"),
        "inbox-pipe.txt": ("skipped", "FIFO"),
        "empty.txt": ("skipped", "no text"),
        "odd-utf16.txt": ("added", None),
        "two\nlines.md": ("added", None),
    }
    h.zip_bomb_docx(folder / "bomb.docx", 300)
    h.lying_zip_docx(folder / "lying-sizes.docx", 64)
    h.billion_laughs_docx(folder / "billion-laughs.docx")
    h.huge_text_node_docx(folder / "huge-text-node.docx", 12)
    h.broken_xml_docx(folder / "broken-xml.docx")
    h.bodyless_docx(folder / "no-body.docx")
    h.not_a_zip_docx(folder / "not-a-zip.docx")
    h.looping_pdf(folder / "looping-pages.pdf")
    h.truncated_pdf(folder / "truncated.pdf")
    h.deep_html(folder / "deep-tables.html", 20_000)
    h.escaping_symlink(folder / "passwd-link.txt", secret)
    h.escaping_symlink(folder / "etc-link", outside)  # a folder outside: refused, never walked
    h.escaping_symlink(folder / "broken-link.md", folder / "nowhere.md")
    h.escaping_symlink(folder / "zz-good-link.md", folder / "good.md")  # inside the root: the same file, once
    h.fifo(folder / "inbox-pipe.txt")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "odd-utf16.txt").write_bytes("\ufeffLone surrogate ahead: ".encode("utf-16-le") + b"\x00\xd8" + b"x")
    (folder / "two\nlines.md").write_text(f"# Two lines\n\n{GOOD} (newline in the name)\n")
    if h.device(folder / "null-device.txt"):
        cases["null-device.txt"] = ("skipped", "character device")
    name = h.non_utf8_name(folder)
    cases[name.name] = ("added", None)
    return cases


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from appliance.config import Settings
    from appliance.vault.keys import Secret
    from tests.conftest import FAST_KDF, PASSPHRASE

    root = tmp_path_factory.mktemp("hostile")
    cases = build(root / "corpus", root / "elsewhere")
    vault = Vault.init(Settings(home=root / "home", kdf=FAST_KDF), Secret(passphrase=PASSPHRASE), actor="tester")
    started = time.monotonic()
    report = ingest(vault, [root / "corpus"], actor="tester")
    return vault, cases, report, time.monotonic() - started


def test_every_hostile_file_has_its_outcome_and_the_good_ones_get_in(hostile_run) -> None:  # noqa: ANN001
    vault, cases, report, _ = hostile_run
    by_file = {o.file.name: o for o in report.outcomes}
    assert set(by_file) == set(cases)  # the link to good.md was the same file: once; nothing else slipped in
    for name, (status, word) in cases.items():
        o = by_file[name]
        assert o.status == status, (name, o)
        if word:
            assert word in o.reason, (name, o.reason)
            assert "\n" not in o.reason and o.reason.startswith(o.path), (name, o.reason)
    docs = list_documents(vault)
    assert len(docs) == sum(1 for s, _ in cases.values() if s == "added")
    texts = "".join(vault.get_object(oid).decode() for d in docs for oid in _text_oids(vault, d.id))
    assert "payroll" not in texts  # the symlinked secret outside the folder never got in
    assert vault.verify().ok


def _text_oids(vault: Vault, doc_id: str) -> list[str]:
    with vault.read() as db:
        return [r[0] for r in db.execute("SELECT text_oid FROM versions WHERE doc_id=?", (doc_id,))]


def test_odd_names_are_printable_everywhere(hostile_run) -> None:  # noqa: ANN001
    vault, _, report, _ = hostile_run
    odd = next(o for o in report.outcomes if o.file.name.startswith("caf"))
    assert odd.path.endswith("caf\\xe9-\\xff.txt") and odd.status == "added"
    newline = next(o for o in report.outcomes if o.file.name.startswith("two"))
    assert "\n" not in newline.path and newline.path.endswith("two\\x0alines.md")
    sources = {d.source for d in list_documents(vault)}
    assert any(s.endswith("caf\\xe9-\\xff.txt") for s in sources)
    skipped = [e for e in vault.audit.entries() if e.action == "ingest.skipped"]
    assert len(skipped) == sum(1 for o in report.outcomes if o.status == "skipped")


def test_the_bomb_is_refused_before_it_is_unpacked(hostile_run) -> None:  # noqa: ANN001
    """Bounded: refused from the zip directory. The whole hostile run stays far below the 4.97 GB
    the bomb took before (peak RSS and time are measured by bench/hostile_ingest.py)."""
    _, _, report, _ = hostile_run
    bomb = next(o for o in report.outcomes if o.file.name == "bomb.docx")
    assert "unpacks to 300 MiB" in bomb.reason
    peak_mib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    assert peak_mib < 1500, peak_mib


def test_a_parse_past_its_time_is_stopped_and_the_next_file_still_ingests(vault: Vault, tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a-slow.html").write_text("<html><body>" + "<p>a line of a very long page</p>" * 250_000 + "</body></html>")
    (corpus / "b-fine.md").write_text(f"# Fine\n\n{GOOD}\n")
    report = ingest(vault, [corpus], limits=ParseLimits(seconds=0.2, seconds_per_mib=0.0))
    slow, fine = report.outcomes
    assert slow.status == "skipped" and "took longer than" in slow.reason
    assert fine.status == "added"


def test_a_parser_over_its_memory_is_stopped_and_the_next_file_still_ingests(vault: Vault, tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    h.zip_bomb_docx(corpus / "a-big.docx", 24)  # under the size limits: parsed, needs far more than 40 MiB
    (corpus / "b-fine.md").write_text(f"# Fine\n\n{GOOD}\n")
    report = ingest(vault, [corpus], limits=ParseLimits(memory_mib=40))
    big, fine = report.outcomes
    assert big.status == "skipped" and ("memory" in big.reason or "crashed" in big.reason), big.reason
    assert fine.status == "added"


def test_a_worker_that_dies_mid_file_costs_only_that_file() -> None:
    with ParserPool(ParseLimits(), workers=1) as pool:
        assert pool.parse(b"warm up", "a.txt").text == "warm up"
        slow = ("<html><body>" + "<p>x</p>" * 400_000 + "</body></html>").encode()
        future = pool.submit(slow, "slow.html")
        time.sleep(0.5)
        worker = pool._workers[0].proc
        assert worker is not None
        os.kill(worker.pid, signal.SIGKILL)
        assert "crashed" in future.result()
        assert pool.parse(b"still working", "b.txt").text == "still working"


def test_the_worker_holds_no_vault_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMO_PASSPHRASE", "correct horse battery")
    with ParserPool(workers=1) as pool:
        pool.parse(b"hello", "a.txt")
        proc = pool._workers[0].proc
        assert proc is not None
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        assert b"MEMO_" not in environ and b"correct horse" not in environ
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        assert "Max file size             0" in limits and "Max core file size        0" in limits


def test_a_fifo_named_on_its_own_does_not_hang(vault: Vault, tmp_path: Path) -> None:
    pipe = h.fifo(tmp_path / "named.txt")
    done = threading.Event()
    result = {}

    def run() -> None:
        result["report"] = ingest(vault, [pipe])
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(60), "ingest of a FIFO hung"
    (o,) = result["report"].outcomes
    assert o.status == "skipped" and "FIFO" in o.reason


def test_unparseable_input_never_raises_from_the_reader() -> None:
    """The readers themselves (used in the worker) turn every parser failure into a reason."""
    from appliance.corpus.readers import extract

    for data, name in ((b"%PDF-1.4\n" + bytes(range(256)) * 8, "x.pdf"), (b"PK\x03\x04garbage", "x.docx"),
                       (b"\xff\xfe\x00", "x.txt")):
        try:
            extract(data, Path(name))
        except UnreadableInput as exc:
            assert str(exc).startswith(name)
