"""Turn a file's bytes into plain text, in memory only (no temp files: they would be plaintext).

Supported: the kinds in :data:`READERS` (.txt, .md, .html/.htm, .pdf, .docx). Anything else,
binary data passed off as text, encrypted or image-only PDFs, and oversized files are refused
with a reason the operator can act on.
The input is untrusted: a .docx is measured before it is unpacked (declared sizes, member count,
no DTD or entity declarations), HTML nesting and the extracted text are bounded (see
:class:`appliance.corpus.limits.ParseLimits`), and any parser failure becomes a one-line reason.
Ingest runs these functions in a worker process (:mod:`appliance.corpus.sandbox`) that also
bounds time and memory.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.corpus.limits import MIB, ParseLimits
from appliance.errors import MemoError


@dataclass(frozen=True)
class Reader:
    """One kind of document the appliance reads: its short name, media type, file suffixes, and
    the function that turns its bytes into (text, title or None)."""

    name: str
    media_type: str
    suffixes: tuple[str, ...]
    read: Callable[[bytes, str, ParseLimits], tuple[str, str | None]]


def short_type(media_type: str) -> str:
    return SHORT_NAMES.get(media_type, media_type)


class UnreadableInput(MemoError):
    """The file cannot be ingested; the message says why and what to do."""


@dataclass(frozen=True)
class Extracted:
    text: str
    title: str
    media_type: str


def media_type_for(path: Path) -> str | None:
    return MEDIA_TYPES.get(path.suffix.lower())


def reader_names() -> str:
    """``txt, md, html, pdf, docx``: how help texts and messages name what can be ingested."""
    return ", ".join(r.name for r in READERS)


def _looks_binary(data: bytes) -> bool:
    sample = data[:8192]
    if b"\0" in sample and not (sample.startswith((b"\xff\xfe", b"\xfe\xff"))):
        return True
    control = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    return bool(sample) and control / len(sample) > 0.05


def decode_text(data: bytes, name: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")  # a lone surrogate or odd length: U+FFFD, not an error
    if _looks_binary(data):
        raise UnreadableInput(f"{name}: looks like binary data, not text; convert it to one of {reader_names()}")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def normalise(text: str) -> str:
    """NFC, unified newlines, no trailing spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u00a0", " ").replace("\u200b", "")
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _markdown_title(text: str) -> str | None:
    for line in text.splitlines():
        if len(line) > 400:  # the pattern backtracks quadratically on a long run of spaces; no title is that long
            continue
        m = re.match(r"^#{1,2}\s+(.+?)\s*#*$", line.strip())
        if m:
            return m.group(1)
    return None


def _depth(root: object) -> int:
    """Element nesting of a parsed tree, walked without recursion."""
    best = 0
    stack = [(root, 0)]
    while stack:
        node, d = stack.pop()
        best = max(best, d)
        stack.extend((c, d + 1) for c in getattr(node, "contents", ()) if hasattr(c, "contents"))
    return best


