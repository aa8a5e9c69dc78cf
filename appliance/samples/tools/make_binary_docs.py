"""Generate the binary (.docx / .pdf) documents of the halq-wiki sample corpus.

The text of every document is embedded below, so the output is reproducible:
running this script twice produces byte-identical files (fixed document
metadata, fixed zip timestamps, fixed PDF creation date).

Usage:
    .venv/bin/python samples/tools/make_binary_docs.py

Requires python-docx and fpdf2. PDFs use a core font, so their text must be
latin-1 only.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path

from docx import Document
from fpdf import FPDF

CORPUS = Path(__file__).resolve().parent.parent / "halq-wiki"
FIXED = dt.datetime(2025, 1, 1, 0, 0, 0, tzinfo=dt.timezone.utc)

# --------------------------------------------------------------------------
# Document content. Block kinds: ("h1"|"h2", text), ("p", text),
# ("ul", [items]), ("table", [header, row, row, ...])
# --------------------------------------------------------------------------

ONBOARDING = [
    ("h1", "New starter onboarding checklist"),
    ("p", "Owner: People Team (Fenna Dujardin). Last updated 20 February 2025."),
    ("p", "This checklist is for new employees of Halvorsen & Quist Medical "
          "Logistics and their line managers. Tick each item off in Hatchway "
          "when it is done."),
    ("h2", "Day 1"),
    ("ul", [
        "Collect your badge from reception at Kestrel Yard. Badges are printed from Sentra.",
        "Attend the safety induction, delivered by the Site Safety team. Nobody may "
        "enter the warehouse floor before completing it.",
        "Collect your laptop from the helpdesk in the Heron wing.",
        "Your line manager assigns you a buddy for your first month.",
    ]),
    ("h2", "First week"),
    ("ul", [
        "Join the company induction. It runs every Tuesday at 09:30 in meeting room Heron 2.",
        "Set up the Keyhaven authenticator app with the helpdesk.",
        "Read the shipping checklist if you will work in the warehouse.",
    ]),
    ("h2", "First 14 days"),
    ("ul", [
        "Complete the mandatory training course COLDSAFE-101 within 14 days of your start date.",
        "Check your personal and bank details in Hatchway.",
    ]),
    ("h2", "Useful contacts"),
    ("table", [
        ["Who", "For what", "How"],
        ["Helpdesk", "Laptop, accounts, VPN", "Extension 4410"],
        ["People Team", "Contract, payroll, leave", "people@halq.example"],
        ["Travel desk", "Business trips", "travel@halq.example"],
    ]),
]

COLD_ROOM_SOP = [
    ("h1", "SOP-CR-03: Operating cold room CR-3"),
    ("p", "Owner: Cold Chain Engineering (Ottilie Brannstrand). Revision 4, "
          "issued 2 December 2024."),
    ("h2", "1. Purpose"),
    ("p", "Cold room CR-3 at Kestrel Yard stores temperature-sensitive "
          "medicines before dispatch. This SOP describes its settings and what "
          "to do when something goes wrong."),
    ("h2", "2. Settings"),
    ("table", [
        ["Parameter", "Value"],
        ["Setpoint", "5 °C"],
        ["High temperature alarm", "8 °C"],
        ["Low temperature alarm", "2 °C"],
        ["Defrost cycle", "every 6 hours, 20 minutes each"],
    ]),
    ("h2", "3. Door discipline"),
    ("p", "The door of CR-3 may be open for at most 3 minutes at a time. Use "
          "the strip curtain. Never prop the door open."),
    ("h2", "4. Temperature excursions"),
    ("p", "Any temperature excursion in CR-3 must be reported within 1 hour to "
          "the Kestrel Yard site manager and logged in Frostline. Move the "
          "stock to CR-2 if the excursion lasts longer than 15 minutes."),
    ("h2", "5. Cleaning"),
    ("p", "CR-3 is cleaned every Sunday. Cleaning is logged on the sheet "
          "next to the door."),
]

FLEET = [
    ("h1", "Fleet register and maintenance"),
    ("p", "Owner: Fleet Dispatch (Marek Tollefsrud). Issued 10 January 2025."),
    ("h2", "Vehicles"),
    ("table", [
        ["Vehicle", "Type", "Home site", "Reefer unit"],
        ["TR-604", "Refrigerated trailer", "Gannet Point", "Polarmark R7"],
        ["TR-608", "Refrigerated trailer", "Little Osier", "Polarmark R7"],
        ["TR-611", "Refrigerated trailer", "Kestrel Yard", "Polarmark R5"],
        ["VN-12", "Ambient van", "Kestrel Yard", "none"],
        ["VN-14", "Ambient van", "Kestrel Yard", "none"],
    ]),
    ("h2", "Maintenance"),
    ("p", "All trailers and vans are serviced by Harrowgate Axle & Reefer Ltd. "
          "The service interval is every 20,000 km or 6 months, whichever "
          "comes first."),
    ("p", "Reefer units are supplied by Polarmark Refrigeration. Reefer faults "
          "are reported to Fleet Dispatch, who book the repair."),
    ("h2", "Daily checks"),
    ("ul", [
        "Drivers do a walkaround check before every departure.",
        "Since INC-2025-017 the walkaround includes a check of the trailer door seals.",
        "Breakdowns: call Fleet Dispatch control on extension 4720.",
    ]),
]

FISCAL = [
    ("h1", "Fiscal calendar FY2025/26"),
    ("p", "Owner: Finance Ops (Cosima Varga-Lind). Issued 3 March 2025."),
    ("h2", "Fiscal year"),
    ("p", "The fiscal year starts on 1 April. FY2025/26 runs from 1 April 2025 "
          "to 31 March 2026."),
    ("table", [
        ["Quarter", "Quarter end"],
        ["Q1", "30 June 2025"],
        ["Q2", "30 September 2025"],
        ["Q3", "31 December 2025"],
        ["Q4", "31 March 2026"],
    ]),
    ("h2", "Deadlines"),
    ("ul", [
        "Month-end close: 4th working day of the following month.",
        "Budget submission deadline for FY2026/27: 15 January 2026.",
        "All invoices for a month must be in Ledgerbay by the 2nd working day.",
    ]),
    ("h2", "Cost centres"),
    ("table", [
        ["Cost centre", "Team"],
        ["CC-120", "Finance Ops"],
        ["CC-130", "People Team"],
        ["CC-220", "Fleet Dispatch"],
        ["CC-310", "Platform Services"],
        ["CC-410", "Cold Chain Engineering"],
        ["CC-510", "Site Safety"],
    ]),
]


# --------------------------------------------------------------------------
# DOCX
# --------------------------------------------------------------------------

def _normalise_zip(data: bytes) -> bytes:
    """Rewrite a zip with fixed timestamps so output is byte-identical."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, src.read(info.filename))
    return out.getvalue()


