"""What the browser tests share: the artifacts folder, Chromium, and a page kept on this machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


@dataclass
class Browser:
    """A Playwright page whose requests may only go to this machine."""

    page: object
    outside: list[str]
    shots: Path
    count: int = 0
    dialogs: list[str] = field(default_factory=list)  # native alert/confirm/prompt, dismissed

    def shot(self, name: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(self.shots / f"{self.count:02d}-{name}.png"), full_page=True)  # type: ignore[attr-defined]
