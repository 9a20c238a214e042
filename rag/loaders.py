"""File -> pages of clean text with file/page metadata, refusing bad files with a reason a user can act on.

This module is imported inside the parse worker process, so it stays light: pypdf and the standard
library only, no LlamaIndex, no torch.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from rag.errors import FileRefused, FileTooLarge
from rag.markup import html_to_text, read_html
from rag.ocr import Ocr
from rag.pages import LoadedFile, Page, PageText, tidy
from rag.price_lists import Line, Sections, as_price_list
from rag.tables import Table

PDF_SUFFIXES = {".pdf"}
TEXT_SUFFIXES = {".txt", ".text"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
JSON_SUFFIXES = {".json"}
CSV_SUFFIXES = {".csv", ".tsv"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
# Office files by suffix: what their content must be (as `sniff` names it).
OFFICE_KINDS = {
    ".docx": "a Word document (DOCX)",
    ".pptx": "a PowerPoint presentation (PPTX)",
    ".xlsx": "an Excel workbook (XLSX)",
    ".xlsm": "an Excel workbook (XLSX)",
    ".epub": "an EPUB e-book",
}
SUPPORTED_SUFFIXES = (
    PDF_SUFFIXES
    | TEXT_SUFFIXES
    | MARKDOWN_SUFFIXES
    | JSON_SUFFIXES
    | CSV_SUFFIXES
    | HTML_SUFFIXES
    | set(OFFICE_KINDS)
)
# A CSV line longer than this is not a table row (a one-line dump, a binary file): refused.
MAX_CSV_LINE_CHARS = 2**20

# A PDF page with fewer letters than this is almost surely a scan: it is read by OCR (rag.ocr) when
# tesseract is there. A whole PDF with fewer is refused.
MIN_TEXT_CHARS = 20
MAX_JSON_DEPTH = 64

# What a file really is, by its first bytes ("magic numbers"), whatever its name says: (pattern
# matched at the start, what to call it), first match wins. Only signatures no real text starts with
# (most contain bytes text never has), so a genuine .txt is never refused by them.
SIGNATURES: tuple[tuple[re.Pattern[bytes], str], ...] = tuple(
    (re.compile(pattern, re.DOTALL), kind)
    for pattern, kind in (
        (rb"%PDF-", "a PDF document"),
        (rb"PK(?:\x03\x04|\x05\x06|\x07\x08)", "a ZIP archive"),
        (rb"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office document (DOC, XLS or PPT)"),
        (rb"\{\\rtf", "an RTF document"),
        (rb"\x89PNG\r\n\x1a\n", "a PNG image"),
        (rb"\xff\xd8\xff", "a JPEG image"),
        (rb"GIF8[79]a", "a GIF image"),
        (rb"RIFF.{4}WEBP", "a WebP image"),
        (rb"II\*\x00|MM\x00\*", "a TIFF image"),
        (rb"\x00\x00.{2}ftyp", "an MP4/QuickTime video or HEIC image"),
        (rb"RIFF.{4}(?:WAVE|AVI )", "a WAV audio or AVI video file"),
        (rb"ID3[\x02-\x04]\x00|OggS\x00|fLaC[\x00\x80]", "an audio file"),
        (rb"\x7fELF", "a Linux program (ELF)"),
        (rb"MZ.{0,62}\x00", "a Windows program (EXE or DLL)"),
        (rb"\xcf\xfa\xed\xfe|\xce\xfa\xed\xfe|\xca\xfe\xba\xbe", "a macOS program or Java class"),
        (rb"\x00asm", "a WebAssembly program"),
        (rb"\x1f\x8b", "a gzip-compressed file"),
        (rb"BZh[1-9]1AY&SY", "a bzip2-compressed file"),
        (rb"\xfd7zXZ\x00", "an xz-compressed file"),
        (rb"\x28\xb5\x2f\xfd", "a zstd-compressed file"),
        (rb"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
        (rb"Rar!\x1a\x07", "a RAR archive"),
        (rb".{257}ustar[\x00 ]", "a tar archive"),
        (rb"SQLite format 3\x00", "an SQLite database"),
    )
)
# Office and e-book formats are ZIP archives: their member names (stored uncompressed) say which.
ZIP_KINDS = (
    (b"word/document.xml", "a Word document (DOCX)"),
    (b"xl/workbook.xml", "an Excel workbook (XLSX)"),
    (b"ppt/presentation.xml", "a PowerPoint presentation (PPTX)"),
    (b"mimetypeapplication/epub+zip", "an EPUB e-book"),
    (b"mimetypeapplication/vnd.oasis.opendocument", "an OpenDocument file"),
)
# What a name's type promises, for "the file is a PNG image, not text".
EXPECTED_KIND = {
    ".md": "Markdown",
    ".markdown": "Markdown",
    ".json": "JSON",
    ".csv": "CSV",
    ".tsv": "TSV",
    ".html": "HTML",
    ".htm": "HTML",
    ".xhtml": "HTML",
}
# A file of a type read here, under another type's name: the suffix it needs.
RENAME_TO = {"a PDF document": ".pdf"} | {
    kind: suffix
    for suffix, kind in reversed(OFFICE_KINDS.items())  # .xlsx, not .xlsm
}


def sniff(data: bytes) -> str | None:
    """What the content is by its signature ("a PNG image"), or None for no known binary type."""
    head = data[:1024]
    for pattern, kind in SIGNATURES:
        if pattern.match(head):
            if kind == "a ZIP archive":
                return next((sub for marker, sub in ZIP_KINDS if marker in data), kind)
            return kind
    return None


def content_hash(data: bytes) -> str:
    """The identity of a file's content (hex sha256)."""
    return hashlib.sha256(data).hexdigest()


