"""`flask --app wsgi simulate` as a marketer rehearsing a campaign or a newcomer runs it:
a small virtual membership lived through Tenure, its report, a stop and a resume, and
every bad option refused in one line with nothing written."""

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import func, select

from experiments.models import Assignment, Experiment
from journeys.models import Enrollment, Journey, Message, MessageStatus
from members.event import Event
from members.member import ConsentRecord, Member
from members.programme import Cursor
from simulator import run as simulation

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def cli(app, tmp_path):
    app.config["TENURE_CLOCK"] = lambda: NOW
    app.config["TENURE_SETTINGS"] = dataclasses.replace(
        app.config["TENURE_SETTINGS"], instance_path=tmp_path
    )
    return app.test_cli_runner()


def _count(session, model, *where):
    return session.scalar(select(func.count()).select_from(model).where(*where))


def _nothing_written(session, tmp_path):
    assert _count(session, Member) == 0
    assert _count(session, Event) == 0
    assert session.get(Cursor, simulation.DAY_CURSOR) is None
    assert not (tmp_path / "simulation").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--members", "0", "--days", "5"], "--members: must be at least 1 (got 0)"),
        (["--members", "10", "--days", "-1"], "--days: must be at least 1 (got -1)"),
        (["--members", "10", "--days", "0"], "--days: must be at least 1 (got 0)"),
        (["--members", "20000000", "--days", "5"], "--members: at most 10,000,000"),
        (["--members", "10"], "--days: give it (or --resume to continue"),
        (["--days", "10"], "--members: give it"),
        (
            ["--members", "10", "--days", "5", "--start", "2027-01-01"],
            "--start: 2027-01-01 is in the future (today is 2026-11-23)",
        ),
        (
            ["--members", "10", "--days", "30", "--start", "2026-11-01"],
            "--start: 2026-11-01 plus 30 days ends after today (2026-11-23); "
            "start on 2026-10-24 or earlier",
        ),
        (["--members", "10", "--days", "5", "--seed", "-3"], "--seed: must be 0 to"),
        (["--members", "10", "--days", "5", "--history", "9"], "--history: must be 0 to --days"),
        (["--members", "ten", "--days", "5"], "'ten' is not a valid integer"),
        (["--members", "10", "--days", "5", "--start", "23/11/2026"], "--start"),
        (["--resume"], "--resume: no simulation to continue"),
        (["--resume", "--members", "5"], "--members: --resume continues the saved plan"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(cli, session, tmp_path, args, message):
    result = cli.invoke(args=["simulate", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert message in lines[0]
    assert "Traceback" not in result.output
    _nothing_written(session, tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[purchases]\nrate_meen = 0.1\n", "purchases.rate_meen: not a parameter"),
        ("[purchases]\nrate_mean = 'lots'\n", "purchases.rate_mean: must be a number"),
        ("[churn]\nbase_hazard = -0.1\n", "churn.base_hazard: must be at least 0"),
        ("[clock\n", "is not a TOML file"),
    ],
)
def test_a_bad_parameters_file_is_named_and_writes_nothing(cli, session, tmp_path, text, message):
    path = tmp_path / "shop.toml"
    path.write_text(text, encoding="utf-8")
    result = cli.invoke(args=["simulate", "--members", "10", "--days", "5", "--params", str(path)])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert message in result.output
    _nothing_written(session, tmp_path)


def test_a_simulation_lives_a_membership_through_tenure_and_reports(cli, session, tmp_path):
    result = cli.invoke(
        args=[
            *("simulate", "--members", "240", "--days", "40", "--history", "12"),
            *("--seed", "4", "--campaigns"),
        ]
    )
    assert result.exit_code == 0, result.output
    assert "Simulated 40 days from 2026-10-14" in result.output
    assert "Go-live 2026-10-26: started dormant_winback" in result.output

    members = _count(session, Member, Member.external_id.like("sim-%"))
    assert 200 < members <= 240
    # Through the API's own code: consent recorded as PIPL wants, events with members.
    assert _count(session, ConsentRecord, ConsentRecord.source == "signup_form") >= members
    kinds = dict(session.execute(select(Event.type, func.count()).group_by(Event.type)).all())
    assert kinds["order"] > 50 and kinds["login"] + kinds["app_open"] > 500
    assert set(kinds) <= {
        "order", "login", "app_open", "checkin", "review", "share", "refund",
        "coupon_redeemed", "referral",
    }  # fmt: skip
    # Nothing happened before a member joined, nor after the last simulated day.
    early = session.scalar(
        select(func.count())
        .select_from(Event)
        .join(Member, Member.id == Event.member_id)
        .where(Event.occurred_at < Member.joined_at)
    )
    assert early == 0
    assert session.scalar(select(func.max(Event.occurred_at))) <= NOW
    # The last lifecycle run (10:00 on the last day) placed every member there by then.
    last_run = dt.datetime(2026, 11, 22, 2, 0, tzinfo=dt.UTC)
    assert _count(session, Member, Member.stage.is_(None), Member.joined_at <= last_run) == 0
    # Journeys went live only at go-live, and then acted.
    first = session.scalar(select(func.min(Enrollment.entered_at)))
    assert first >= dt.datetime(2026, 10, 25, 16, 0, tzinfo=dt.UTC)
    assert _count(session, Journey) == 6
    assert _count(session, Message, Message.status == MessageStatus.DELIVERED) > 0
    experiment = session.scalar(select(Experiment))
    assert experiment.key == "benefit_packages" and experiment.status.value == "running"
    assert _count(session, Assignment) > 0
    assert session.get(Cursor, simulation.DAY_CURSOR).position == 40
    assert (tmp_path / "simulation" / simulation.STATE_FILE).exists()

    report = cli.invoke(args=["simulate", "report"])
    assert report.exit_code == 0, report.output
    assert "experiment benefit_packages: service vs discount" in report.output
    assert "journey new_member_onboarding" in report.output

    again = cli.invoke(args=["simulate", "--members", "10", "--days", "5"])
    assert again.exit_code == 2
    assert "this database holds a simulation (seed 4, day 40)" in again.output
    done = cli.invoke(args=["simulate", "--resume"])
    assert done.exit_code == 2
    assert "the simulation is complete (40 days)" in done.output


def test_the_report_without_a_simulation_says_so(cli):
    result = cli.invoke(args=["simulate", "report"])
    assert result.exit_code == 2
    assert "no simulation in this instance" in result.output


def test_an_instance_with_provider_accounts_is_refused(cli, session, tmp_path):
    from journeys.channel_models import ProviderAccount

    session.add(
        ProviderAccount(
            name="real", kind="twilio", channel="sms", scope="all", receipt_token="t" * 32
        )
    )
    session.commit()
    result = cli.invoke(args=["simulate", "--members", "10", "--days", "5"])
    assert result.exit_code == 2
    assert "provider account(s): simulated members must not reach a real provider" in (
        result.output
    )
    assert _count(session, Member) == 0


def _fingerprint(app):
    """What a user would compare between two runs: counts and sums by kind."""
    from app.extensions import db

    with app.app_context():
        s = db.session
        return {
            "events": sorted(
                s.execute(
                    select(Event.type, func.count(), func.sum(Event.amount)).group_by(Event.type)
                ).all()
            ),
            "stages": sorted(
                s.execute(select(Member.stage, func.count()).group_by(Member.stage)).all(),
                key=str,
            ),
            "messages": s.scalar(select(func.count()).select_from(Message)),
            "assignments": sorted(
                s.execute(select(Assignment.member_id, Assignment.variant_id)).all()
            ),
            "enrollments": s.scalar(select(func.count()).select_from(Enrollment)),
        }


def _sqlite_app(make_app, tmp_path, name):
    from tests.conftest import migrate

    folder = tmp_path / name
    folder.mkdir()
    app = make_app(database_url=f"sqlite:///{folder / 'tenure.db'}", instance_path=folder)
    migrate(app)
    app.config["TENURE_CLOCK"] = lambda: NOW
    return app


SMALL = ["simulate", "--members", "160", "--days", "30", "--history", "8", "--campaigns"]


@pytest.mark.slow
def test_the_same_seed_gives_the_same_numbers_and_a_resumed_run_the_same(make_app, tmp_path):
    first = _sqlite_app(make_app, tmp_path, "first")
    second = _sqlite_app(make_app, tmp_path, "second")
    resumed = _sqlite_app(make_app, tmp_path, "resumed")
    for app in (first, second):
        result = app.test_cli_runner().invoke(args=[*SMALL, "--seed", "9"])
        assert result.exit_code == 0, result.output
    assert _fingerprint(first) == _fingerprint(second)

    # Stopped after 13 days (as Ctrl-C does, at the end of a simulated day), then resumed.
    from app.extensions import db
    from simulator import params

    with resumed.app_context():
        settings = resumed.config["TENURE_SETTINGS"]
        plan = simulation.Plan(
            members=160,
            days=30,
            seed=9,
            start=dt.date(2026, 10, 24),
            history=8,
            campaigns=True,
        )
        sim = simulation.new(plan, params.Params(), settings.timezone)
        config = simulation.Settings(
            timezone=settings.timezone,
            currency=settings.currency,
            journey_batch=settings.journey_batch,
            folder=settings.instance_path / "simulation",
        )
        from simulator import campaigns

        simulation.run(
            db.session,
            sim,
            config,
            should_stop=lambda: sim.next_day >= 13,
            go_live=lambda s, now: campaigns.start(s, now, salt="sim-9"),
        )
        assert sim.next_day == 13
        assert db.session.get(Cursor, simulation.DAY_CURSOR).position == 13
    later = resumed.test_cli_runner().invoke(args=["simulate", "--resume"])
    assert later.exit_code == 0, later.output
    assert _fingerprint(resumed) == _fingerprint(first)

    other = _sqlite_app(make_app, tmp_path, "other")
    result = other.test_cli_runner().invoke(args=[*SMALL, "--seed", "10"])
    assert result.exit_code == 0
    assert _fingerprint(other) != _fingerprint(first)


def test_members_answer_a_points_reminder_by_spending_points(cli, session):
    """A marketer rehearses a points expiry reminder: published before the simulation,
    it acts from the first day, and reminded members spend their points."""
    from journeys import versions
    from journeys.models import MessageTemplate
    from members import points
    from members.loyalty import PointsEntry

    points.SETTING.save(
        session,
        points.PointsRules(expiry_months=1, notice_days=7),
        actor="t",
        now=NOW - dt.timedelta(days=60),
    )
    session.add(
        MessageTemplate(
            key="pts", name="pts", channel="sms", body="{{ member.name }}，您的积分7天后到期"
        )
    )
    definition = {
        "trigger": {"type": "date", "field": "points_expiry", "days_before": 7, "at": "10:00"},
        "entry": {"reentry": "after_days", "reentry_days": 20},
        "start": "tell",
        "steps": {
            "tell": {"type": "send", "channel": "sms", "template": "pts", "next": "done"},
            "done": {"type": "exit"},
        },
    }
    journey = versions.create(
        session, key="points_reminder", name="积分到期提醒", definition_data=definition,
        actor="t", now=NOW - dt.timedelta(days=60),
    )  # fmt: skip
    versions.publish(session, journey, actor="t", now=NOW - dt.timedelta(days=60), approver=True)
    session.commit()

    result = cli.invoke(args=["simulate", "--members", "300", "--days", "50", "--seed", "5"])
    assert result.exit_code == 0, result.output
    reminded = _count(session, Message, Message.status == MessageStatus.DELIVERED)
    assert reminded > 10
    spent = session.scalars(select(PointsEntry).where(PointsEntry.source == "simulator")).all()
    # About a third of the reminded spend (effects.points_reminder_redemption = 0.35).
    assert 0.15 * reminded < len(spent) < 0.6 * reminded
    assert all(entry.points < 0 for entry in spent)


def test_an_unreadable_saved_state_is_one_line(cli, session, tmp_path):
    (tmp_path / "simulation").mkdir()
    (tmp_path / "simulation" / simulation.STATE_FILE).write_bytes(b"not a simulation")
    result = cli.invoke(args=["simulate", "--resume"])
    assert result.exit_code == 2
    assert "cannot be read (UnpicklingError)" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_params_file_is_kept_for_the_resume(cli, session, tmp_path):
    path = tmp_path / "shop.toml"
    path.write_text("[purchases]\nrate_mean = 0.03\n", encoding="utf-8")
    result = cli.invoke(args=["simulate", "--members", "50", "--days", "6", "--params", str(path)])
    assert result.exit_code == 0, result.output
    sim = simulation.load(tmp_path / "simulation")
    assert sim.params.purchases.rate_mean == 0.03


def test_an_instance_with_webhook_endpoints_is_refused(cli, session):
    from journeys.webhook_models import WebhookEndpoint

    session.add(WebhookEndpoint(url="https://shop.example/hook", secret_encrypted="x"))
    session.commit()
    result = cli.invoke(args=["simulate", "--members", "10", "--days", "5"])
    assert result.exit_code == 2
    assert "webhook endpoint(s): simulated members must not reach a real system" in result.output
    assert _count(session, Member) == 0
