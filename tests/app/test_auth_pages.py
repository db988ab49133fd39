"""Signing in, CSRF, throttling and roles, through the pages as a marketer uses them."""

from sqlalchemy import func, select

from app.auth.models import ApiKey, User
from members.audit import AuditEntry
from tests import factories


def test_pages_need_a_signed_in_user(client):
    for path in ("/", "/settings/api-keys", "/settings/users", "/audit"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")


def test_sign_in_and_out(client, session):
    factories.user(session, "marketer")
    response = factories.login(client, "Marketer@Shop.example")  # email is case-insensitive
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200
    assert "marketer@shop.example" in home.get_data(as_text=True)
    assert session.scalar(select(User.last_login_at)) is not None

    token = factories.csrf_token(client, "/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302


def test_sign_in_follows_only_local_next(client, session):
    factories.user(session, "marketer")
    token = factories.csrf_token(client, "/login")
    data = {"email": "marketer@shop.example", "password": factories.PASSWORD, "csrf_token": token}
    response = client.post("/login?next=https://evil.example/", data=data)
    assert response.headers["Location"] == "/"


def test_wrong_password_is_refused(client, session):
    factories.user(session, "admin")
    response = factories.login(client, "admin@shop.example", "not the password")
    assert response.status_code == 401
    assert "Wrong email or password" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302
    assert session.scalar(select(User.last_login_at)) is None


def test_unknown_email_answers_like_a_wrong_password(client, session):
    response = factories.login(client, "nobody@shop.example")
    assert response.status_code == 401
    assert "Wrong email or password" in response.get_data(as_text=True)


def test_forged_csrf_token_is_refused_and_changes_nothing(client, session):
    factories.user(session, "admin")
    factories.login(client, "admin@shop.example")
    before = session.scalar(select(func.count()).select_from(ApiKey))
    response = client.post(
        "/settings/api-keys",
        data={"name": "forged", "scopes": ["ingest"], "csrf_token": "forged-token"},
    )
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert session.scalar(select(func.count()).select_from(ApiKey)) == before


def test_login_form_without_csrf_token_is_refused(client, session):
    factories.user(session, "admin")
    response = client.post(
        "/login", data={"email": "admin@shop.example", "password": factories.PASSWORD}
    )
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_repeated_failed_logins_are_throttled(client, session, app):
    factories.user(session, "admin")
    limit = int(app.config["TENURE_SETTINGS"].login_limit.split()[0])
    for _ in range(limit):
        assert factories.login(client, "admin@shop.example", "guess-guess-guess").status_code == 401
    throttled = factories.login(client, "admin@shop.example", factories.PASSWORD)
    assert throttled.status_code == 429
    assert "Retry-After" in throttled.headers
    assert client.get("/").status_code == 302  # even the right password waits


def test_successful_logins_do_not_use_up_the_limit(client, session, app):
    factories.user(session, "admin")
    limit = int(app.config["TENURE_SETTINGS"].login_limit.split()[0])
    for _ in range(limit + 2):
        assert factories.login(client, "admin@shop.example").status_code == 302
        client.post("/logout", data={"csrf_token": factories.csrf_token(client, "/")})


def test_analyst_cannot_create_an_api_key(client, session):
    factories.user(session, "analyst")
    factories.login(client, "analyst@shop.example")
    page = client.get("/settings/api-keys")
    assert page.status_code == 200
    assert "Create an API key" not in page.get_data(as_text=True)
    token = factories.csrf_token(client, "/settings/api-keys")
    response = client.post(
        "/settings/api-keys", data={"name": "sneaky", "scopes": ["admin"], "csrf_token": token}
    )
    assert response.status_code == 403
    assert session.scalar(select(func.count()).select_from(ApiKey)) == 0
    assert (
        session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "api_key.created")
        )
        == 0
    )


def test_marketer_cannot_add_users(client, session):
    factories.user(session, "marketer")
    factories.login(client, "marketer@shop.example")
    token = factories.csrf_token(client, "/settings/users")
    response = client.post(
        "/settings/users",
        data={
            "email": "x@shop.example",
            "role": "admin",
            "password": "x" * 12,
            "csrf_token": token,
        },
    )
    assert response.status_code == 403
    assert session.scalar(select(func.count()).select_from(User)) == 1


def test_admin_creates_a_key_sees_it_once_and_only_its_hash_is_kept(client, session):
    factories.user(session, "admin")
    factories.login(client, "admin@shop.example")
    token = factories.csrf_token(client, "/settings/api-keys")
    response = client.post(
        "/settings/api-keys",
        data={"name": "shop backend", "scopes": ["ingest", "read"], "csrf_token": token},
    )
    assert response.status_code == 201
    html = response.get_data(as_text=True)
    secret = html.split('<code id="new-key">')[1].split("</code>")[0]
    assert secret.startswith("tnr_")
    key = session.scalar(select(ApiKey))
    assert key.name == "shop backend" and key.scopes == "ingest,read"
    assert secret not in (key.key_hash, key.prefix) and key.key_hash != secret
    assert secret not in client.get("/settings/api-keys").get_data(as_text=True)
    audit = session.scalar(select(AuditEntry).where(AuditEntry.action == "api_key.created"))
    assert audit.actor == "user:admin@shop.example"
    # The key works on the API at once.
    assert client.get("/api/v1/api-keys", headers=factories.bearer(secret)).status_code == 403


