"""Benchmark: the two page-encrypted SQLite engines the catalog could use, side by side, in one run.

    pip install --target /tmp/sqlite3mc apsw-sqlite3mc          # the contender is not a dependency
    .venv/bin/python -m bench.catalog_engines --extra-path /tmp/sqlite3mc [--rows 25000]

SQLCipher (``sqlcipher3-binary``, what the vault uses) and SQLite3 Multiple Ciphers
(``apsw-sqlite3mc``: its default ChaCha20-Poly1305 and its SQLCipher-compatible scheme), with plain
``sqlite3`` as the baseline, each on a table of ``--rows`` 1 KiB rows in this directory's file
system, journal ``DELETE`` and ``synchronous=FULL`` as the vault runs it. Measured: opening with a
raw key plus one point query, committing 32 rows on an open connection, a full scan, and what each
says when one byte of a page is flipped (the vault must name the damage), and whether a marker
written in a transaction killed before commit appears in clear in the file or its journal.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

MARK = b"PLAINTEXTMARKER"


def _engines(key: str) -> dict[str, Callable[[str], Any]]:
    import sqlite3

    import sqlcipher3

    def plain(path: str) -> Any:
        c = sqlite3.connect(path, isolation_level=None)
        c.execute("PRAGMA synchronous=FULL")
        return c

    def sqlcipher(path: str) -> Any:
        c = sqlcipher3.connect(path, isolation_level=None)
        c.execute("PRAGMA cipher_log_level = NONE")
        c.execute(f"PRAGMA key = \"x'{key}'\"")
        c.execute("PRAGMA synchronous=FULL")
        return c

    out: dict[str, Callable[[str], Any]] = {"sqlite3 (plain baseline)": plain, "SQLCipher 4 (sqlcipher3-binary)": sqlcipher}
    try:
        import apsw
    except ImportError:
        return out

    def mc(cipher: str) -> Callable[[str], Any]:
        def open_(path: str) -> Any:
            c = apsw.Connection(path)
            c.execute(f"PRAGMA cipher='{cipher}'")
            if cipher == "sqlcipher":
                c.execute("PRAGMA legacy=4")
                c.execute(f"PRAGMA key=\"x'{key}'\"")
            else:
                c.execute(f"PRAGMA hexkey='{key}'")
            c.execute("PRAGMA synchronous=FULL")
            return c
        return open_

    out["SQLite3MC chacha20 (apsw-sqlite3mc)"] = mc("chacha20")
    out["SQLite3MC sqlcipher scheme (apsw-sqlite3mc)"] = mc("sqlcipher")
    return out


def _ms(f: Callable[[], None], n: int) -> float:
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        xs.append(time.perf_counter() - t)
    return round(statistics.median(xs) * 1000, 3)


def _measure(name: str, op: Callable[[str], Any], root: Path, rows: int) -> dict[str, Any]:
    path = str(root / f"{abs(hash(name))}.db")
    blob = os.urandom(1024)
    c = op(path)
    c.execute("CREATE TABLE v(id INTEGER PRIMARY KEY, doc TEXT, mh BLOB)")
    c.execute("BEGIN")
    for i in range(rows):
        c.execute("INSERT INTO v(doc, mh) VALUES (?, ?)", (f"doc-{i}", blob))
    c.execute("COMMIT")
    c.close()

    def point() -> None:
        x = op(path)
        list(x.execute("SELECT id FROM v WHERE id=7"))
        x.close()

    conn = op(path)

    def commit32() -> None:
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(32):
            conn.execute("INSERT INTO v(doc, mh) VALUES (?, ?)", ("new", blob))
        conn.execute("COMMIT")

    def scan() -> None:
        list(conn.execute("SELECT doc, mh FROM v"))

    result = {"file_mb": round(os.path.getsize(path) / 1e6, 1), "open_point_query_ms": _ms(point, 9),
              "commit_32_rows_ms": _ms(commit32, 9), "full_scan_ms": _ms(scan, 3)}
    # a transaction left open with pages spilled: is anything in clear in the file or its journal?
    conn.execute("PRAGMA cache_size=20")
    conn.execute("BEGIN")
    conn.execute("UPDATE v SET doc = doc || ?", (MARK.decode(),))
    files = [p for p in root.iterdir() if p.name.startswith(Path(path).name)]
    result["journal_present"] = any(p.name.endswith("-journal") for p in files)
    result["plaintext_on_disk"] = any(MARK in p.read_bytes() for p in files)
    conn.execute("ROLLBACK")
    conn.close()
    damaged = root / "damaged.db"
    shutil.copy(path, damaged)
    data = bytearray(damaged.read_bytes())
    data[4096 * 20 + 500] ^= 1
    damaged.write_bytes(bytes(data))
    said = []
    for q in ("SELECT count(*) FROM v", "PRAGMA cipher_integrity_check"):
        try:
            x = op(str(damaged))
            said.append(f"{q}: {list(x.execute(q))[:2]}")
            x.close()
        except Exception as exc:  # noqa: BLE001 - what each engine raises is the measurement
            said.append(f"{q}: {type(exc).__name__}: {exc}")
    result["flipped_byte"] = said
    damaged.unlink()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=25_000)
    ap.add_argument("--extra-path", help="a folder holding apsw-sqlite3mc (pip install --target DIR apsw-sqlite3mc)")
    ap.add_argument("--json", type=Path, default=Path("bench/results/catalog_engines.json"))
    args = ap.parse_args()
    if args.extra_path:
        sys.path.insert(0, args.extra_path)
    console = Console(width=160)
    key = os.urandom(32).hex()
    results = {}
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        for name, op in _engines(key).items():
            results[name] = _measure(name, op, Path(tmp), args.rows)
    table = Table(title=f"page-encrypted SQLite engines, {args.rows:,} rows of 1 KiB (median ms)")
    for col in ("engine", "MB", "open + point query", "commit 32 rows", "full scan", "clear text on disk", "a flipped byte"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(name, str(r["file_mb"]), str(r["open_point_query_ms"]), str(r["commit_32_rows_ms"]), str(r["full_scan_ms"]),
                      str(r["plaintext_on_disk"]), " / ".join(r["flipped_byte"])[:120])
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": args.rows, "engines": results, "load_avg": os.getloadavg()}, indent=2))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