def _read_html(data: bytes, name: str, limits: ParseLimits) -> tuple[str, str | None]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode_text(data, name), "html.parser")
    depth = _depth(soup)
    if depth > limits.depth:
        raise UnreadableInput(f"{name}: HTML nests elements {depth} deep (limit {limits.depth}); "
                              "save it as plain text or simplify it")
    for tag in soup(["script", "style", "noscript", "template", "svg", "nav", "footer", "header"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    if soup.title:
        soup.title.decompose()
    for cell in soup.find_all(["td", "th"]):
        cell.append(" | ")
    blocks = soup.find_all(["p", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt", "dd", "blockquote"])
    for block in blocks:
        block.insert_before("\n\n")
        block.append("\n\n")
    text = soup.get_text()
    if not title:
        h1 = soup.find(["h1", "h2"])
        title = h1.get_text(" ", strip=True) if h1 else None
    return text, title


_PDF_GAP = re.compile(r"\S {3,}\S")


def _pdf_columns(text: str) -> str:
    """Layout-mode text with its table rows made explicit: cells that the page sets apart by wide
    gaps are joined with `` | `` (the table form the other readers produce), so a row's cells stay
    apart instead of running together into one line of words."""
    out = []
    for line in text.split("\n"):
        line = line.rstrip()
        if _PDF_GAP.search(line.strip()):
            out.append(" | ".join(c for c in re.split(r" {3,}", line.strip()) if c))
        else:
            out.append(" ".join(line.split()))
    return "\n".join(out)


def _too_much_text(name: str, chars: int, limits: ParseLimits) -> UnreadableInput:
    return UnreadableInput(f"{name}: yields more than {limits.text_chars // MIB} Mi characters of text "
                           f"({chars:,} so far); split the document")


def _read_pdf(data: bytes, name: str, limits: ParseLimits) -> tuple[str, str | None]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnreadableInput(f"{name}: PDF is password-protected; export an unprotected copy and ingest that")
        pages: list[str] = []
        chars = 0
        for page in reader.pages:
            pages.append(_pdf_columns(page.extract_text(extraction_mode="layout") or ""))
            chars += len(pages[-1])
            if chars > limits.text_chars:
                raise _too_much_text(name, chars, limits)
        title = (reader.metadata.title if reader.metadata else None) or None
    except (UnreadableInput, MemoryError, RecursionError):
        raise
    except Exception as exc:  # a malformed PDF fails in many ways inside pypdf: each is a reason, not a crash
        raise UnreadableInput(f"{name}: not a readable PDF ({exc.__class__.__name__}); re-export it or convert it to text") from None
    text = "\n\n".join(pages)
    if not text.strip():
        raise UnreadableInput(f"{name}: PDF has no extractable text (scanned images?); OCR it first")
    return text, title


_DTD = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


def _check_docx(data: bytes, name: str, limits: ParseLimits) -> None:
    """Measure the package before anything unpacks it: a zip's declared sizes are what it may
    inflate to (zipfile stops at the declared size and fails the CRC beyond it)."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = z.infolist()
            if len(members) > limits.zip_members:
                raise UnreadableInput(f"{name}: .docx holds {len(members):,} parts (limit {limits.zip_members:,}); re-save it from Word")
            total = sum(m.file_size for m in members)
            xml = [m for m in members if m.filename.lower().endswith((".xml", ".rels"))]
            xml_total = sum(m.file_size for m in xml)
            if total > limits.unpacked_bytes or xml_total > limits.xml_bytes:
                raise UnreadableInput(
                    f"{name}: .docx of {len(data) / MIB:.1f} MiB unpacks to {total / MIB:,.0f} MiB ({xml_total / MIB:,.0f} MiB "
                    f"of XML; limits {limits.unpacked_bytes // MIB} MiB and {limits.xml_bytes // MIB} MiB of XML): a zip bomb "
                    "or an oversized document; split it")
            for m in xml:
                with z.open(m) as fh:
                    if _DTD.search(fh.read()):  # bounded: the declared sizes passed the limit above
                        raise UnreadableInput(f"{name}: .docx part {m.filename} declares a DTD or entities (Word never "
                                              "writes them: entity expansion attack?); re-save it from Word")
    except UnreadableInput:
        raise
    except Exception as exc:  # a broken zip directory, a bad CRC, an unsupported compression method
        raise UnreadableInput(f"{name}: not a readable .docx ({exc.__class__.__name__}); re-save it from Word") from None


def _read_docx(data: bytes, name: str, limits: ParseLimits) -> tuple[str, str | None]:
    from docx import Document

    _check_docx(data, name, limits)
    try:
        doc = Document(io.BytesIO(data))
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # lxml.etree.XMLSyntaxError, a missing part, a malformed relationship ...
        raise UnreadableInput(f"{name}: not a readable .docx ({exc.__class__.__name__}); re-save it from Word") from None
    try:
        return _docx_text(doc, name, limits)
    except (UnreadableInput, MemoryError, RecursionError):
        raise
    except Exception as exc:  # an element where python-docx expects another (AttributeError), ...
        raise UnreadableInput(f"{name}: not a readable .docx ({exc.__class__.__name__}); re-save it from Word") from None


def _docx_text(doc, name: str, limits: ParseLimits) -> tuple[str, str | None]:  # noqa: ANN001 - python-docx's Document
    parts: list[str] = []
    chars = 0
    title = doc.core_properties.title or None
    for block in doc.element.body.iterchildren():
        tag = block.tag.rsplit("}", 1)[-1]
        if chars > limits.text_chars:
            raise _too_much_text(name, chars, limits)
        if tag == "p":
            text = "".join(t.text or "" for t in block.iter() if t.tag.endswith("}t"))
            parts.append(text)
            chars += len(text)
        elif tag == "tbl":
            for row in block.iter():
                if row.tag.endswith("}tr"):
                    cells = []
                    for cell in row.iter():
                        if cell.tag.endswith("}tc"):
                            cells.append("".join(t.text or "" for t in cell.iter() if t.tag.endswith("}t")).strip())
                    parts.append(" | ".join(cells))
                    chars += len(parts[-1])
    if not title:
        for p in doc.paragraphs:
            if p.style is not None and p.style.name.lower().startswith(("title", "heading")) and p.text.strip():
                title = p.text.strip()
                break
    return "\n\n".join(parts), title


def extract(data: bytes, path: Path, limits: ParseLimits | None = None) -> Extracted:
    """Extract normalised text and a title; raise :class:`UnreadableInput` with the reason."""
    limits = limits or ParseLimits()
    name = str(path)
    media = media_type_for(path)
    if media is None:
        raise UnreadableInput(
            f"{name}: unsupported file type {path.suffix or '(none)'}; supported: {', '.join(sorted(MEDIA_TYPES))}"
        )
    raw, title = _BY_MEDIA_TYPE[media].read(data, name, limits)
    if len(raw) > limits.text_chars:
        raise _too_much_text(name, len(raw), limits)
    text = normalise(raw).encode("utf-8", "replace").decode()  # no lone surrogate survives into the vault
    if not text:
        raise UnreadableInput(f"{name}: contains no text")
    if not title:
        first = text.split("\n", 1)[0].lstrip("# ").strip()
        title = first if 0 < len(first) <= 80 else path.stem.replace("-", " ").replace("_", " ")
    return Extracted(text=text, title=normalise(title).encode("utf-8", "replace").decode()[:200], media_type=media)


def _read_text(data: bytes, name: str, _limits: ParseLimits) -> tuple[str, str | None]:
    return decode_text(data, name), None


def _read_markdown(data: bytes, name: str, _limits: ParseLimits) -> tuple[str, str | None]:
    raw = decode_text(data, name)
    return raw, _markdown_title(raw)


READERS: tuple[Reader, ...] = (
    Reader("txt", "text/plain", (".txt", ".text"), _read_text),
    Reader("md", "text/markdown", (".md", ".markdown"), _read_markdown),
    Reader("html", "text/html", (".html", ".htm"), _read_html),
    Reader("pdf", "application/pdf", (".pdf",), _read_pdf),
    Reader("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", (".docx",), _read_docx),
)
"""Every document reader, in the order help texts list them: ingest, the parser sandbox, the CLI
and the messages about unsupported files all derive from this one list."""

MEDIA_TYPES = {suffix: r.media_type for r in READERS for suffix in r.suffixes}
SHORT_NAMES = {r.media_type: r.name for r in READERS}
_BY_MEDIA_TYPE = {r.media_type: r for r in READERS}
