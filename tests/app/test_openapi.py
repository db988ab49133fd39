"""The OpenAPI document and its interactive docs, served without any CDN."""


def test_openapi_document_lists_the_api(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/api-keys" in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    post = spec["paths"]["/api/v1/api-keys"]["post"]
    assert post["security"] == [{"bearerAuth": []}]
    assert "422" in post["responses"]


def test_interactive_docs_use_local_assets(client):
    html = client.get("/api/docs").get_data(as_text=True)
    assert "/api/docs-assets/swagger-ui-bundle.js" in html
    assert "//cdn" not in html and "unpkg" not in html
    asset = client.get("/api/docs-assets/swagger-ui-bundle.js")
    assert asset.status_code == 200
    assert len(asset.get_data()) > 100_000
    asset.close()


def test_every_request_example_works_when_pasted(client, session):
    """What the interactive docs send on "Try it out": each body's example, with an
    admin key; members first, as a reader would start."""
    from tests import factories

    headers = factories.bearer(factories.api_key(session, "admin", name="docs")[1])
    spec = client.get("/api/openapi.json").get_json()
    operations = [
        (path, method, op)
        for path, methods in spec["paths"].items()
        for method, op in methods.items()
        if isinstance(op, dict) and "requestBody" in op
    ]
    operations.sort(key=lambda o: o[0] != "/api/v1/members")
    assert len(operations) >= 14
    for path, method, op in operations:
        media = op["requestBody"]["content"]["application/json"]
        assert "example" in media, f"{method.upper()} {path} has no example"
        url = path.replace("{external_id}", "u-1").replace("{event_name}", "Order Completed")
        response = client.open(url, method=method.upper(), json=media["example"], headers=headers)
        assert response.status_code < 300, (path, response.get_json())
        answer = response.get_json() or {}
        statuses = {r.get("status") for r in answer.get("results", [])}
        assert "rejected" not in statuses, (path, answer)
