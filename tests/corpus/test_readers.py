import io
from pathlib import Path

import pytest

from appliance.corpus.readers import UnreadableInput, extract
from tests.conftest import SAMPLE_CORPUS


def make_docx(paragraphs: list[str], table: list[list[str]] | None = None) -> bytes:
    from docx import Document

    doc = Document()
    doc.add_heading(paragraphs[0], level=1)
    for p in paragraphs[1:]:
        doc.add_paragraph(p)
    if table:
        t = doc.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                t.cell(r, c).text = cell
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def make_pdf(lines: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    for line in lines:
        pdf.multi_cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def test_markdown_title_and_text() -> None:
    e = extract(b"# Travel policy\n\nPer diem is 52 EUR.\r\n\r\n\r\n\r\nEnd.", Path("x.md"))
    assert e.title == "Travel policy"
    assert e.text == "# Travel policy\n\nPer diem is 52 EUR.\n\nEnd."
    assert e.media_type == "text/markdown"


def test_html_drops_scripts_and_navigation() -> None:
    html = b"""<html><head><title>Vendors</title><style>p{}</style><script>var tracking=1;</script></head>
    <body><nav>Home | Wiki</nav><h1>Vendor list</h1><p>Frostline supplies FT-9 tags.</p>
    <table><tr><th>Vendor</th><th>Contact</th></tr><tr><td>Frostline</td><td>Ada Moor</td></tr></table></body></html>"""
    e = extract(html, Path("v.html"))
    assert e.title == "Vendors"
    assert "Frostline supplies FT-9 tags." in e.text
    assert "Frostline | Ada Moor" in e.text
    assert "tracking" not in e.text and "Home | Wiki" not in e.text


def test_docx_paragraphs_and_tables() -> None:
    data = make_docx(["Cold room SOP", "Door alarm after 90 seconds."], [["Room", "Temp"], ["CR-3", "2-8 C"]])
    e = extract(data, Path("sop.docx"))
    assert e.title == "Cold room SOP"
    assert "Door alarm after 90 seconds." in e.text and "CR-3 | 2-8 C" in e.text


def test_pdf_text() -> None:
    e = extract(make_pdf(["Fleet register", "Van KY-204 is serviced every 20000 km."]), Path("fleet.pdf"))
    assert "KY-204" in e.text


def test_utf16_and_cp1252_text() -> None:
    assert "Zürich" in extract("Office: Zürich".encode("utf-16"), Path("a.txt")).text
    assert "café" in extract("café menu".encode("cp1252"), Path("b.txt")).text


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("blob.txt", bytes(range(256)) * 40, "binary"),
        ("image.png", b"\x89PNG\r\n", "unsupported file type"),
        ("empty.md", b"   \n\n", "no text"),
        ("broken.pdf", b"%PDF-1.4 garbage", "not a readable PDF"),
        ("broken.docx", b"PK\x03\x04 not a zip", "not a readable .docx"),
    ],
)
def test_unreadable_inputs_are_named_with_reason(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(UnreadableInput, match=reason) as exc:
        extract(data, Path(name))
    assert name in str(exc.value) and "\n" not in str(exc.value)


def test_image_only_pdf_is_refused() -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    with pytest.raises(UnreadableInput, match="OCR"):
        extract(bytes(pdf.output()), Path("scan.pdf"))


def test_every_sample_document_extracts() -> None:
    files = [p for p in SAMPLE_CORPUS.rglob("*") if p.is_file()]
    assert len(files) >= 20
    kinds = {p.suffix for p in files}
    assert {".md", ".txt", ".html", ".pdf", ".docx"} <= kinds
    for p in files:
        e = extract(p.read_bytes(), p)
        assert e.text and e.title
