"""Cut a chunk into self-contained statements and atomic facts, by structure, not by a model.

A 135M-parameter generator cannot be trusted to pick facts out of a page, but the page's own
structure says a lot: a table row names an entity (its key column) and gives its attributes (the
headers); a ``Key: value`` line under a heading gives an attribute of what the heading names; a
sentence carries answer-shaped spans (names, codes, quantities, dates). Every statement keeps its
document title and heading, so that it makes sense on its own (the paper's self-containment step).

An :class:`AtomicFact` is one value the memory must be able to give: either an attribute of a
subject (``kv``: Frostline → owning team → Cold Chain Engineering) or a span of a statement
(``span``: "… receive 27 days of annual leave …" → 27 days). Questions are written for atomic
facts (:mod:`appliance.reflect.wordings`), and coverage is counted over them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$")
_SETEXT = re.compile(r"^(=+|-+)\s*$")
_LIST = re.compile(r"^(?:[-*+•]|\d+[.)])\s+(.+)$")
_NUMBERED_HEADING = re.compile(r"^\d+(?:\.\d+)*\.?\s+([A-Z][^.!?:]{1,60})$")
_KV = re.compile(r"^([A-Za-z][\w '()&/,.-]{0,48}?)\s*:\s+(\S.*)$")
_FRONT = re.compile(r"^([A-Za-z][\w -]{0,30}):\s+(.+)$")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`)(\S(?:.*?\S)?)\1")

MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
WEEKDAYS = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_SPAN_PATTERNS = [
    ("email", re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b")),
    ("date", re.compile(rf"\b\d{{1,2}} (?:{MONTHS}) \d{{4}}\b|\b(?:{MONTHS}) \d{{1,2}},? \d{{4}}\b|\b\d{{4}}-\d{{2}}-\d{{2}}\b"
                        rf"|\b\d{{1,2}} (?:{MONTHS})\b|\b(?:{MONTHS}) \d{{4}}\b")),
    ("host", re.compile(r"\b[a-z0-9][\w-]*(?:\.[a-z0-9][\w-]*){2,}\b")),
    ("code", re.compile(r"\b[A-Z]{1,8}(?:-[A-Z0-9]+)+\b|\b[A-Z]+\d+[A-Z0-9]*(?:/\d+)?\b|\b\d{3,5}-\d{3,5}\b")),
    ("quantity", re.compile(
        r"(?:EUR|USD|GBP|€|\$|£)\s?\d[\d,.]*|\b\d[\d,.]*\s?%|\b\d[\d,.:]*\s?(?:EUR|USD|GBP|euros?|km|kg|hours?|h|minutes?|min|days?|"
        r"working days?|nights?|weeks?|months?|years?|seconds?|°C|degrees|characters|people|staff|vans|trucks|pallets|totes|"
        r"tickets|passwords|attempts?|failed attempts|views)\b"
    )),
    ("time", re.compile(r"\b\d{1,2}:\d{2}\b")),
    ("ordinal", re.compile(r"\b\d+(?:st|nd|rd|th) [a-z]+(?: [a-z]+)?\b")),
    ("number", re.compile(r"\b\d+(?:[.,]\d+)?\b")),
    ("name", re.compile(r"\b(?:[A-Z][a-zà-ÿ'’]+(?:[ -](?:&|de|van|von|of|the|[A-Z][\w'’-]*))*[ -][A-Z][\w'’-]+"
                        r"|[A-Z][a-zà-ÿ]+[A-Z]\w*|[A-Z][a-z]+ \d+)\b")),
    ("day", re.compile(rf"\b(?:{WEEKDAYS})s?\b")),
    ("acronym", re.compile(r"(?<![\w-])[A-Z]{3,}(?![\w-])")),
    ("word", re.compile(r"(?<=[a-z0-9,)] )[A-Z][a-z]+(?:[A-Z][a-z]+)*\b")),
]
ENTITY_KINDS = ("name", "code", "acronym", "word", "host", "email")
_STOP = set("""a an the of and or to in on at for by with from is are was were be been this that these those it its as
if then than into per each every any all no not must should may can will your our their his her they we you he she i
what which who whom whose when where why how does do did has have had""".split())
_NOT_VALUES = {"none", "n/a", "-", "yes", "no", "tbd", "todo", ""}


@dataclass(frozen=True)
class Span:
    text: str
    kind: str


@dataclass
class Statement:
    """One self-contained statement of a chunk: a sentence, a list item, a ``Key: value`` line, a table row."""

    text: str
    title: str
    heading: str = ""
    by_sentence: list[list[Span]] = field(default_factory=list)  # each sentence's answer candidates (sentence_spans)
    # (subject, attribute, value, subject type, may be read backwards); subject "" = the heading or the title
    kv: list[tuple[str, str, str, str, bool]] = field(default_factory=list)

    @property
    def spans(self) -> list[Span]:
        return [sp for spans in self.by_sentence for sp in spans]

    @property
    def context(self) -> str:
        return " — ".join(x for x in (self.title, self.heading) if x)

    @property
    def statement(self) -> str:
        return f"{self.context}: {self.text}" if self.context else self.text


@dataclass(frozen=True)
class AtomicFact:
    """One value the memory must be able to give, with what it is about and where it was said."""

    id: str
    form: str  # kv | span
    value: str
    kind: str  # span kind of the value (name, code, quantity, date, …) or "text"
    statement: str  # the self-contained statement it comes from ("Title — Heading: text")
    text: str  # the statement's own text, without title and heading
    title: str
    heading: str = ""
    subject: str = ""  # kv: what the attribute belongs to
    attribute: str = ""
    subject_type: str = ""  # kv from a table: the key column's header ("System", "Team")
    subject_is_title: bool = False  # kv whose subject is the document itself (a 2-column table, front matter)
    reverse: bool = False  # kv read backwards: the subject is the value (entity surfacing)
    doc_id: str = ""
    chunk_oid: str = ""

    @property
    def context(self) -> str:
        return " — ".join(x for x in (self.title, self.heading) if x)


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9à-ÿ]+(?:[-'][a-z0-9]+)*", text.lower()) if w not in _STOP and len(w) > 1}


def find_spans(text: str, limit: int = 4) -> list[Span]:
    """Answer candidates, most specific kinds first, never overlapping, in the order they occur."""
    taken: list[tuple[int, int]] = []
    spans: list[tuple[int, Span]] = []
    for kind, pattern in _SPAN_PATTERNS:
        for m in pattern.finditer(text):
            s, e = m.span()
            value = m.group(0).strip(" .,;:")
            if not value or any(s < te and ts < e for ts, te in taken):
                continue
            if kind == "name" and re.search(r"['’]s ", value):  # "Fenna Dujardin's People Team": two names
                cut = re.search(r"['’]s ", value)
                owned = value[cut.end():]
                if " " in owned and owned[:1].isupper():  # "People Team", not read as two words
                    taken.append((s + cut.end(), e))
                    spans.append((s + cut.end(), Span(owned, kind)))
                e, value = s + cut.start(), value[:cut.start()]
                if " " not in value:
                    continue
            if kind == "name" and s == 0:
                # a capitalised sentence start is not part of a name: "Contact the People Team", "The Kestrel Yard …"
                lead = re.match(r"^(?:The |[A-Z][a-z]+ (?:the|of|to|at|in|for) )", value)
                if lead and value[lead.end():][:1].isupper():
                    s += lead.end()
                    value = value[lead.end():]
                elif " " not in value or re.fullmatch(r"[A-Z][a-z]+ \d+", value):
                    continue
            if kind == "name" and re.fullmatch(rf"(?:{WEEKDAYS}|{MONTHS}|Step|Day|Page|Section|Version|Rev|Revision) \d+", value):
                continue
            if kind == "number" and len(value) <= 1:
                continue
            if kind == "acronym" and sum(ch.isupper() for ch in text) > 0.5 * sum(ch.isalpha() for ch in text):
                continue  # a shouted heading, not an acronym
            taken.append((s, e))
            spans.append((s, Span(value, kind)))
    kinds_first = sorted(spans, key=lambda x: [k for k, _ in _SPAN_PATTERNS].index(x[1].kind))[:limit]
    return [sp for _, sp in sorted(kinds_first, key=lambda x: x[0])]


def _plain(line: str) -> str:
    """Markdown emphasis, inline code and quote markers off; whitespace collapsed."""
    line = re.sub(r"^>\s*", "", line.strip())
    for _ in range(2):
        line = _EMPHASIS.sub(r"\2", line)
    return " ".join(line.split())


def _split_row(line: str) -> list[str]:
    return [_plain(c) for c in line.strip().strip("|").split("|")]


def _join_wrapped(lines: list[str]) -> list[str]:
    """Re-join a sentence that a PDF's (or a plain-text file's) line breaks cut in two."""
    out: list[str] = []
    for line in lines:
        stripped = line.strip()
        prev = out[-1].strip() if out else ""
        continues = stripped[:1].islower() or stripped[:1].isdigit() and not _LIST.match(stripped) or (
            len(prev) >= 55 and not _LIST.match(stripped) and not _HEADING.match(stripped) and not _KV.match(stripped))
        if (prev and stripped and continues and not prev.endswith((".", "!", "?", ":")) and not _HEADING.match(prev)
                and "|" not in prev + stripped and len(prev.split()) >= 6):
            out[-1] = prev + " " + stripped
        else:
            out.append(line)
    return out


def _heading_text(text: str) -> str:
    text = re.sub(r"^\d+(?:\.\d+)*\.?\s+", "", _plain(text).strip(" #:"))
    if text.isupper() and len(text) > 3:
        text = text.capitalize()
    return text


def _looks_like_heading(line: str, next_line: str) -> bool:
    """A short line without a sentence end, followed by content: a plain-text or PDF section heading."""
    words = line.split()
    if line.endswith("?") and 2 <= len(words) <= 12 and "|" not in line:
        return bool(next_line) and not next_line.endswith("?")  # a FAQ's question heads its answer
    if not 1 <= len(words) <= 6 or line.endswith((".", ",", ";", ":", "!", "?")) or "|" in line or _KV.match(line):
        return False
    if _LIST.match(line) and not _NUMBERED_HEADING.match(line):
        return False
    if not (line[0].isupper() or line[0].isdigit()):
        return False
    return bool(next_line) and not _SETEXT.match(next_line)


def _value_ok(value: str) -> bool:
    return value.lower().strip(" .") not in _NOT_VALUES and len(value.split()) <= 14


def _kv_key(key: str) -> bool:
    """Whether ``Key: value`` is an attribute line, not a sentence with a colon ("DECISION: …", "Leopold: …")."""
    words = key.split()
    if not 1 <= len(words) <= 6 or re.search(r"\d:\d", key + ":") or re.search(r"[.!?]\s", key):
        return False
    if len(words) == 1 and words[0].isupper() and len(words[0]) > 3:
        return False  # a shouted label introduces a sentence
    return True


def _kv_statements(key: str, value: str, title: str, heading: str) -> list[Statement]:
    """One attribute line → its statement (with the attribute) and any sentences that ride along."""
    rest: list[str] = []
    parts = _SENTENCE.split(value, maxsplit=1)
    if len(parts) == 2:
        value, rest = parts[0], [parts[1]]
    value = value.rstrip(".").strip()
    pieces = [p.strip() for p in re.split(r"\s+·\s+", value)]
    value = pieces[0]
    for extra in pieces[1:]:
        m = _KV.match(extra)
        if m and _kv_key(m.group(1)):
            rest.append(extra)
    aside = re.search(r"\s*\(([^()]*)\)\s*$", value)
    if aside and len(aside.group(1).split()) >= 4:  # "(Tobiah Reinholt has moved to …)": a remark, not the value
        rest.append(aside.group(1))
        value = value[: aside.start()].strip()
    out: list[Statement] = []
    if len(value.split()) > 8:  # a sentence after a label: its spans are the answers
        out.append(Statement(f"{key}: {value}", title, heading))
    else:
        st = Statement(f"{key}: {value}", title, heading)
        if _value_ok(value):
            st.kv.append(("", key, value, "", True))
        out.append(st)
    for r in rest:
        m = _KV.match(r)
        if m and _kv_key(m.group(1)) and r in pieces:
            out += _kv_statements(m.group(1).strip(), m.group(2).strip(), title, heading)
        elif len(r.split()) >= 3:
            out.append(Statement(r.rstrip(".") + ".", title, heading))
    return out


_GENERIC_HEADERS = {"value", "values", "rate", "rates", "details", "detail", "description", "notes", "note", "setting",
                    "settings", "amount", "info", "information", ""}


def _table_statements(rows: list[list[str]], title: str, heading: str) -> list[Statement]:
    """Table rows: the first column names the row's subject, the headers its attributes.

    A value that is unique in its column also answers the question backwards ("which vendor has code
    V-2291?"); a repeated one ("Kestrel Yard" for five teams) does not.
    """
    header, body = rows[0], rows[1:]
    if not body:
        return [Statement("; ".join(c for c in header if c), title, heading)]
    width = len(header)
    body = [r + [""] * (width - len(r)) for r in body]
    counts = [{} for _ in range(width)]
    for r in body:
        for j, c in enumerate(r[:width]):
            counts[j][c.lower()] = counts[j].get(c.lower(), 0) + 1
    key_type = header[0]
    out: list[Statement] = []
    for row in body:
        key = row[0]
        if not key:
            continue
        if width == 2 and header[1].lower() in _GENERIC_HEADERS:
            st = Statement(f"{row[0]}: {row[1]}", title, heading)
            if _value_ok(row[1]):
                st.kv.append(("", row[0], row[1], "", False))
        else:
            st = Statement("; ".join(f"{h}: {c}" if h else c for h, c in zip(header, row) if c), title, heading)
            for j, (h, c) in enumerate(zip(header[1:], row[1:]), start=1):
                if h and c and _value_ok(c):
                    unique = counts[j].get(c.lower(), 0) == 1 and counts[0].get(key.lower(), 0) == 1
                    st.kv.append((key, h, c, key_type, unique and len(c.split()) <= 6))
        out.append(st)
    return out


def statements(text: str, title: str, spans: bool = True) -> list[Statement]:
    """The statements of a chunk, each with its title and heading (``spans``: and each sentence's
    answer candidates, which only fact-finding needs)."""
    out: list[Statement] = []
    heading = ""
    lines = text.split("\n")
    i = 0
    if lines and lines[0].strip() == "---":  # YAML-ish front matter
        j = 1
        while j < len(lines) and lines[j].strip() != "---":
            m = _FRONT.match(lines[j].strip())
            if m and m.group(1).strip().lower() not in ("title", "layout", "tags", "status"):
                k, v = m.group(1).strip(), _plain(m.group(2))
                st = Statement(f"{k}: {v}", title)
                if _value_ok(v):
                    st.kv.append(("", k, v, "", False))
                out.append(st)
            j += 1
        i = j + 1
    lines = [ln.rstrip() for ln in lines[:i]] + _join_wrapped([ln.rstrip() for ln in lines[i:]])
    table: list[list[str]] = []

    def flush_table() -> None:
        nonlocal table
        if table:
            out.extend(_table_statements(table, title, heading))
            table = []

    def next_nonblank(k: int) -> str:
        while k < len(lines) and not lines[k].strip():
            k += 1
        return lines[k].strip() if k < len(lines) else ""

    while i < len(lines):
        raw = lines[i].strip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        i += 1
        if raw.count("|") >= 1 and (raw.startswith("|") or " | " in raw):
            if re.fullmatch(r"[|:\-\s]+", raw):
                continue  # markdown separator row
            cells = _split_row(raw)
            while cells and not cells[-1]:
                cells.pop()
            if cells:
                table.append(cells)
            continue
        if not raw:
            continue  # blank lines between rows (HTML tables) do not end a table
        flush_table()
        if _SETEXT.match(raw):
            continue
        m = _HEADING.match(raw)
        if m or (nxt and _SETEXT.match(nxt) and len(raw.split()) <= 12):
            heading = _heading_text(m.group(1) if m else raw)
            if heading.lower() == title.lower():
                heading = ""
            continue
        line = _plain(raw)
        nm = _NUMBERED_HEADING.match(line)
        if (nm and len(line.split()) <= 6) or (line.isupper() and len(line.split()) <= 6 and not _KV.match(line)):
            heading = _heading_text(nm.group(1) if nm else line)
            continue
        lm = _LIST.match(line)
        if lm:
            line = lm.group(1).strip()
        elif _looks_like_heading(line, next_nonblank(i)):
            heading = line if line.endswith("?") else _heading_text(line)
            continue
        kv = _KV.match(line)
        if kv and _kv_key(kv.group(1)):
            for st in _kv_statements(kv.group(1).strip(), kv.group(2).strip(), title, heading):
                out.append(st)
            continue
        if len(line.split()) <= 40:
            if len(line.split()) >= 3:
                out.append(Statement(line, title, heading))
            continue
        for sentence in _SENTENCE.split(line):
            if len(sentence.split()) >= 3:
                out.append(Statement(sentence.strip(), title, heading))
    flush_table()
    if spans:
        for st in out:
            st.by_sentence = sentence_spans(st.text)
    return out


def sentence_spans(text: str) -> list[list[Span]]:
    """Each sentence's answer candidates. A line of several sentences ("… recorded an excursion. The
    highest reading was 11.4 °C and the tote was above 8 °C for 52 minutes.") is one statement, kept
    whole for its context; its spans are found sentence by sentence so the first sentence's names do
    not use up the statement's share and leave the second's values without a fact, and a capitalised
    sentence start is not read as part of a name."""
    return [find_spans(sentence) for sentence in _SENTENCE.split(text) if sentence.strip()]


def fact_id(doc_id: str, form: str, statement: str, value: str, subject: str = "", attribute: str = "") -> str:
    return hashlib.sha256(f"{doc_id}|{form}|{statement}|{subject}|{attribute}|{value}".encode()).hexdigest()[:16]


def atomic_facts(st: Statement, doc_id: str = "", chunk_oid: str = "", spans_per_sentence: int = 3) -> list[AtomicFact]:
    """The values a statement gives: its attributes (``kv``, and read backwards for entity values)
    and, for a sentence, its answer spans (up to ``spans_per_sentence`` of each of its sentences)."""
    out: list[AtomicFact] = []
    statement = st.statement
    for subject, attribute, value, stype, reversible in st.kv:
        entity_heading = names_entity(st.heading)
        subj = subject or (st.heading if entity_heading else st.title)
        is_title = not subject and not entity_heading
        kind = _value_kind(value)
        out.append(AtomicFact(fact_id(doc_id, "kv", statement, value, subj, attribute), "kv", value, kind, statement, st.text,
                              st.title, st.heading, subj, attribute, stype, is_title, False, doc_id, chunk_oid))
        entity_subject = bool(stype) or _value_kind(subj) in ENTITY_KINDS
        if reversible and not is_title and entity_subject and (kind in ENTITY_KINDS or stype) and len(subj.split()) <= 6:
            out.append(AtomicFact(fact_id(doc_id, "kv-reverse", statement, subj, value, attribute), "kv", subj,
                                  _value_kind(subj), statement, st.text, st.title, st.heading, value, attribute, stype,
                                  False, True, doc_id, chunk_oid))
    if not st.kv:
        seen: set[str] = set()
        for spans in st.by_sentence:
            taken = 0
            for sp in spans:
                if taken >= spans_per_sentence:
                    break
                if sp.text.lower() in st.title.lower() and sp.kind in ENTITY_KINDS and len(st.spans) > 1:
                    continue  # the document's own name is rarely the answer a statement is for
                if sp.text in seen:
                    continue  # a value two sentences repeat is one fact (its cloze is the first sentence's)
                seen.add(sp.text)
                out.append(AtomicFact(fact_id(doc_id, "span", statement, sp.text), "span", sp.text, sp.kind, statement,
                                      st.text, st.title, st.heading, doc_id=doc_id, chunk_oid=chunk_oid))
                taken += 1
    return out


def names_entity(text: str) -> bool:
    """Whether a heading (or a cell) is the name of a thing — a team, a site, a code — rather than
    a topic ("Useful contacts"): what its lines are about."""
    return bool(text) and _value_kind(text) in ENTITY_KINDS


def _value_kind(value: str) -> str:
    spans = find_spans(value, limit=1)
    if spans and len(spans[0].text) >= 0.6 * len(value.strip()):
        return spans[0].kind
    return "text"


def title_entities(title: str) -> list[str]:
    """Names and codes in a document's title: what its title-level facts are about (CR-3 in
    "SOP-CR-03: Operating cold room CR-3")."""
    return [s.text for s in find_spans(title, limit=6) if s.kind in ENTITY_KINDS and len(s.text) >= 3]


# --------------------------------------------------------------------------- compatibility
Fact = Statement


def facts_from_text(text: str, title: str) -> list[Statement]:
    return statements(text, title)


def entities(facts: list[Statement]) -> dict[str, list[Statement]]:
    """Names and codes mentioned in the statements, each with the statements that mention it."""
    found: dict[str, list[Statement]] = {}
    for f in facts:
        for s in f.spans:
            if s.kind in ENTITY_KINDS:
                found.setdefault(s.text, []).append(f)
    return found
