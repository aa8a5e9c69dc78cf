"""Cut a chunk into self-contained fact statements and find the answer spans inside each.

A 135M-parameter generator cannot be trusted to pick facts out of a page, but it can write a
question for a fact it is handed together with the answer. So the selection is done here, by
structure (sentences, list items, table rows, front-matter fields) and by surface form (names,
codes, numbers, dates), and every statement carries its heading and document title so that it
makes sense on its own (the paper's self-containment step).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$")
_LIST = re.compile(r"^(?:[-*+•]|\d+[.)])\s+(.+)$")
_FRONT = re.compile(r"^([A-Za-z][\w -]{0,30}):\s+(.+)$")

MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_SPAN_PATTERNS = [
    ("email", re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b")),
    ("date", re.compile(rf"\b\d{{1,2}} (?:{MONTHS}) \d{{4}}\b|\b(?:{MONTHS}) \d{{4}}\b|\b\d{{4}}-\d{{2}}-\d{{2}}\b")),
    ("code", re.compile(r"\b[A-Z]{1,6}(?:-[A-Z0-9]+)+\b|\b[A-Z]+\d+[A-Z0-9]*\b")),
    ("quantity", re.compile(
        r"(?:EUR|USD|GBP|€|\$|£)\s?\d[\d,.]*|\b\d[\d,.:]*\s?(?:%|EUR|USD|GBP|euros?|km|kg|hours?|h|minutes?|min|days?|"
        r"nights?|weeks?|months?|years?|seconds?|°C|degrees|characters|people|staff|vans|trucks|pallets|totes)\b"
    )),
    ("time", re.compile(r"\b\d{1,2}:\d{2}\b")),
    ("number", re.compile(r"\b\d+(?:[.,]\d+)?\b")),
    ("name", re.compile(r"\b(?:[A-Z][a-zà-ÿ'’]+(?:[ -](?:&|and|de|van|von|of|the|[A-Z][\w'’-]*))*[ -][A-Z][\w'’-]+|[A-Z][a-zà-ÿ]+[A-Z]\w*)\b")),
    ("acronym", re.compile(r"(?<![\w-])[A-Z]{3,}(?![\w-])")),
    ("word", re.compile(r"(?<=[a-z0-9,)] )[A-Z][a-z]+(?:[A-Z][a-z]+)*\b")),
]
_STOP = set("""a an the of and or to in on at for by with from is are was were be been this that these those it its as
if then than into per each every any all no not must should may can will your our their his her they we you he she i
what which who whom whose when where why how does do did has have had""".split())


@dataclass(frozen=True)
class Span:
    text: str
    kind: str


@dataclass
class Fact:
    """One statement, made self-contained: ``text`` is what a question is written for."""

    text: str
    context: str  # "Document title — Heading"
    spans: list[Span] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)  # table values, the best answers of a row

    @property
    def statement(self) -> str:
        return f"{self.context}: {self.text}" if self.context else self.text


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9à-ÿ]+(?:[-'][a-z0-9]+)*", text.lower()) if w not in _STOP and len(w) > 1}


def find_spans(text: str, limit: int = 4) -> list[Span]:
    """Answer candidates, most specific kinds first, never overlapping."""
    taken: list[tuple[int, int]] = []
    spans: list[Span] = []
    for kind, pattern in _SPAN_PATTERNS:
        for m in pattern.finditer(text):
            s, e = m.span()
            value = m.group(0).strip(" .,;:")
            if not value or any(s < te and ts < e for ts, te in taken):
                continue
            if kind == "name" and s == 0 and " " not in value:
                continue  # a capitalised sentence start is not a name
            if kind == "number" and len(value) <= 1 and value in "0123456789":
                continue
            if kind == "acronym" and sum(ch.isupper() for ch in text) > 0.5 * sum(ch.isalpha() for ch in text):
                continue  # a shouted heading, not an acronym
            taken.append((s, e))
            spans.append(Span(value, kind))
    return spans[:limit]


def _table_facts(rows: list[list[str]]) -> list[tuple[str, list[str]]]:
    header, body = rows[0], rows[1:]
    if not body:
        return [("; ".join(header), [])]
    facts = []
    for row in body:
        cells = [c for c in row if c and len(c.split()) <= 6 and c.lower() not in ("none", "n/a", "-", "yes", "no")]
        if len(row) == 2 and len(header) == 2:
            facts.append((f"{row[0]}: {row[1]}", cells[1:]))
        else:
            facts.append(("; ".join(f"{h}: {c}" if h else c for h, c in zip(header, row) if c), cells))
    return facts


def _split_row(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _join_wrapped(lines: list[str]) -> list[str]:
    """Re-join a sentence that a PDF's line breaks cut in two."""
    out: list[str] = []
    for line in lines:
        stripped = line.strip()
        prev = out[-1].strip() if out else ""
        if (prev and stripped and stripped[0].islower() or prev and stripped[:1].isdigit() and not _LIST.match(stripped)) \
                and not prev.endswith((".", "!", "?", ":")) and not _HEADING.match(prev) and "|" not in prev + stripped:
            out[-1] = prev + " " + stripped
        else:
            out.append(line)
    return out


