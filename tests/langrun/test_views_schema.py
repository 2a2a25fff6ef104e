"""langrun.views.SchemaView: the OpenAPI description, served to anyone who asks."""

from drf_spectacular.generators import SchemaGenerator

from langrun.views import SchemaView


def _counting(monkeypatch) -> list:
    made = []
    original = SchemaGenerator.get_schema

    def get_schema(self, *args, **kwargs):
        made.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SchemaGenerator, "get_schema", get_schema)
    SchemaView.forget()
    return made


def test_the_description_is_generated_once_per_process_not_per_request(client, monkeypatch, settings):
    """Generating it takes a third of a second of CPU, and no key is needed to ask: a few anonymous requests a second
    kept a web process busy."""
    made = _counting(monkeypatch)
    first = client.get("/api/schema/?format=json")
    assert first.status_code == 200 and "/api/v1/webhook/{flow_id_or_name}" in first.json()["paths"]
    assert client.get("/api/schema/?format=json").json() == first.json()
    assert client.get("/api/schema/").status_code == 200  # YAML, from the same description
    assert len(made) == 1
    settings.LANGRUN_RUN_TIMEOUT = settings.LANGRUN_RUN_TIMEOUT + 1  # a changed setting is not served stale
    assert client.get("/api/schema/?format=json").status_code == 200 and len(made) == 2


def test_versions_asked_for_do_not_grow_what_a_process_keeps(client, monkeypatch):
    _counting(monkeypatch)
    for n in range(SchemaView.MAX_KEPT * 3):
        response = client.get(f"/api/schema/?format=json&version=v{n}")
        assert response.status_code == 200 and response.json()["info"]["version"].endswith(f"(v{n})")
    assert len(SchemaView._made) <= SchemaView.MAX_KEPT
