"""Documentation that must not drift from the code."""

from pathlib import Path

from userapi.platform.settings import Settings

from manifests import reference_docs

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_settings_tables_are_generated_from_the_current_settings() -> None:
    current = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert reference_docs.render(current) == current, "run `make manifests`"
    documented = {name for names in reference_docs.sections().values() for name in names}
    assert documented == set(Settings.model_fields)  # every setting sits in a section


def test_a_changed_description_makes_the_tables_stale() -> None:
    current = (DOCS / "configuration.md").read_text(encoding="utf-8")
    edited = current.replace("| `PORT` | `8080` |", "| `PORT` | `8081` |")
    assert edited != current
    assert reference_docs.render(edited) == current


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