def test_key_form_errors_name_the_field_and_create_nothing(client, session):
    factories.user(session, "admin")
    factories.login(client, "admin@shop.example")
    token = factories.csrf_token(client, "/settings/api-keys")
    response = client.post("/settings/api-keys", data={"name": "", "csrf_token": token})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Choose at least one scope." in html
    assert "This field is required." in html
    assert session.scalar(select(func.count()).select_from(ApiKey)) == 0


def test_admin_revokes_a_key_from_the_page(client, session):
    factories.user(session, "admin")
    key, secret = factories.api_key(session, "admin")
    factories.login(client, "admin@shop.example")
    token = factories.csrf_token(client, "/settings/api-keys")
    response = client.post(f"/settings/api-keys/{key.id}/revoke", data={"csrf_token": token})
    assert response.status_code == 302
    session.refresh(key)
    assert key.revoked_at is not None
    assert client.get("/api/v1/api-keys", headers=factories.bearer(secret)).status_code == 401


def test_admin_adds_a_user_who_can_then_sign_in(client, session):
    factories.user(session, "admin")
    factories.login(client, "admin@shop.example")
    token = factories.csrf_token(client, "/settings/users")
    response = client.post(
        "/settings/users",
        data={
            "email": "li.na@shop.example",
            "role": "analyst",
            "password": "a long password",
            "csrf_token": token,
        },
    )
    assert response.status_code == 302
    duplicate = client.post(
        "/settings/users",
        data={
            "email": "LI.NA@shop.example",
            "role": "analyst",
            "password": "a long password",
            "csrf_token": token,
        },
    )
    assert duplicate.status_code == 400
    assert "already exists" in duplicate.get_data(as_text=True)
    client.post("/logout", data={"csrf_token": token})
    assert factories.login(client, "li.na@shop.example", "a long password").status_code == 302
    assert "li.na@shop.example" in client.get("/audit").get_data(as_text=True)


def test_overview_shows_how_long_ago_the_jobs_last_ran(client, session, app, now):
    import datetime as dt

    from app.redis_client import get_redis
    from workers.heartbeat import record_heartbeat

    factories.user(session, "analyst")
    factories.login(client, "analyst@shop.example")
    assert "No heartbeat yet" in client.get("/").get_data(as_text=True)
    app.config["TENURE_CLOCK"] = lambda: now
    record_heartbeat(get_redis(app), now - dt.timedelta(seconds=90))
    html = client.get("/").get_data(as_text=True)
    assert "2 minutes ago" in html and "check that" not in html
    record_heartbeat(get_redis(app), now - dt.timedelta(minutes=10))
    assert "check that" in client.get("/").get_data(as_text=True)


def test_guesses_at_one_account_from_many_addresses_are_throttled(client, session, app):
    factories.user(session, "admin")
    limit = int(app.config["TENURE_SETTINGS"].login_limit.split()[0])
    for i in range(limit):
        client.environ_base["REMOTE_ADDR"] = f"10.0.0.{i + 1}"
        assert factories.login(client, "admin@shop.example", "guess-guess-guess").status_code == 401
    client.environ_base["REMOTE_ADDR"] = "10.0.1.1"
    assert factories.login(client, "ADMIN@shop.example", factories.PASSWORD).status_code == 429
    assert factories.login(client, "other@shop.example", "guess-guess-guess").status_code == 401


def test_pages_cannot_be_framed_and_new_secrets_are_not_cached(client, session):
    factories.user(session, "admin")
    assert client.get("/login").headers["X-Frame-Options"] == "DENY"
    factories.login(client, "admin@shop.example")
    token = factories.csrf_token(client, "/settings/api-keys")
    created = client.post(
        "/settings/api-keys", data={"name": "crm", "scopes": ["read"], "csrf_token": token}
    )
    assert created.headers["Cache-Control"] == "no-store"
    assert created.headers["X-Content-Type-Options"] == "nosniff"


def test_overview_shows_the_year_in_figures(client, session, app, now):
    import datetime as dt
    from decimal import Decimal

    from members.event import Event
    from members.member import Member

    app.config["TENURE_CLOCK"] = lambda: now
    factories.user(session, "analyst")
    factories.login(client, "analyst@shop.example")
    assert "The last 12 months" not in client.get("/").get_data(as_text=True)  # no members

    for i in range(4):
        member = Member(external_id=f"m{i}", joined_at=now - dt.timedelta(days=200), attributes={})
        session.add(member)
        session.flush()
        if i < 3:  # three of four bought this month: 75% active
            session.add(
                Event(
                    event_id=f"o{i}",
                    member_id=member.id,
                    type="order",
                    occurred_at=now - dt.timedelta(hours=1),
                    received_at=now,
                    properties={},
                    amount=Decimal("120.00"),
                    currency="CNY",
                )
            )
    session.commit()
    from app.redis_client import get_redis

    get_redis(app).delete("tenure:overview:figures")
    html = client.get("/").get_data(as_text=True)
    assert "The last 12 months" in html
    assert "<svg" in html and "Monthly active rate" in html
    assert "75.0%" in html
    assert "none: 4" in html
    # Read again from the cache: the same figures.
    assert "75.0%" in client.get("/").get_data(as_text=True)
