"""Documentation that must not drift from the code."""

from pathlib import Path

from userapi.runtime.settings import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_setting_is_in_the_configuration_reference() -> None:
    reference = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [
        name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in reference
    ]
    assert missing == [], f"add these to docs/configuration.md: {missing}"