def write_docx(blocks, path: Path, author: str) -> None:
    doc = Document()
    cp = doc.core_properties
    cp.author = author
    cp.last_modified_by = author
    cp.created = FIXED.replace(tzinfo=None)
    cp.modified = FIXED.replace(tzinfo=None)
    cp.revision = 1
    cp.title = blocks[0][1]
    for kind, content in blocks:
        if kind == "h1":
            doc.add_heading(content, level=1)
        elif kind == "h2":
            doc.add_heading(content, level=2)
        elif kind == "p":
            doc.add_paragraph(content)
        elif kind == "ul":
            for item in content:
                doc.add_paragraph(item, style="List Bullet")
        elif kind == "table":
            table = doc.add_table(rows=len(content), cols=len(content[0]))
            table.style = "Table Grid"
            for r, row in enumerate(content):
                for c, cell in enumerate(row):
                    table.cell(r, c).text = cell
        else:
            raise ValueError(kind)
    buf = io.BytesIO()
    doc.save(buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_normalise_zip(buf.getvalue()))


# --------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------

def write_pdf(blocks, path: Path, author: str) -> None:
    pdf = FPDF(format="A4")
    pdf.creation_date = FIXED
    pdf.set_author(author)
    pdf.set_title(blocks[0][1])
    pdf.set_creator("make_binary_docs.py")
    pdf.set_producer("fpdf2")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    for kind, content in blocks:
        if kind == "h1":
            pdf.set_font("Helvetica", "B", 16)
            pdf.multi_cell(width, 9, content, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
        elif kind == "h2":
            pdf.ln(2)
            pdf.set_font("Helvetica", "B", 12)
            pdf.multi_cell(width, 7, content, new_x="LMARGIN", new_y="NEXT")
        elif kind == "p":
            pdf.set_font("Helvetica", "", 11)
            pdf.multi_cell(width, 6, content, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        elif kind == "ul":
            pdf.set_font("Helvetica", "", 11)
            for item in content:
                pdf.multi_cell(width, 6, "- " + item, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        elif kind == "table":
            pdf.set_font("Helvetica", "", 10)
            col_w = width / len(content[0])
            for r, row in enumerate(content):
                pdf.set_font("Helvetica", "B" if r == 0 else "", 10)
                for cell in row:
                    pdf.cell(col_w, 7, cell, border=1)
                pdf.ln(7)
            pdf.ln(2)
        else:
            raise ValueError(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))


def main() -> None:
    write_docx(ONBOARDING, CORPUS / "hr" / "onboarding-checklist.docx", "People Team")
    write_docx(COLD_ROOM_SOP, CORPUS / "ops" / "cold-room-sop.docx", "Cold Chain Engineering")
    write_pdf(FLEET, CORPUS / "ops" / "fleet-register.pdf", "Fleet Dispatch")
    write_pdf(FISCAL, CORPUS / "finance" / "fiscal-calendar.pdf", "Finance Ops")
    print("wrote 2 docx and 2 pdf files under", CORPUS)


if __name__ == "__main__":
    main()
