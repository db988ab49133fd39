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
