"""Turn a file's bytes into plain text, in memory only (no temp files: they would be plaintext).

Supported: .txt, .md, .html/.htm, .pdf, .docx. Anything else, binary data passed off as text,
encrypted or image-only PDFs, and oversized files are refused with a reason the operator can act on.
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import MemoError

MEDIA_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


SHORT_NAMES = {"text/plain": "txt", "text/markdown": "md", "text/html": "html", "application/pdf": "pdf",
               MEDIA_TYPES[".docx"]: "docx"}


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


def _looks_binary(data: bytes) -> bool:
    sample = data[:8192]
    if b"\0" in sample and not (sample.startswith((b"\xff\xfe", b"\xfe\xff"))):
        return True
    control = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    return bool(sample) and control / len(sample) > 0.05


def decode_text(data: bytes, name: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if _looks_binary(data):
        raise UnreadableInput(f"{name}: looks like binary data, not text; convert it to txt, md, html, pdf or docx")
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
        m = re.match(r"^#{1,2}\s+(.+?)\s*#*$", line.strip())
        if m:
            return m.group(1)
    return None


def _read_html(data: bytes, name: str) -> tuple[str, str | None]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode_text(data, name), "html.parser")
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


def _read_pdf(data: bytes, name: str) -> tuple[str, str | None]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnreadableInput(f"{name}: PDF is password-protected; export an unprotected copy and ingest that")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = (reader.metadata.title if reader.metadata else None) or None
    except UnreadableInput:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnreadableInput(f"{name}: not a readable PDF ({exc.__class__.__name__}); re-export it or convert it to text") from None
    text = "\n\n".join(pages)
    if not text.strip():
        raise UnreadableInput(f"{name}: PDF has no extractable text (scanned images?); OCR it first")
    return text, title


def _read_docx(data: bytes, name: str) -> tuple[str, str | None]:
    import zipfile

    from docx import Document

    try:
        doc = Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UnreadableInput(f"{name}: not a readable .docx ({exc.__class__.__name__}); re-save it from Word") from None
    parts: list[str] = []
    title = doc.core_properties.title or None
    for block in doc.element.body.iterchildren():
        tag = block.tag.rsplit("}", 1)[-1]
        if tag == "p":
            text = "".join(t.text or "" for t in block.iter() if t.tag.endswith("}t"))
            parts.append(text)
        elif tag == "tbl":
            for row in block.iter():
                if row.tag.endswith("}tr"):
                    cells = []
                    for cell in row.iter():
                        if cell.tag.endswith("}tc"):
                            cells.append("".join(t.text or "" for t in cell.iter() if t.tag.endswith("}t")).strip())
                    parts.append(" | ".join(cells))
    if not title:
        for p in doc.paragraphs:
            if p.style is not None and p.style.name.lower().startswith(("title", "heading")) and p.text.strip():
                title = p.text.strip()
                break
    return "\n\n".join(parts), title


def extract(data: bytes, path: Path) -> Extracted:
    """Extract normalised text and a title; raise :class:`UnreadableInput` with the reason."""
    name = str(path)
    media = media_type_for(path)
    if media is None:
        raise UnreadableInput(
            f"{name}: unsupported file type {path.suffix or '(none)'}; supported: {', '.join(sorted(MEDIA_TYPES))}"
        )
    title: str | None
    if media == "application/pdf":
        raw, title = _read_pdf(data, name)
    elif media.endswith("wordprocessingml.document"):
        raw, title = _read_docx(data, name)
    elif media == "text/html":
        raw, title = _read_html(data, name)
    else:
        raw = decode_text(data, name)
        title = _markdown_title(raw) if media == "text/markdown" else None
    text = normalise(raw)
    if not text:
        raise UnreadableInput(f"{name}: contains no text")
    if not title:
        first = text.split("\n", 1)[0].lstrip("# ").strip()
        title = first if 0 < len(first) <= 80 else path.stem.replace("-", " ").replace("_", " ")
    return Extracted(text=text, title=normalise(title)[:200], media_type=media)