def document_title(name: str) -> str:
    """A file name read as words ('jobs/pear-deck_junior.md' -> 'jobs pear deck junior'): the
    title the embedder and BM25 see above each chunk, so questions naming a document find it."""
    last = name.rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in last else name
    return " ".join(part for part in re.split(r"[/\\_\-.\s]+", stem) if part)


def searched_text(file: str, text: str, section: str | None = None) -> str:
    """A chunk as search sees it (the embedder and BM25 alike): its document's title, the heading
    of the section it starts inside when the heading is above it (a menu's "Brussels beers" over
    a chunk of its beers), then its text."""
    return "\n".join(part for part in (document_title(file), section, text) if part)


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def unsupported_reason(suffix: str) -> str:
    kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
    return f"unsupported file type {suffix or '(none)'}; supported: {kinds}"


def check_file(name: str, size: int, max_bytes: int, limit: str) -> None:
    """FileRefused unless a file of this name is of a type read here, FileTooLarge if it is over
    `max_bytes`; `limit` names that limit ("the upload limit of 20 MB (RAG_UPLOAD_MAX_MB)")."""
    if not is_supported(Path(name)):
        raise FileRefused(name, unsupported_reason(Path(name).suffix.lower()))
    if size > max_bytes:
        raise FileTooLarge(name, f"the file is {size / 2**20:.1f} MB, over {limit}")


def load_bytes(data: bytes, name: str, ocr: Ocr | None = None) -> LoadedFile:
    """Parse a file's bytes by its type; raise FileRefused naming `name` and the reason. `ocr`:
    how scanned PDF pages are read (the parse worker's, from the settings); None: rag.ocr.setup()."""
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise FileRefused(name, unsupported_reason(suffix))
    if not data:
        raise FileRefused(name, "the file is empty (0 bytes)")
    if suffix in PDF_SUFFIXES:
        return _load_pdf(data, name, ocr)
    kind = sniff(data)  # judged by content, not by name: a renamed image or program stays out
    if suffix in OFFICE_KINDS:
        return _load_office(data, name, suffix, kind)
    if kind is not None:
        raise FileRefused(
            name, f"the file is {kind}, not {EXPECTED_KIND.get(suffix, 'text')}; {_advice(kind)}"
        )
    text = _decode_text(data, name)
    if suffix in MARKDOWN_SUFFIXES:
        return _load_markdown(text, name)
    if suffix in JSON_SUFFIXES:
        return _load_json(text, name)
    if suffix in CSV_SUFFIXES:
        return _load_csv(text, name, delimiter="\t" if suffix == ".tsv" else None)
    if suffix in HTML_SUFFIXES:
        return _loaded_page(read_html(text), name)
    return _single_page(text, name)


def _advice(kind: str) -> str:
    rename = RENAME_TO.get(kind)
    return f"rename it to {rename}" if rename else "it cannot be indexed as text"


