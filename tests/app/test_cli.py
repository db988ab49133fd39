"""The CLI as an operator uses it: clear output, one-line errors, non-zero exits."""

import pytest
from sqlalchemy import func, select

from app.auth.models import ApiKey, Role, User
from app.auth.service import hash_key
from members.audit import AuditEntry


@pytest.fixture
def cli(app):
    return app.test_cli_runner()


def _count(session, model):
    return session.scalar(select(func.count()).select_from(model))


def test_create_user_from_stdin(cli, session):
    result = cli.invoke(
        args=["create-user", "Ops@Shop.example", "--role", "admin", "--password-stdin"],
        input="a long enough password\n",
    )
    assert result.exit_code == 0, result.output
    assert "Created admin ops@shop.example" in result.output
    user = session.scalar(select(User))
    assert user.role is Role.ADMIN
    assert "a long enough password" not in user.password_hash
    entry = session.scalar(select(AuditEntry))
    assert (entry.actor, entry.action) == ("cli", "user.created")


def test_create_user_prompts_for_the_password_twice(cli, session):
    result = cli.invoke(
        args=["create-user", "m@shop.example", "--role", "marketer"],
        input="password-1234\npassword-1234\n",
    )
    assert result.exit_code == 0, result.output
    assert _count(session, User) == 1


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["create-user", "not-an-email", "--role", "admin", "--password-stdin"],
            "long enough password",
            "Error: email: ",
        ),
        (
            ["create-user", "a@shop.example", "--role", "admin", "--password-stdin"],
            "short",
            "Error: password: the password needs at least 10 characters",
        ),
        (
            ["create-user", "a@shop.example", "--role", "boss", "--password-stdin"],
            "long enough password",
            "Invalid value for '--role'",
        ),
        (
            ["create-api-key", "crm", "--scopes", "ingest,root"],
            None,
            "Error: scopes: unknown scope 'root'",
        ),
        (["create-api-key", "crm", "--scopes", ""], None, "Error: scopes: give at least one"),
        (["create-api-key", " ", "--scopes", "read"], None, "Error: name: "),
        (["worker", "--queue", "urgent"], None, "Error: --queue: unknown queue 'urgent'"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(cli, session, args, stdin, message):
    result = cli.invoke(args=args, input=stdin)
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert _count(session, User) == 0 and _count(session, ApiKey) == 0
    assert _count(session, AuditEntry) == 0


def test_duplicate_user_is_refused(cli, session):
    args = ["create-user", "a@shop.example", "--role", "analyst", "--password-stdin"]
    assert cli.invoke(args=args, input="long enough password\n").exit_code == 0
    result = cli.invoke(args=args, input="long enough password\n")
    assert result.exit_code == 2
    assert "already exists" in result.output
    assert _count(session, User) == 1


def test_create_api_key_prints_the_secret_once_and_keeps_its_hash(app, session):
    result = app.test_cli_runner().invoke(
        args=["create-api-key", "shop", "--scopes", "ingest, read"]
    )
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert secret.startswith("tnr_") and "\n" not in secret
    key = session.scalar(select(ApiKey))
    assert key.key_hash == hash_key(secret)
    assert key.scopes == "ingest,read"
    response = app.test_client().get(
        "/api/v1/api-keys", headers={"Authorization": f"Bearer {secret}"}
    )
    assert response.status_code == 403  # a working key, without the admin scope


def test_embedded_redis_command_refuses_when_redis_url_is_set(cli):
    result = cli.invoke(args=["redis", "status"])
    assert result.exit_code == 2
    assert "REDIS_URL is set" in result.output


def test_missing_argument_is_one_line(cli):
    result = cli.invoke(args=["create-api-key"])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: Missing argument 'NAME'."


def test_an_unmigrated_database_is_one_line_not_a_traceback(make_app, tmp_path):
    bare = make_app(database_url=f"sqlite:///{tmp_path}/empty.db")
    result = bare.test_cli_runner().invoke(
        args=["create-user", "a@shop.example", "--role", "admin", "--password-stdin"],
        input="long enough password\n",
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: the database refused the command (OperationalError): is it reachable, "
        "and migrated with `flask --app wsgi db upgrade`?"
    ]
