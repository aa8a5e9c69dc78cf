"""Sanity-check samples/halq-wiki.questions.jsonl against the halq-wiki corpus.

For every question, the gold answer (first alias) must occur, case-insensitively,
in the extracted text of at least one corpus document. Prints counts per
question kind, per document format, and per-document word counts.

Usage:
    .venv/bin/python samples/tools/check_questions.py
"""

from __future__ import annotations

import collections
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent
CORPUS = SAMPLES / "halq-wiki"
QUESTIONS = SAMPLES / "halq-wiki.questions.jsonl"
SUPERSEDED = {
    "hr/travel-policy-2024.md",
    "it/password-policy-v1.md",
    "it/oncall-rota-2024-q4.md",
    "finance/expense-approval-limits-2023.md",
}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def extract(path: Path) -> str:
    ext = path.suffix.lower()
    if ext in (".md", ".txt"):
        return path.read_text(encoding="utf-8")
    if ext == ".html":
        p = _Text()
        p.feed(path.read_text(encoding="utf-8"))
        return " ".join(p.parts)
    if ext == ".docx":
        import docx

        d = docx.Document(str(path))
        parts = [para.text for para in d.paragraphs]
        for t in d.tables:
            for row in t.rows:
                parts.append(" | ".join(c.text for c in row.cells))
        return "\n".join(parts)
    if ext == ".pdf":
        import pypdf

        return "\n".join(pg.extract_text() or "" for pg in pypdf.PdfReader(str(path)).pages)
    raise ValueError(f"unsupported format: {path}")


def main() -> int:
    docs = {
        str(p.relative_to(CORPUS)): extract(p)
        for p in sorted(CORPUS.rglob("*"))
        if p.is_file()
    }
    fmt = collections.Counter(Path(d).suffix.lstrip(".") for d in docs)
    total_words = 0
    print("documents:")
    for name, text in docs.items():
        n = len(text.split())
        total_words += n
        print(f"  {n:4d} words  {name}")
    print(f"total: {len(docs)} documents, {total_words} words")
    print("per format:", dict(sorted(fmt.items())))

    kinds = collections.Counter()
    failures = 0
    ids = set()
    for line_no, line in enumerate(QUESTIONS.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        q = json.loads(line)
        assert set(q) == {"id", "question", "answers", "kind"}, q
        assert q["kind"] in ("single", "multi", "current"), q
        assert q["id"] not in ids, q["id"]
        ids.add(q["id"])
        kinds[q["kind"]] += 1
        gold = q["answers"][0].lower()
        hits = [d for d, t in docs.items() if gold in t.lower()]
        if not hits:
            failures += 1
            print(f"FAIL {q['id']}: gold {q['answers'][0]!r} not found in any document")
        elif q["kind"] == "current":
            stale = [h for h in hits if h in SUPERSEDED]
            if stale:
                print(f"note {q['id']}: gold {q['answers'][0]!r} also in superseded {stale}")
    print("per kind:", dict(kinds), "total", sum(kinds.values()))
    print("failures:", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
