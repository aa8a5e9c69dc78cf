"""Files built to hurt a document ingester, for the hostile-corpus tests and ``bench.hostile_ingest``.

Each builder writes real files with the standard library (zipfile, os.mkfifo, os.symlink): a
zip-bomb .docx, one whose zip directory lies about its sizes, entity expansion ("billion
laughs"), a 10 MB XML text node, broken and body-less .docx, a PDF with a self-referencing page
tree and a truncated one, HTML nested 20,000 tables deep, a symlink out of the folder, a FIFO, a
device node, and file names that are not UTF-8.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
)
RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="word/document.xml"/></Relationships>'
)


def _docx(path: Path, document: Callable[[zipfile.ZipFile], None]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", CONTENT_TYPES)
        z.writestr("_rels/.rels", RELS)
        document(z)
    return path


def docx_text(path: Path, text: str) -> Path:
    """A small, valid .docx (the control case)."""
    body = f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{W}"><w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>'
    return _docx(path, lambda z: z.writestr("word/document.xml", body))


def zip_bomb_docx(path: Path, unpacked_mb: int = 300) -> Path:
    """~1 MB on disk, ``unpacked_mb`` MB of paragraph XML inside (streamed: never in memory here)."""
    para = f"<w:p><w:r><w:t>{'A' * 200}</w:t></w:r></w:p>".encode()
    block = para * (1_048_576 // len(para) + 1)

    def write(z: zipfile.ZipFile) -> None:
        info = zipfile.ZipInfo("word/document.xml")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as fh:
            fh.write(f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{W}"><w:body>'.encode())
            for _ in range(unpacked_mb):
                fh.write(block[:1_048_576 - 1_048_576 % len(para)])
            fh.write(b"</w:body></w:document>")

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", CONTENT_TYPES)
        z.writestr("_rels/.rels", RELS)
        write(z)
    return path


def lying_zip_docx(path: Path, unpacked_mb: int = 64) -> Path:
    """A bomb whose zip headers claim document.xml holds 1 KiB: a size check alone would pass it."""
    zip_bomb_docx(path, unpacked_mb)
    data = bytearray(path.read_bytes())
    name = b"word/document.xml"
    # central directory entries: uncompressed size at offset 24 (or 0xFFFFFFFF and the real one in the zip64 extra)
    pos = 0
    while True:
        pos = data.find(b"PK\x01\x02", pos)
        if pos < 0:
            break
        n = struct.unpack_from("<H", data, pos + 28)[0]
        extra = struct.unpack_from("<H", data, pos + 30)[0]
        if data[pos + 46: pos + 46 + n] == name:
            if struct.unpack_from("<I", data, pos + 24)[0] == 0xFFFFFFFF:  # zip64: the real sizes sit in the extra field
                xpos = pos + 46 + n
                end = xpos + extra
                while xpos < end:
                    tag, size = struct.unpack_from("<HH", data, xpos)
                    if tag == 0x0001:
                        struct.pack_into("<Q", data, xpos + 4, 1024)
                        break
                    xpos += 4 + size
            else:
                struct.pack_into("<I", data, pos + 24, 1024)
        pos += 4
    path.write_bytes(bytes(data))
    return path


def billion_laughs_docx(path: Path) -> Path:
    """Entity expansion: ten levels of ten references each, a gigabyte if anything expands it."""
    ents = ['<!ENTITY lol "lol">'] + [f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)]
    body = (f'<?xml version="1.0"?><!DOCTYPE w:document [{"".join(ents)}]>'
            f'<w:document xmlns:w="{W}"><w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>')
    return _docx(path, lambda z: z.writestr("word/document.xml", body))


def huge_text_node_docx(path: Path, mb: int = 12) -> Path:
    """One ``w:t`` of ``mb`` MB: beyond libxml2's 10 MB text-node limit."""
    body = f'<?xml version="1.0"?><w:document xmlns:w="{W}"><w:body><w:p><w:r><w:t>{"x" * (mb << 20)}</w:t></w:r></w:p></w:body></w:document>'
    return _docx(path, lambda z: z.writestr("word/document.xml", body))


def broken_xml_docx(path: Path) -> Path:
    body = f'<?xml version="1.0"?><w:document xmlns:w="{W}"><w:body><w:p><w:r><w:t>cut off here'
    return _docx(path, lambda z: z.writestr("word/document.xml", body))


def bodyless_docx(path: Path) -> Path:
    """Well-formed XML without ``w:body``: python-docx then raises AttributeError."""
    body = f'<?xml version="1.0"?><w:document xmlns:w="{W}"><w:background/></w:document>'
    return _docx(path, lambda z: z.writestr("word/document.xml", body))


def not_a_zip_docx(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04" + os.urandom(2000))
    return path


def looping_pdf(path: Path) -> Path:
    """A PDF whose page tree lists itself as its own kid."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path


def truncated_pdf(path: Path) -> Path:
    path.write_bytes(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n2 0 obj\n<< /Type /Pa")
    return path


def deep_html(path: Path, tables: int = 20_000) -> Path:
    path.write_text("<html><body>" + "<table><tr><td>" * tables + "deep" + "</td></tr></table>" * tables + "</body></html>")
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def device(path: Path) -> Path | None:
    """A character device node (like /dev/null); None where this process may not create one."""
    import stat

    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except (PermissionError, OSError):
        return None
    return path


def escaping_symlink(path: Path, target: Path) -> Path:
    os.symlink(target, path)
    return path


def non_utf8_name(folder: Path, text: str = "Kestrel Yard opens at 06:00.") -> Path:
    """A file whose name holds the byte 0xFF (valid on Linux, not UTF-8)."""
    raw = os.fsencode(folder) + b"/caf\xe9-\xff.txt"
    with open(raw, "wb") as fh:
        fh.write(text.encode())
    return Path(os.fsdecode(raw))