def facts_from_text(text: str, title: str) -> list[Fact]:
    """Statements of a chunk with their context (title, heading) and answer spans."""
    facts: list[Fact] = []
    heading = ""
    lines = text.split("\n")
    i = 0
    if lines and lines[0].strip() == "---":  # YAML-ish front matter
        j = 1
        while j < len(lines) and lines[j].strip() != "---":
            m = _FRONT.match(lines[j].strip())
            if m and m.group(1).strip().lower() not in ("title", "layout", "tags"):
                facts.append(Fact(f"{m.group(1).strip()}: {m.group(2).strip()}", title))
            j += 1
        i = j + 1
    lines = lines[:i] + _join_wrapped(lines[i:])
    table: list[list[str]] = []

    def flush_table() -> None:
        nonlocal table
        if table:
            for t, cells in _table_facts(table):
                facts.append(Fact(t, " — ".join(x for x in (title, heading) if x), cells=cells))
            table = []

    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if line.count("|") >= 1 and (line.startswith("|") or " | " in line):
            if re.fullmatch(r"[|:\-\s]+", line):
                continue  # markdown separator row
            cells = [c for c in _split_row(line)]
            while cells and not cells[-1]:
                cells.pop()
            if cells:
                table.append(cells)
            continue
        if not line:
            continue  # blank lines between rows (HTML tables) do not end a table
        flush_table()
        m = _HEADING.match(line)
        if m:
            heading = m.group(1).strip()
            if heading.lower() == title.lower():
                heading = ""
            continue
        line = re.sub(r"^>\s*", "", line)
        line = re.sub(r"[*_`]{1,3}([^*_`]+)[*_`]{1,3}", r"\1", line)  # markdown emphasis
        m = _LIST.match(line)
        if m:
            line = m.group(1)
        context = " — ".join(x for x in (title, heading) if x)
        for sentence in _SENTENCE.split(line):
            sentence = sentence.strip()
            if len(sentence.split()) >= 3:
                facts.append(Fact(sentence, context))
    flush_table()
    for f in facts:
        found = find_spans(f.text)
        cell_spans = [Span(c, "key" if i == 0 else "cell") for i, c in enumerate(f.cells)]
        f.spans = (cell_spans + [sp for sp in found if not any(sp.text in c for c in f.cells)])[:5]
    return facts


def entities(facts: list[Fact]) -> dict[str, list[Fact]]:
    """Names and codes mentioned in the facts, each with the facts that mention it."""
    found: dict[str, list[Fact]] = {}
    for f in facts:
        for s in f.spans:
            if s.kind in ("name", "code", "acronym", "key"):
                found.setdefault(s.text, []).append(f)
    return found
