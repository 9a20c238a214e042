"""The job coach: what postings ask for, read with spans; CVs told from other documents; a CV matched against the postings, every claim quoted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.chat import ChatService
from rag.coach import FIT_QUESTION, NO_CV, asks_for_fit, match
from rag.engine import ChatEngine
from rag.loaders import load_bytes
from rag.pages import Page
from rag.postings import is_cv
from rag.profiles import active_profile
from rag.records import Record, records_of
from testkit.pdf import pdf_bytes

ROOT = Path(__file__).resolve().parents[1]
CV_MARKDOWN = """# Ada Example

## Experience
Backend developer at Harbour Logistics, 2019-2024: Ruby on Rails services on Postgres and Redis.
Ran the team's RabbitMQ queues and deployed to Heroku and AWS.

## Education
BSc in Computer Science, University of Bergen.

## Skills
Ruby on Rails, Go, Angular, GitHub, RSpec, CircleCI
"""


def loaded(path: Path) -> list[Page]:
    return load_bytes(path.read_bytes(), path.name).pages


def record_of(path: Path, kind: str) -> Record:
    found = [r for r in records_of(loaded(path)) if r.fields.get("kind") == kind]
    assert found, f"{path.name} gives no {kind} record"
    return Record(**{**found[0].__dict__, "file": path.name})


def postings(corpus: Path) -> list[Record]:
    return [record_of(path, "posting") for path in sorted((corpus / "jobs").iterdir())]


# --- what a posting asks for -------------------------------------------------------------------------


def test_a_postings_requirements_are_read_from_the_list_under_their_heading(corpus: Path) -> None:
    pear_deck = record_of(corpus / "jobs" / "pear-deck-junior-developer.md", "posting")
    assert [(kind, text) for kind, _, _, _, text in pear_deck.fields["asks"]] == [
        ("required", "Degree or certification in CS or related field"),
        ("required", "Honesty, determination, and humility"),
    ]


def test_skills_requirements_and_nice_to_haves_are_told_apart(corpus: Path) -> None:
    stitch_fix = record_of(
        corpus / "jobs" / "stitchfix-principal-full-stack-rails-engineer.md", "posting"
    )
    kinds = [kind for kind, *_ in stitch_fix.fields["asks"]]
    assert (kinds.count("skill"), kinds.count("required"), kinds.count("preferred")) == (8, 5, 4)
    assert ["skill", None, 4198, 4211, "Ruby on Rails"] in stitch_fix.fields["asks"]


def test_a_json_postings_qualifications_and_skill_keywords_are_asks(corpus: Path) -> None:
    microsoft = record_of(corpus / "jobs" / "jsonresume-sample.job.json", "posting")
    asks = {text: kind for kind, _, _, _, text in microsoft.fields["asks"]}
    assert asks["3+ years of experience in web development"] == "required"
    assert asks["MongoDB"] == "skill"
    assert asks["Develop and maintain web applications"] == "duty"


def test_every_ask_is_quoted_from_its_span(corpus: Path) -> None:
    for path in sorted((corpus / "jobs").iterdir()):
        text = loaded(path)[0].text
        for _, _, start, end, quoted in record_of(path, "posting").fields["asks"]:
            assert text[start:end] == quoted


def test_how_to_apply_is_read_from_the_posting(corpus: Path) -> None:
    pear_deck = record_of(corpus / "jobs" / "pear-deck-junior-developer.md", "posting")
    [(_, _, _, line)] = pear_deck.fields["apply"]
    assert "Write to michal+worklife@peardeck.com" in line


POSTING_MARKDOWN = """# Data Engineer

Northwind Analytics is hiring a data engineer for its Oslo office.

## Requirements
- 3+ years of experience with Python
- SQL and dbt
- Airflow or Dagster

## Nice to have
- Kafka

## How to apply
Send your CV to jobs@northwind.example.
"""


def write_document(path: Path, markdown: str) -> Path:
    """`markdown` as a Markdown, Word or PDF file: headings, bullets and lines as a user's."""
    lines = markdown.splitlines()
    if path.suffix == ".md":
        path.write_text(markdown)
    elif path.suffix == ".pdf":
        shown = [line.lstrip("# ") for line in lines]  # headings as plain lines, "- " bullets
        path.write_bytes(pdf_bytes(["\n".join(shown)]))
    else:
        from docx import Document

        document = Document()
        for line in lines:
            if line.startswith("#"):
                document.add_heading(line.lstrip("# "), level=line.count("#"))
            elif line.startswith("- "):
                document.add_paragraph(line[2:], style="List Bullet")
            elif line:
                document.add_paragraph(line)
        document.save(str(path))
    return path


