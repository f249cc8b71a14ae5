"""Documentation that must not drift from the code."""

from pathlib import Path

from userapi.platform.settings import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_setting_is_in_the_configuration_reference() -> None:
    reference = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [
        name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in reference
    ]
    assert missing == [], f"add these to docs/configuration.md: {missing}"


def test_the_merged_openapi_document_is_current() -> None:
    from userapi.commands.openapi import render

    committed = (DOCS / "openapi.json").read_text(encoding="utf-8")
    assert committed == render(), "docs/openapi.json is stale: run `make openapi`"


def test_every_operation_names_the_service_that_answers_it() -> None:
    from userapi.commands.openapi import merged_spec
    from userapi.endpoints import ENDPOINTS

    spec = merged_spec()
    named = {op["x-userapi-endpoint"] for item in spec["paths"].values() for op in item.values()}
    assert named == set(ENDPOINTS)


def test_each_service_documents_bearer_auth_exactly_where_it_verifies_tokens() -> None:
    from userapi import endpoints
    from userapi.platform.settings import Settings
    from userapi.web.app import create_app

    expected = {"get-user": True, "list-users": True, "auth0-events": False}
    for name, secured in expected.items():
        app = create_app(name, [endpoints.load(name).router], Settings())
        spec = app.openapi()
        operations = [op for item in spec["paths"].values() for op in item.values()]
        assert operations
        assert all(("security" in op) is secured for op in operations), name
        assert ("securitySchemes" in spec.get("components", {})) is secured, name
