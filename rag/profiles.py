"""Profiles: one TOML file per use case (system prompt, welcome, starters, collection), validated."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, field_validator

from rag.config import validate_collection_name
from rag.errors import ConfigError


class Profile(BaseModel, frozen=True):
    """What re-aims the app at one use case."""

    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    system_prompt: str = Field(min_length=1)
    welcome: str = ""
    starters: list[str] = Field(default_factory=list, max_length=8)
    collection: str = "default"
    top_k: int = Field(default=5, ge=1, le=50)

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
    profiles = load_profiles(folder)
    if name not in profiles:
        raise ConfigError(f"no profile {name!r} in {folder}; available: {', '.join(profiles)}")
    return profiles[name]


DEFAULT_PROFILE = Profile(
    name="general",
    description="Questions about any of your documents",
    system_prompt=(
        "You are a careful assistant that answers questions using only the documents provided. "
        "Answer briefly. If the documents do not contain the answer, say that you do not know."
    ),
)