@pytest.mark.parametrize("suffix", [".md", ".docx", ".pdf"])
def test_a_posting_without_keys_is_read_from_its_lists(tmp_path: Path, suffix: str) -> None:
    posting = record_of(
        write_document(tmp_path / f"northwind{suffix}", POSTING_MARKDOWN), "posting"
    )
    assert posting.name == "Data Engineer"
    asks = [(kind, text) for kind, _, _, _, text in posting.fields["asks"]]
    assert asks == [
        ("required", "3+ years of experience with Python"),
        ("required", "SQL and dbt"),
        ("required", "Airflow or Dagster"),
        ("preferred", "Kafka"),
    ]
    assert any("jobs@northwind.example" in line[3] for line in posting.fields["apply"])


def test_a_document_listing_requirements_is_no_posting_without_a_postings_words(
    tmp_path: Path,
) -> None:
    spec = "# Exporter\n\n## Requirements\n- Write CSV files\n- Keep column order\n"
    path = tmp_path / "spec.md"
    path.write_text(spec)
    assert [r for r in records_of(loaded(path)) if r.fields.get("kind") == "posting"] == []


# --- CVs --------------------------------------------------------------------------------------------


def test_a_json_resume_is_a_cv_and_a_posting_or_a_menu_is_not(corpus: Path) -> None:
    assert is_cv(loaded(corpus / "cv" / "jsonresume-sample.resume.json"))
    assert not is_cv(loaded(corpus / "jobs" / "jsonresume-sample.job.json"))
    assert not is_cv(loaded(corpus / "jobs" / "pear-deck-junior-developer.md"))
    assert not is_cv(loaded(corpus / "menus" / "fosdem-bar-menu.pdf"))


@pytest.mark.parametrize("suffix", [".md", ".docx", ".pdf"])
def test_a_cv_in_markdown_word_or_pdf_is_a_cv(tmp_path: Path, suffix: str) -> None:
    path = write_cv(tmp_path / f"ada{suffix}")
    cv = record_of(path, "cv")
    assert any("RabbitMQ" in line[3] for line in cv.fields["lines"])


def write_cv(path: Path) -> Path:
    return write_document(path, CV_MARKDOWN)


# --- the match --------------------------------------------------------------------------------------


def test_the_sample_cv_fits_the_web_developer_job_best(corpus: Path) -> None:
    cv = record_of(corpus / "cv" / "jsonresume-sample.resume.json", "cv")
    fits = match(cv, postings(corpus))
    best = fits[0]
    assert (best.posting.name, fits[1].posting.name) == ("Web Developer", "Junior Developer")
    assert {c.ask.line.text for c in best.found} >= {"HTML", "CSS", "JavaScript", "SQL"}
    assert {c.ask.line.text for c in best.missing} == {"React", "Node.js", "NoSQL", "MongoDB"}
    sql = next(c for c in best.found if c.ask.line.text == "SQL")
    assert [line.text for line in sql.shown_by] == ["education[0].courses[0]: DB1101 - Basic SQL"]


def test_a_rails_cv_fits_the_rails_job_best(corpus: Path, tmp_path: Path) -> None:
    cv = record_of(write_cv(tmp_path / "ada.md"), "cv")
    best = match(cv, postings(corpus))[0]
    assert best.posting.fields["company"] == "Stitch Fix"
    assert {"Ruby on Rails", "Postgres", "Angular / React"} <= {c.ask.line.text for c in best.found}


def test_a_products_name_covers_its_longer_form_and_java_is_not_javascript(
    corpus: Path, tmp_path: Path
) -> None:
    cv_text = "# Bo\n\n## Experience\nBuilt PostgreSQL schemas and ReactJS front ends.\n\n## Skills\nJava\n"
    (tmp_path / "bo.md").write_text(cv_text)
    cv = record_of(tmp_path / "bo.md", "cv")
    stitch_fix = next(
        f for f in match(cv, postings(corpus)) if f.posting.fields["company"] == "Stitch Fix"
    )
    shown = {c.ask.line.text for c in stitch_fix.found}
    assert {"Postgres", "Angular / React"} <= shown
    microsoft = next(
        f for f in match(cv, postings(corpus)) if f.posting.fields["company"] == "Microsoft"
    )
    assert "JavaScript" in {c.ask.line.text for c in microsoft.missing}  # Java is another language


