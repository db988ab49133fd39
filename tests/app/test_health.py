"""GET /healthz: 200 when database and Redis answer, 503 naming the one that does not."""

from workers.heartbeat import KEY


def test_healthy(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "database": "ok",
        "redis": "ok",
        "last_cron_heartbeat": None,
    }


def test_reports_the_last_cron_heartbeat(client, app):
    from app.redis_client import get_redis

    get_redis(app).set(KEY, "2026-11-23T06:00:00+00:00")
    assert client.get("/healthz").get_json()["last_cron_heartbeat"] == "2026-11-23T06:00:00+00:00"


def test_redis_down_is_503(make_app, tmp_path):
    dead = make_app(redis_url=f"unix://{tmp_path}/no-such.sock")
    response = dead.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {
        "status": "unavailable",
        "database": "ok",
        "redis": "unavailable",
    }


def test_database_down_is_503(settings, make_app, tmp_path):
    if settings.is_sqlite:
        url = f"sqlite:///{tmp_path}/missing-dir/tenure.db"
    else:
        url = "postgresql+psycopg://tenure@127.0.0.1:1/tenure"
    response = make_app(database_url=url).test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["database"] == "unavailable" and body["redis"] == "ok"
