"""The OpenAPI schema generates without warnings, and the docs page needs no internet."""

import re

import pytest
import yaml
from django.core.management import call_command


def test_schema_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    paths = yaml.safe_load(out.read_text())["paths"]
    for path in (
        "/api/v1/ml/status", "/api/v1/ml/generate-signal", "/api/v1/ml/tasks/{task_id}",
        "/api/v1/ml/predictions/{symbol}", "/api/v1/ml/metrics", "/api/v1/signals",
        "/api/v1/orders", "/api/v1/positions", "/api/v1/traders", "/api/v1/traders/{id}",
    ):  # fmt: skip
        assert path in paths, path
    assert set(paths["/api/v1/traders/{id}"]) >= {"get", "put", "patch", "delete"}
    assert "post" not in paths["/api/v1/orders"]


@pytest.mark.django_db
def test_docs_page_loads_its_assets_locally(client):
    page = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert client.get("/api/schema/").status_code == 200


@pytest.mark.django_db
def test_unknown_api_paths_are_404_with_a_message(client):
    response = client.post("/api/v1/traders/.")
    assert response.status_code == 404
    assert response.json() == {"detail": "no API endpoint at /api/v1/traders/. (see /api/docs/)"}