def test_what_a_cv_does_not_say_is_never_found(corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "blank.md").write_text("# Bo\n\n## Experience\nGardener.\n\n## Education\nNone.\n")
    cv = record_of(tmp_path / "blank.md", "cv")
    assert all(not fit.found for fit in match(cv, postings(corpus)))


def test_fit_questions_are_told_from_other_job_questions() -> None:
    assert asks_for_fit("Which job fits my CV best, and what am I missing?")
    assert asks_for_fit("Am I qualified for the Stitch Fix job?")
    assert asks_for_fit(FIT_QUESTION)
    assert not asks_for_fit("Which jobs are remote?")
    assert not asks_for_fit("Which beers match my budget?")  # not about jobs, outside the coach
    assert asks_for_fit("What am I missing?", coach=True)
    assert not asks_for_fit("What skills does the junior developer role ask for?")


# --- in a chat --------------------------------------------------------------------------------------


@pytest.fixture
def jobs_chat(settings: Any, embedder: Any, corpus: Path) -> Iterator[ChatService]:
    service = ChatService(settings.model_copy(update={"profiles_dir": ROOT / "profiles"}))
    service.index.embedder = embedder
    profile = active_profile(service.settings, "job-listings")
    assert service.index.ingest([corpus / "jobs"], collection=profile.collection).ok
    yield service
    service.stop_sync()


def test_a_cv_attached_alone_is_answered_with_the_ranking(
    jobs_chat: ChatService, corpus: Path
) -> None:
    session = jobs_chat.session("chat-a", "job-listings")
    attached = session.attach(corpus / "cv" / "jsonresume-sample.resume.json", "my-cv.json")
    assert attached.indexed, attached.message
    question = session.question_for("", [attached])
    assert question == FIT_QUESTION
    answer = session.ask(question)
    text = "".join(answer.stream())
    assert "| 1 | Web Developer at Microsoft | 7 of 11 |" in text
    assert "Your CV does not show:\n- skill “React”" in text
    # Each quote is its source's span, in the posting or in the CV.
    for source in answer.sources:
        path = corpus / ("cv" if source.file == "my-cv.json" else "jobs")
        page = loaded(
            path / ("jsonresume-sample.resume.json" if path.name == "cv" else source.file)
        )
        assert source.span and page[0].text[source.span[0] : source.span[1]] == source.quote


def test_the_cv_of_one_chat_is_not_another_chats(jobs_chat: ChatService, corpus: Path) -> None:
    mine = jobs_chat.session("chat-a", "job-listings")
    assert mine.attach(corpus / "cv" / "jsonresume-sample.resume.json", "my-cv.json").indexed
    other = jobs_chat.session("chat-b", "job-listings")
    assert "".join(other.ask("Which job fits my CV best?").stream()) == NO_CV


def test_a_fit_question_about_one_job_checks_that_job(jobs_chat: ChatService, corpus: Path) -> None:
    session = jobs_chat.session("chat-a", "job-listings")
    assert session.attach(corpus / "cv" / "jsonresume-sample.resume.json", "my-cv.json").indexed
    text = "".join(session.ask("What am I missing for the Stitch Fix job?").stream())
    assert "against 1 job posting" in text and "Stitch Fix" in text
    assert "Microsoft" not in text


def test_a_cv_attached_in_the_general_profile_is_only_indexed(
    jobs_chat: ChatService, corpus: Path
) -> None:
    session = jobs_chat.session("chat-a", "general")
    attached = session.attach(corpus / "cv" / "jsonresume-sample.resume.json", "my-cv.json")
    assert attached.indexed and session.question_for("", [attached]) == ""


def test_a_menu_profile_never_answers_as_a_coach(jobs_chat: ChatService) -> None:
    profile = active_profile(jobs_chat.settings, "restaurant-menus")
    engine = ChatEngine(jobs_chat.index, None, profile)  # type: ignore[arg-type]
    assert engine.fit_answer("Which job fits me?", "Which job fits me?") is None
