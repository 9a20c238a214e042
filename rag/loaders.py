"""File -> pages of clean text with file/page metadata, refusing bad files with a reason a user can act on.

This module is imported inside the parse worker process, so it stays light: pypdf and the standard
library only, no LlamaIndex, no torch.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import yaml

from rag.errors import FileRefused, FileTooLarge

PDF_SUFFIXES = {".pdf"}
TEXT_SUFFIXES = {".txt", ".text"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
JSON_SUFFIXES = {".json"}
SUPPORTED_SUFFIXES = PDF_SUFFIXES | TEXT_SUFFIXES | MARKDOWN_SUFFIXES | JSON_SUFFIXES

# A PDF page with fewer letters than this across the whole file is almost surely a scan.
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
EXPECTED_KIND = {".md": "Markdown", ".markdown": "Markdown", ".json": "JSON"}


def sniff(data: bytes) -> str | None:
    """What the content is by its signature ("a PNG image"), or None for no known binary type."""
    head = data[:1024]
    for pattern, kind in SIGNATURES:
        if pattern.match(head):
            if kind == "a ZIP archive":
                return next((sub for marker, sub in ZIP_KINDS if marker in data), kind)
            return kind
    return None


@dataclass(frozen=True)
class Page:
    """One unit of text from a file: a PDF page or a slide (1-based `page`), a sheet, a section of
    a document, or a whole text file (`page` None).

    `location` is what a citation says instead of "page N" ("slide 3", "page 2 (OCR)", "sheet
    Prices"). `marks` name places inside the text: (offset into `text`, label), ascending, e.g. a
    row ("sheet Prices, row 7") or a heading ("section Benefits"); a span is cited by the last mark
    at or before its start.
    """

    text: str
    page: int | None = None
    page_label: str | None = None
    location: str | None = None
    marks: tuple[tuple[int, str], ...] = ()


@dataclass
class LoadedFile:
    """What a loader read from one file, plus what went wrong on parts of it."""

    pages: list[Page]
    metadata: dict[str, str | int | float | bool] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def content_hash(data: bytes) -> str:
    """The identity of a file's content (hex sha256)."""
    return hashlib.sha256(data).hexdigest()


def document_title(name: str) -> str:
    """A file name read as words ('jobs/pear-deck_junior.md' -> 'jobs pear deck junior'): the
    title the embedder and BM25 see above each chunk, so questions naming a document find it."""
    last = name.rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in last else name
    return " ".join(part for part in re.split(r"[/\\_\-.\s]+", stem) if part)


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


def load_bytes(data: bytes, name: str) -> LoadedFile:
    """Parse a file's bytes by its type; raise FileRefused naming `name` and the reason."""
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise FileRefused(name, unsupported_reason(suffix))
    if not data:
        raise FileRefused(name, "the file is empty (0 bytes)")
    if suffix in PDF_SUFFIXES:
        return _load_pdf(data, name)
    kind = sniff(data)
    if kind is not None:  # judged by content, not by name: a renamed image or program stays out
        advice = "rename it to .pdf" if kind == "a PDF document" else "it cannot be indexed as text"
        raise FileRefused(
            name, f"the file is {kind}, not {EXPECTED_KIND.get(suffix, 'text')}; {advice}"
        )
    text = _decode_text(data, name)
    if suffix in MARKDOWN_SUFFIXES:
        return _load_markdown(text, name)
    if suffix in JSON_SUFFIXES:
        return _load_json(text, name)
    return _single_page(text, name)


def _single_page(text: str, name: str, **metadata: Any) -> LoadedFile:
    text = tidy(text)
    if not text:
        raise FileRefused(name, "the file has no text")
    return LoadedFile(pages=[Page(text=text)], metadata=dict(metadata))


# --- PDF ---------------------------------------------------------------------------------------------


def _load_pdf(data: bytes, name: str) -> LoadedFile:
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
            name, f"the PDF is damaged and cannot be read ({_short(error)})"
        ) from None
    if page_count == 0:
        raise FileRefused(name, "the PDF has no pages")

    pages: list[Page] = []
    broken: list[int] = []
    over_limits: LimitReachedError | None = None
    for index in range(page_count):
        try:
            pdf_page = reader.pages[index]
            text = tidy(pdf_page.extract_text() or "")
            label = reader.page_labels[index] if index < len(reader.page_labels) else str(index + 1)
        except LimitReachedError as error:  # e.g. a stream that inflates to gigabytes
            over_limits = over_limits or error
            broken.append(index + 1)
            continue
        except Exception:  # noqa: BLE001 - one unreadable page must not cost the rest of the file
            broken.append(index + 1)
            continue
        if text:
            pages.append(Page(text=text, page=index + 1, page_label=label))

    letters = sum(len(re.sub(r"\W", "", page.text)) for page in pages)
    if letters < MIN_TEXT_CHARS:
        if over_limits is not None:
            raise FileRefused(name, _over_limits(over_limits))
        if broken and len(broken) == page_count:
            raise FileRefused(name, "the PDF is damaged: none of its pages could be read")
        raise FileRefused(
            name, "the PDF has no extractable text - probably a scan or images; run OCR on it first"
        )
    warnings = []
    if broken:
        warnings.append(f"{name}: skipped unreadable page(s) {_ranges(broken)} of {page_count}")
    return LoadedFile(pages=pages, metadata={"pages": page_count}, warnings=warnings)


def _over_limits(error: BaseException) -> str:
    """For pypdf's LimitReachedError: a stream inflating past 75 MB, a page tree 100 deep..."""
    detail = re.sub(r", \d{9,}\)", ")", _short(error))  # no memory addresses of pypdf's objects
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


def _short(error: BaseException) -> str:
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


class _TextExtractor(HTMLParser):
    """Collects the visible text of an HTML fragment, with line breaks at block elements."""

    BLOCKS = frozenset(
        {"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "hr"}
        | {f"h{level}" for level in range(1, 7)}
    )
    HIDDEN = frozenset({"script", "style", "head", "title", "noscript", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self.hidden_depth += 1
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self.hidden_depth = max(0, self.hidden_depth - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden_depth:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of HTML (or Markdown with raw HTML in it); entities decoded."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return unescape("".join(parser.parts))


def tidy(text: str) -> str:
    """Normalise compatibility characters (ligatures such as "ﬀ") and white space."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\xa0", " ").replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()
