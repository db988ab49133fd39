"""Admins change roles and switch accounts off; Tenure always keeps one active admin."""

from sqlalchemy import select

from app.auth.models import Role, User
from members.audit import AuditEntry
from tests import factories


def _update(client, user, role, active):
    token = factories.csrf_token(client, "/settings/users")
    data = {f"u{user.id}-role": role, f"u{user.id}-csrf_token": token}
    if active:
        data[f"u{user.id}-active"] = "y"
    return client.post(f"/settings/users/{user.id}", data=data)


def test_admin_changes_a_role_and_it_is_audited(client, session):
    factories.user(session, "admin")
    marketer = factories.user(session, "marketer")
    factories.login(client, "admin@shop.example")
    assert _update(client, marketer, "analyst", active=True).status_code == 302
    session.refresh(marketer)
    assert marketer.role is Role.ANALYST
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "user.updated"))
    assert entry.details["role"] == ["marketer", "analyst"]


def test_a_switched_off_user_is_signed_out_and_cannot_sign_in(app, session):
    factories.user(session, "admin")
    marketer = factories.user(session, "marketer")
    theirs = app.test_client()
    factories.login(theirs, "marketer@shop.example")
    assert theirs.get("/").status_code == 200
    admin = app.test_client()
    factories.login(admin, "admin@shop.example")
    assert _update(admin, marketer, "marketer", active=False).status_code == 302
    assert theirs.get("/").status_code == 302
    assert factories.login(theirs, "marketer@shop.example").status_code == 401


def test_the_last_admin_cannot_be_demoted_or_switched_off(client, session):
    admin = factories.user(session, "admin")
    factories.login(client, "admin@shop.example")
    refused = _update(client, admin, "marketer", active=True)
    assert refused.status_code == 409
    assert "at least one active admin" in refused.get_data(as_text=True)
    assert _update(client, admin, "admin", active=False).status_code == 409
    session.refresh(admin)
    assert admin.role is Role.ADMIN and admin.active
    assert session.scalar(select(AuditEntry).where(AuditEntry.action == "user.updated")) is None


def test_with_a_second_admin_the_first_may_step_down(client, session):
    first = factories.user(session, "admin")
    factories.user(session, "admin", email="second@shop.example")
    factories.login(client, "admin@shop.example")
    assert _update(client, first, "analyst", active=True).status_code == 302
    assert session.scalar(select(User.role).where(User.id == first.id)) is Role.ANALYST
    assert _update(client, first, "admin", active=True).status_code == 403  # now an analyst


def test_an_unknown_role_changes_nothing(client, session):
    factories.user(session, "admin")
    marketer = factories.user(session, "marketer")
    factories.login(client, "admin@shop.example")
    assert _update(client, marketer, "owner", active=True).status_code == 302
    session.refresh(marketer)
    assert marketer.role is Role.MARKETER
    assert "Choose a valid role." in client.get("/settings/users").get_data(as_text=True)


def test_two_admins_demoting_each_other_at_once_leave_one_admin(committed_app):
    """Both check 'is another admin left?' at the same moment; one must wait and lose."""
    import threading

    from app.auth.service import AuthError, create_user, update_user

    maker = db_state = None
    from app.extensions import db

    db_state = db.state(committed_app)
    maker = db_state.sessionmaker
    with maker() as s:
        ids = [
            create_user(
                s,
                email=f"a{i}@shop.example",
                password=factories.PASSWORD,
                role="admin",
                actor="test",
                now=factories.NOW,
            ).id
            for i in (1, 2)
        ]
        s.commit()
    first_locked = threading.Event()
    outcomes: dict[int, str] = {}

    def demote(own: int, other_goes_first: bool) -> None:
        with maker() as s:
            if other_goes_first:
                first_locked.wait(10)
            try:
                update_user(s, s.get(User, own), role="marketer", actor="test", now=factories.NOW)
                if not other_goes_first:
                    first_locked.set()
                    threading.Event().wait(0.5)  # hold the lock while the other one tries
                s.commit()
                outcomes[own] = "demoted"
            except AuthError:
                s.rollback()
                outcomes[own] = "refused"
            finally:
                first_locked.set()

    threads = [
        threading.Thread(target=demote, args=(ids[0], False)),
        threading.Thread(target=demote, args=(ids[1], True)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes.values()) == ["demoted", "refused"]
    with maker() as s:
        admins = s.scalars(select(User).where(User.role == Role.ADMIN, User.active)).all()
    assert len(admins) == 1