def _load_office(data: bytes, name: str, suffix: str, kind: str | None) -> LoadedFile:
    from rag import office

    expected = OFFICE_KINDS[suffix]
    if kind == "a ZIP archive" and data[:2] == b"PK":
        kind = None  # a ZIP without the parts' names in view: let the reader judge it
    if kind is not None and kind != expected:
        if kind.startswith("an old Office document"):
            advice = f"save it as {suffix} (File > Save As) and add that file"
        else:
            advice = _advice(kind)
        raise FileRefused(name, f"the file is {kind}, not {expected}; {advice}")
    if kind is None and data[:2] != b"PK":
        raise FileRefused(name, f"the file is not {expected}: it is not a ZIP-based Office file")
    loader = {
        ".docx": office.load_docx,
        ".pptx": office.load_pptx,
        ".epub": office.load_epub,
    }.get(suffix, office.load_xlsx)
    return loader(data, name)


def _loaded_page(page: Page, name: str) -> LoadedFile:
    if not page.text:
        raise FileRefused(name, "the file has no text")
    return LoadedFile(pages=[page])


def _load_csv(text: str, name: str, delimiter: str | None) -> LoadedFile:
    """One line per row, each cell under its column's header; each row cited by its number."""
    import csv

    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_CSV_LINE_CHARS:
            raise FileRefused(
                name,
                f"line {number} is {len(line) / 2**20:.1f} MB long, over the "
                f"{MAX_CSV_LINE_CHARS // 2**20} MB a table row may be: it is not a table",
            )
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","  # one column, or too irregular to tell: the usual comma
    csv.field_size_limit(MAX_CSV_LINE_CHARS)
    table = Table()
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        for cells in reader:
            table.add(reader.line_num, cells)
    except csv.Error as error:
        raise FileRefused(
            name, f"the CSV is malformed at line {reader.line_num} ({error})"
        ) from None
    builder = PageText()
    builder.rows(table.lines, lambda row: f"row {row}")
    return _loaded_page(builder.page(cut_at_lines=True), name)


def _single_page(text: str, name: str, **metadata: Any) -> LoadedFile:
    text = tidy(text)
    if not text:
        raise FileRefused(name, "the file has no text")
    return LoadedFile(pages=[Page(text=text)], metadata=dict(metadata))


# --- PDF ---------------------------------------------------------------------------------------------


