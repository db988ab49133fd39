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
    # Journeys' examples build on one another: test_journey_examples_work_in_order.
    operations = [o for o in operations if "/journeys" not in o[0] and "/experiments" not in o[0]]
    webhook = "0"  # the endpoint the webhooks example creates (the database gives its id)
    for path, method, op in operations:
        media = op["requestBody"]["content"]["application/json"]
        assert "example" in media, f"{method.upper()} {path} has no example"
        url = path.replace("{external_id}", "u-1").replace("{event_name}", "Order Completed")
        url = url.replace("{key}", "winback_50")  # the template the example creates
        url = url.replace("{name}", "aliyun")  # the provider account the example adds
        url = url.replace("{endpoint_id}", webhook)

        response = client.open(url, method=method.upper(), json=media["example"], headers=headers)
        assert response.status_code < 300, (path, response.get_json())
        answer = response.get_json() or {}
        if path == "/api/v1/webhooks":
            webhook = str(answer["id"])
        statuses = {r.get("status") for r in answer.get("results", [])}
        assert "rejected" not in statuses, (path, answer)


def test_journey_examples_work_in_order(client, session):
    """The journeys' examples, pasted in the order an engineer meets them: create,
    edit, submit, reject, edit, publish, enroll, a second version, publish, migrate."""
    import datetime as dt

    from journeys.models import MessageTemplate
    from members.lifecycle import MemberFeatures
    from members.member import Member
    from tests import factories

    headers = factories.bearer(factories.api_key(session, "admin", name="docs")[1])
    # The example's message template (templates get their own API with messaging),
    # the member it enrolls, and a member its audience (30+ days since an order) matches.
    session.add(MessageTemplate(key="winback_50", name="Win-back", channel="sms", body="..."))
    member = Member(external_id="u-10086")
    session.add(member)
    session.flush()
    now = dt.datetime.now(dt.UTC)
    session.add(MemberFeatures(member_id=member.id, computed_at=now, days_since_last_order=45))
    session.commit()
    spec = client.get("/api/openapi.json").get_json()
    bodies = {
        (path, method): op["requestBody"]["content"]["application/json"]["example"]
        for path, methods in spec["paths"].items()
        if "/journeys" in path
        for method, op in methods.items()
        if isinstance(op, dict) and "requestBody" in op
    }
    story = [
        ("/api/v1/journeys", "post"),
        ("/api/v1/journeys/{key}/versions/{number}", "put"),
        ("/api/v1/journeys/{key}/submit", "post"),
        ("/api/v1/journeys/{key}/reject", "post"),
        ("/api/v1/journeys/{key}/draft", "put"),
        ("/api/v1/journeys/{key}/publish", "post"),
        ("/api/v1/journeys/{key}/enroll", "post"),
        ("/api/v1/journeys/{key}/draft", "put"),
        ("/api/v1/journeys/{key}/publish", "post"),
        ("/api/v1/journeys/{key}/migration/preview", "post"),
        ("/api/v1/journeys/{key}/migration", "post"),
    ]
    assert set(bodies) <= set(story), set(bodies) - set(story)
    for path, method in story:
        url = path.replace("{key}", "winback").replace("{number}", "1")
        body = bodies.get((path, method))
        response = client.open(url, method=method.upper(), json=body, headers=headers)
        assert response.status_code < 300, (method, path, response.get_json())


def test_experiment_examples_work_in_order(client, session):
    """The experiments' examples, pasted in the order an engineer meets them: design,
    edit, import what ran by hand, start, assign, report an exposure, size the next."""
    from members.lifecycle import Stage
    from members.member import Member
    from tests import factories

    headers = factories.bearer(factories.api_key(session, "admin", name="docs")[1])
    # the example's audience is at-risk members
    at_risk = {"stage": Stage.AT_RISK}
    session.add_all([Member(external_id=f"u-{n}", **at_risk) for n in (1001, 1002, 1003)])
    session.commit()
    spec = client.get("/api/openapi.json").get_json()
    bodies = {
        (path, method): op["requestBody"]["content"]["application/json"]["example"]
        for path, methods in spec["paths"].items()
        if "/experiments" in path
        for method, op in methods.items()
        if isinstance(op, dict) and "requestBody" in op
    }
    story = [
        ("/api/v1/experiments", "post"),
        ("/api/v1/experiments/{key}", "patch"),
        ("/api/v1/experiments/{key}/assignments", "post"),
        ("/api/v1/experiments/{key}/start", "post"),
        ("/api/v1/experiments/{key}/assign", "post"),
        ("/api/v1/experiments/{key}/exposures", "post"),
        ("/api/v1/experiments/power", "post"),
    ]
    assert set(bodies) <= set(story), set(bodies) - set(story)
    for path, method in story:
        url = path.replace("{key}", "service_vs_discount")
        body = bodies.get((path, method))
        response = client.open(url, method=method.upper(), json=body, headers=headers)
        assert response.status_code < 300, (method, path, response.get_json())
    csv_example = spec["paths"]["/api/v1/experiments/{key}/assignments"]["post"]["requestBody"]
    text = csv_example["content"]["text/csv"]["example"]
    response = client.post(
        "/api/v1/experiments/service_vs_discount/assignments",
        data=text.encode(),
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert response.status_code == 201, response.get_json()
    results = client.get("/api/v1/experiments/service_vs_discount/results", headers=headers)
    assert results.status_code == 200, results.get_json()
