"""A tiny PDF writer for fixtures: real, valid PDFs with one text block per page."""

from __future__ import annotations

from pathlib import Path


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def write_pdf(path: Path, pages: list[str]) -> Path:
    """Write `pages` (one string per page, lines split on newlines) as a Helvetica text PDF."""
    path.write_bytes(pdf_bytes(pages))
    return path


def pdf_bytes(pages: list[str]) -> bytes:
    """`pages` (one string per page, lines split on newlines) as a Helvetica text PDF; a line
    written as "**Heading**" is set in Helvetica-Bold, one written as "## Heading" in larger
    Helvetica-Bold (a heading of another level)."""
    objects: list[bytes] = []
    page_ids = [5 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold >>")
    for index, text in enumerate(pages):
        lines = ["BT", "14 TL", "72 760 Td"]
        for line in text.splitlines() or [""]:
            bold = line.startswith("**") and line.endswith("**") and len(line) > 4
            larger = line.startswith("## ")
            font, size = ("/F2", 14) if larger else ("/F2", 11) if bold else ("/F1", 11)
            shown = line[3:] if larger else line[2:-2] if bold else line
            lines.append(f"{font} {size} Tf ({_escape(shown)}) Tj T*")
        lines.append("ET")
        stream = "\n".join(lines).encode("latin-1")
        content_id = page_ids[index] + 1
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {content_id} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    return pdf_from_objects(objects)


def write_encrypted_pdf(path: Path, pages: list[str], user_password: str) -> Path:
    """The same PDF, encrypted with pypdf (an empty user password still opens without asking)."""
    from pypdf import PdfReader, PdfWriter

    plain = write_pdf(path.with_suffix(".plain.pdf"), pages)
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="AES-128")
    with open(path, "wb") as handle:
        writer.write(handle)
    plain.unlink()
    return path


def write_slow_pdf(path: Path, pages: int = 60, operators: int = 40_000) -> Path:
    """A valid PDF whose text takes pypdf minutes to extract (about 1.5 s a page on 2 cores):
    every page shows one shared content stream of `operators` text operators, compressed, so the
    file stays small. Slow by its content, whatever the machine's speed within a few times."""
    import zlib

    ops = "\n".join(
        f"BT /F1 8 Tf {n % 500} {n % 700} Td (word{n % 97}) Tj ET" for n in range(operators)
    )
    stream = zlib.compress(ops.encode("latin-1"))
    kids = " ".join(f"{5 + n} 0 R" for n in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 3 0 R >> >> /Contents 4 0 R >>"
    )
    objects += [page] * pages
    path.write_bytes(pdf_from_objects(objects))
    return path


def pdf_from_objects(objects: list[bytes]) -> bytes:
    """A PDF of numbered objects (1 is the catalog) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
