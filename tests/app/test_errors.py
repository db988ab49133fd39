"""No request yields a traceback: problem+json for the API, an HTML page for people."""

import pytest

from tests import factories


@pytest.fixture
def broken_app(app):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production, where TESTING is off

    @app.get("/api/v1/boom")
    def api_boom():
        raise RuntimeError("secret internals")

    @app.get("/boom")
    def page_boom():
        raise RuntimeError("secret internals")

    return app


def test_unknown_api_path_is_a_problem_document(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["title"] == "Not Found"


def test_unknown_page_is_an_html_page(client):
    response = client.get("/nothing-here")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "There is nothing at this address." in response.get_data(as_text=True)


def test_wrong_method_on_the_api_is_405(client):
    response = client.put("/api/v1/api-keys")
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"


def test_unexpected_error_on_the_api_shows_no_internals(broken_app, caplog):
    client = broken_app.test_client()
    response = client.get("/api/v1/boom", headers={"X-Request-ID": "req-123"})
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    body = response.get_data(as_text=True)
    assert "secret internals" not in body and "Traceback" not in body
    assert response.get_json()["request_id"] == "req-123"
    assert any("secret internals" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_unexpected_error_on_a_page_shows_no_internals(broken_app):
    client = broken_app.test_client()
    response = client.get("/boom")
    assert response.status_code == 500
    html = response.get_data(as_text=True)
    assert "secret internals" not in html and "Traceback" not in html
    assert response.headers["X-Request-ID"] in html


def test_request_ids_are_echoed_or_made(client):
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-1"}).headers["X-Request-ID"] == "abc-1"
    )
    made = client.get("/healthz", headers={"X-Request-ID": "bad id; <script>"}).headers[
        "X-Request-ID"
    ]
    assert len(made) == 32 and made.isalnum()


def test_forbidden_page_for_a_role_is_html_403(client, session):
    factories.user(session, "analyst")
    factories.login(client, "analyst@shop.example")
    token = factories.csrf_token(client, "/settings/users")
    response = client.post("/settings/users", data={"csrf_token": token})
    assert response.status_code == 403
    assert "Your role does not allow this" in response.get_data(as_text=True)
