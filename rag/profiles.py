"""Profiles: one TOML file per use case (system prompt, welcome, starters, collection), validated."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from rag.config import Settings, validate_collection_name
from rag.errors import ConfigError

# The fields each kind of record has (rag.records), in the order tables show them.
RECORD_FIELDS = {
    "item": ("name", "price", "strength", "size", "section", "currency", "dietary"),
    "posting": ("name", "company", "place", "work_mode", "type", "salary", "asks"),
}


class RecordSchema(BaseModel, frozen=True, extra="forbid"):
    """What a profile's documents list: menu items or job postings, and the fields its answers
    show. `item` turns on the menu guide, `posting` the job coach."""

    kind: Literal["item", "posting"]
    fields: tuple[str, ...] = ()  # empty: all of the kind's

    @model_validator(mode="after")
    def _known_fields(self) -> RecordSchema:
        known = RECORD_FIELDS[self.kind]
        unknown = [name for name in self.fields if name not in known]
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} not a field of {self.kind} records ({', '.join(known)})"
            )
        if self.fields and "name" not in self.fields:
            raise ValueError("fields must include name")
        return self

    @property
    def shown(self) -> tuple[str, ...]:
        return self.fields or RECORD_FIELDS[self.kind]


class Profile(BaseModel, frozen=True):
    """What re-aims the app at one use case."""

    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    system_prompt: str = Field(min_length=1)
    welcome: str = ""
    starters: list[str] = Field(default_factory=list, max_length=8)
    collection: str = "default"
    top_k: int = Field(default=5, ge=1, le=50)
    records: RecordSchema | None = None  # None: list questions over whatever the documents list

    @field_validator("collection")
    @classmethod
    def _collection(cls, name: str) -> str:
        validate_collection_name(name)
        return name

    @field_validator("system_prompt", "welcome", "description")
    @classmethod
    def _strip(cls, text: str) -> str:
        return text.strip()


def load_profile_file(path: Path) -> Profile:
    """Read and validate one profile; errors name the file and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    data.setdefault("name", path.stem)
    try:
        return Profile.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(file)"
        raise ConfigError(f"{path}: field {field!r}: {first['msg']}") from None


def load_profiles(folder: Path) -> dict[str, Profile]:
    """Every `*.toml` profile in `folder`, by name; a broken one stops start-up with its reason."""
    profiles: dict[str, Profile] = {}
    for path in sorted(folder.glob("*.toml")):
        profile = load_profile_file(path)
        if profile.name in profiles:
            raise ConfigError(f"{path}: profile name {profile.name!r} is used by another file")
        profiles[profile.name] = profile
    if not profiles:
        profiles["general"] = DEFAULT_PROFILE
    return profiles


def get_profile(folder: Path, name: str) -> Profile:
    """One profile as its file says (no settings applied; see `active_profile` for that)."""
    return _pick(load_profiles(folder), name, folder)


def active_profiles(settings: Settings) -> dict[str, Profile]:
    """The profiles as chat, API and `rag` use them: an env var the user set wins over the profile.

    RAG_TOP_K, set, is every profile's top_k. RAG_COLLECTION, set, is the default profile's
    (RAG_PROFILE's) collection only, so that profile answers from where data/ is synced; other
    profiles keep the collection they name, or they would all answer from the same documents.
    A broken profile, or a RAG_PROFILE that names none, raises ConfigError (start-up stops).
    """
    profiles = load_profiles(settings.profiles_dir)
    _pick(profiles, settings.profile, settings.profiles_dir, "RAG_PROFILE")
    active: dict[str, Profile] = {}
    for name, profile in profiles.items():
        updates: dict[str, object] = {}
        if settings.top_k is not None:
            updates["top_k"] = settings.top_k
        if settings.collection is not None and name == settings.profile:
            updates["collection"] = settings.collection
        active[name] = profile.model_copy(update=updates) if updates else profile
    return active


def active_profile(settings: Settings, name: str | None = None) -> Profile:
    """Profile `name` (default: RAG_PROFILE's) with the settings applied, as `active_profiles`."""
    return _pick(active_profiles(settings), name or settings.profile, settings.profiles_dir)


def _pick(profiles: dict[str, Profile], name: str, folder: Path, setting: str = "") -> Profile:
    if name not in profiles:
        named = f" ({setting})" if setting else ""
        raise ConfigError(
            f"no profile {name!r}{named} in {folder}; available: {', '.join(profiles)}"
        )
    return profiles[name]


DEFAULT_PROFILE = Profile(
    name="general",
    description="Questions about any of your documents",
    system_prompt=(
        "You are a careful assistant that answers questions using only the documents provided. "
        "Answer briefly. If the documents do not contain the answer, say that you do not know."
    ),
)