def _load_pdf(data: bytes, name: str, ocr: Ocr | None = None) -> LoadedFile:
    # Imported here so that text-only runs never pay for pypdf's import.
    from io import BytesIO

    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, LimitReachedError

    if b"%PDF-" not in data[:1024]:
        kind = sniff(data)
        raise FileRefused(
            name,
            f"not a PDF (no %PDF header): the file is {kind}"
            if kind
            else "not a PDF (no %PDF header): the file is of another type or damaged",
        )
    try:
        reader = PdfReader(BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise FileRefused(name, "the PDF needs a password to open; save an unprotected copy")
        page_count = len(reader.pages)
    except FileRefused:
        raise
    except FileNotDecryptedError:
        raise FileRefused(
            name, "the PDF needs a password to open; save an unprotected copy"
        ) from None
    except LimitReachedError as error:
        raise FileRefused(name, _over_limits(error)) from None
    except Exception as error:  # noqa: BLE001 - hostile PDFs make pypdf raise anything at all
        raise FileRefused(
            name, f"the PDF is damaged and cannot be read ({short_error(error)})"
        ) from None
    if page_count == 0:
        raise FileRefused(name, "the PDF has no pages")

    pages: list[Page] = []
    sparse: list[Page] = []  # pages with almost no text: scans, read by OCR below
    broken: list[int] = []
    sections = Sections()  # a menu's sections go on from page to page
    over_limits: LimitReachedError | None = None
    for index in range(page_count):
        try:
            pdf_page = reader.pages[index]
            raw, lines = _styled_text(pdf_page)
            text = tidy(raw)
            label = reader.page_labels[index] if index < len(reader.page_labels) else str(index + 1)
        except LimitReachedError as error:  # e.g. a stream that inflates to gigabytes
            over_limits = over_limits or error
            broken.append(index + 1)
            continue
        except Exception:  # noqa: BLE001 - one unreadable page must not cost the rest of the file
            broken.append(index + 1)
            continue
        page = Page(text=text, page=index + 1, page_label=label)
        if _letters(text) >= MIN_TEXT_CHARS:
            pages.append(as_price_list(page, lines, sections))
        else:
            sparse.append(page)
    ocr, unread = _read_scans(data, sparse, ocr) if sparse else (None, [])
    pages += [as_price_list(page) for page in sparse if page.text]
    pages.sort(key=lambda page: page.page or 0)

    letters = sum(_letters(page.text) for page in pages)
    if letters < MIN_TEXT_CHARS:
        if over_limits is not None:
            raise FileRefused(name, _over_limits(over_limits))
        if broken and len(broken) == page_count:
            raise FileRefused(name, "the PDF is damaged: none of its pages could be read")
        if ocr is not None and ocr.languages is None:
            raise FileRefused(
                name, f"the PDF has no extractable text - probably a scan or images; {ocr.off}"
            )
        raise FileRefused(
            name,
            "the PDF has no extractable text, and OCR found almost no words on its pages - images "
            "without text, or a scan too faint or small to read",
        )
    warnings = []
    if broken:
        warnings.append(f"{name}: skipped unreadable page(s) {_ranges(broken)} of {page_count}")
    if unread:
        warnings.append(f"{name}: OCR could not read page(s) {_ranges(unread)} of {page_count}")
    if sparse and ocr is not None and ocr.languages is None:  # a scanned page may be among them
        numbers = [page.page or 0 for page in sparse]
        warnings.append(
            f"{name}: page(s) {_ranges(numbers)} of {page_count} have almost no text and were "
            f"not read by OCR; {ocr.off}"
        )
    return LoadedFile(pages=pages, metadata={"pages": page_count}, warnings=warnings)


# A font whose name says it is heavier than the text's: a heading's.
BOLD_FONT = re.compile(r"bold|black|heavy|demi|bx", re.IGNORECASE)  # TeX: CMBX, SFBX
LARGER = 1.25  # a heading's type may also be this much larger than the page's usual size


def _styled_text(pdf_page: Any) -> tuple[str, list[Line] | None]:
    """A page's text, and its lines with whether each starts in emphasised type (bold, or
    larger than the page's usual size); None where the runs do not line up with the text."""
    runs: list[tuple[str, str, float]] = []

    def visit(text: str, cm: Any, tm: Any, font: Any, size: Any) -> None:
        if text and not text.isspace():
            name = str(font.get("/BaseFont", "")) if isinstance(font, dict) else ""
            scale = abs(float(tm[0])) if tm and tm[0] else 1.0
            runs.append((text, name, float(size or 0) * scale))

    raw = pdf_page.extract_text(visitor_text=visit) or ""
    owners = [index for index, (text, _, _) in enumerate(runs) for c in text if not c.isspace()]
    if not runs or len(owners) != sum(not c.isspace() for c in raw):
        return raw, None
    sizes = sorted(size for text, _, size in runs for c in text if not c.isspace())
    usual = sizes[len(sizes) // 2]
    lines, seen = [], 0
    for text in raw.splitlines():
        count = sum(not c.isspace() for c in text)
        if count:
            _, name, size = runs[owners[seen]]
            emphasised = bool(BOLD_FONT.search(name)) or (usual > 0 and size >= LARGER * usual)
            style = f"{name}@{size:.1f}"
            last = _last_run(text, owners[seen : seen + count])
            lines.append(Line(text, emphasised, last, style))
        seen += count
    return raw, lines


def _last_run(text: str, owners: list[int]) -> int | None:
    """Where the last text run of a line starts in it, when the line has more than one: a price
    set apart from its item ("Balvenie Doublewood 12" then "900") is its own run."""
    last = owners[-1]
    inside = sum(owner == last for owner in owners)
    if inside == len(owners):
        return None
    nonspace = [i for i, c in enumerate(text) if not c.isspace()]
    return nonspace[len(nonspace) - inside]


def _letters(text: str) -> int:
    return len(re.sub(r"\W", "", text))


def _read_scans(data: bytes, sparse: list[Page], ocr: Ocr | None) -> tuple[Ocr, list[int]]:
    """OCR the pages with almost no text in place (when tesseract is there): a page whose OCR
    reads more than its text layer says "page N (OCR)" in citations. Returns how OCR was set up
    and the pages it failed on."""
    from rag import ocr as scans

    ocr = ocr or scans.setup()
    if ocr.languages is None:
        return ocr, []
    unread = []
    indices = [(page.page or 1) - 1 for page in sparse]
    # read_pages answers for each index, in order: the n-th answer is sparse[n]'s.
    for position, (index, text) in enumerate(scans.read_pages(data, indices, ocr.languages)):
        if text is None:
            unread.append(index + 1)
            continue
        page, text = sparse[position], tidy(text)
        if _letters(text) > _letters(page.text):
            label = page.page_label or str(index + 1)
            sparse[position] = replace(page, text=text, location=f"page {label} (OCR)")
    return ocr, unread


def _over_limits(error: BaseException) -> str:
    """For pypdf's LimitReachedError: a stream inflating past 75 MB, a page tree 100 deep..."""
    detail = re.sub(
        r", \d{9,}\)", ")", short_error(error)
    )  # no memory addresses of pypdf's objects
    return f"the PDF is damaged or hostile: it trips a safety limit of the PDF reader ({detail})"


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    spans: list[str] = []
    start = prev = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == prev + 1:
            prev = number
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if number is not None:
            start = prev = number
    return ", ".join(spans)


def short_error(error: BaseException) -> str:
    """An exception as a short reason: its type and the start of its first line."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    kind = type(error).__name__
    return f"{kind}: {message[:120]}" if message else kind


# --- text, Markdown, JSON -----------------------------------------------------------------------------


UNICODE_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def _decode_text(data: bytes, name: str) -> str:
    for bom, encoding in UNICODE_BOMS:  # UTF-16/32 text is full of zero bytes, yet text
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                raise FileRefused(name, f"the file is damaged {encoding.upper()} text") from None
    if b"\x00" in data[:8192]:
        raise FileRefused(name, "the file is binary, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise FileRefused(
            name, "the file's text encoding could not be recognised; save it as UTF-8"
        )
    return str(best)


FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def _load_markdown(text: str, name: str) -> LoadedFile:
    metadata: dict[str, str | int | float | bool] = {}
    header = ""
    match = FRONT_MATTER.match(text)
    if match:
        try:
            front = yaml.load(match.group(1), Loader=_FrontMatterLoader)  # a SafeLoader
        except (yaml.YAMLError, RecursionError):
            front = None  # not front matter after all (or hostile): keep it as text
        if isinstance(front, dict):
            text = text[match.end() :]
            metadata = {str(k): _scalar(v) for k, v in front.items() if v is not None}
            # Front matter (title, company, location...) is what people ask about: keep it searchable.
            header = "\n".join(f"{key}: {value}" for key, value in metadata.items()) + "\n\n"
    body = html_to_text(text) if "<" in text else text
    loaded = _single_page(header + body, name)
    loaded.metadata.update(metadata)
    return loaded


class _FrontMatterLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases: front matter never needs them, and a few nested
    aliases ("billion laughs") expand to gigabytes once the metadata is written out."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases are not allowed in front matter")
        return super().compose_node(parent, index)


def _scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def _load_json(text: str, name: str) -> LoadedFile:
    try:
        value = json.loads(text)
    except RecursionError:
        raise FileRefused(name, f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as error:
        raise FileRefused(name, f"not valid JSON ({error.msg} at line {error.lineno})") from None
    lines: list[str] = []
    _flatten(value, "", lines, name, depth=0)
    return _single_page("\n".join(lines), name)


def _flatten(value: Any, key: str, lines: list[str], name: str, depth: int) -> None:
    """Write `value` as readable 'a.b[0].c: value' lines."""
    if depth > MAX_JSON_DEPTH:
        raise FileRefused(name, f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for child_key, child in value.items():
            if str(child_key).startswith(
                "$"
            ):  # "$schema" and friends say nothing about the content
                continue
            _flatten(child, f"{key}.{child_key}" if key else str(child_key), lines, name, depth + 1)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _flatten(child, f"{key}[{index}]", lines, name, depth + 1)
    elif value is not None and str(value).strip():
        text = " ".join(str(value).split())
        lines.append(f"{key}: {text}" if key else text)
