"""CSV files of members and events, as shops export them (UTF-8 with or without BOM,
or GB18030 as Chinese Excel writes it): read, check every row, then store.

Columns: members — external_id, phone, name, timezone, region, birthday (YYYY-MM-DD),
joined_at (ISO 8601 with offset); any ``attr.<name>`` column goes into attributes.
Events — event_id, member, type, occurred_at, amount, currency, category; any
``prop.<name>`` column goes into properties. Empty cells are absent values.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from members import ingest, profiles
from members.errors import InvalidField
from members.fields import parse_time
from members.lifecycle import Stage

MEMBER_COLUMNS = {"external_id", "phone", "name", "timezone", "region", "birthday", "joined_at"}
EVENT_COLUMNS = {"event_id", "member", "type", "occurred_at", "amount", "currency", "category"}
CHUNK = 1000
SAMPLE_ROWS = 5  # good rows a report keeps, as they will be stored, for a preview


class CsvError(ValueError):
    """The file as a whole cannot be read (encoding, header)."""


@dataclasses.dataclass(frozen=True)
class RowError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


@dataclasses.dataclass
class Report:
    rows: int = 0
    valid: int = 0
    errors: list[RowError] = dataclasses.field(default_factory=list)
    stored: dict[str, int] = dataclasses.field(default_factory=dict)
    # The first good rows in the file's column names, values as they will be stored.
    sample: list[dict[str, str]] = dataclasses.field(default_factory=list)


def decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        # Text never holds NUL; a spreadsheet (.xlsx is a zip) often decodes anyway.
        if "\x00" in text:
            raise CsvError(
                "the file contains NUL characters, so it is not CSV text "
                "(a spreadsheet? save it as CSV first)"
            )
        return text
    raise CsvError("the file is neither UTF-8 nor GB18030 text")


def _rows(
    text: str, required: set[str], known: set[str], prefix: str
) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        yield from _checked_rows(reader, required, known, prefix)
    except csv.Error as exc:
        # An unclosed quote swallows the rest of the file into one huge cell.
        raise CsvError(
            f"line {reader.line_num}: not readable as CSV ({exc}); is a quote left open?"
        ) from None


def _checked_rows(
    reader: csv.DictReader, required: set[str], known: set[str], prefix: str
) -> Iterator[tuple[int, dict[str, str]]]:
    header = [h.strip() for h in reader.fieldnames or []]
    if not header:
        raise CsvError("the file is empty: the first line must name the columns")
    reader.fieldnames = header
    missing = required - set(header)
    if missing:
        raise CsvError(f"missing column(s): {', '.join(sorted(missing))}")
    unknown = [h for h in header if h not in known and not h.startswith(prefix)]
    if unknown:
        raise CsvError(
            f"unknown column(s): {', '.join(unknown)} (extra data goes in {prefix}<name> columns)"
        )
    for row in reader:
        # The line of the row's last physical line: quoted cells may span lines.
        yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}


def parse_members(text: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    for line, row in _rows(text, {"external_id"}, MEMBER_COLUMNS, "attr."):
        try:
            yield line, _member(row)
        except InvalidField as exc:
            yield line, RowError(line, exc.field, exc.message)


def _member(row: dict[str, str]) -> dict[str, Any]:
    if not row.get("external_id"):
        raise InvalidField("external_id", "is empty")
    if len(row["external_id"]) > 128:
        raise InvalidField("external_id", "is longer than 128 characters")
    item: dict[str, Any] = {
        k: v
        for k, v in row.items()
        if k in MEMBER_COLUMNS and v and k not in ("birthday", "joined_at")
    }
    if row.get("birthday"):
        try:
            item["birthday"] = dt.date.fromisoformat(row["birthday"])
        except ValueError:
            raise InvalidField("birthday", f"{row['birthday']!r} is not YYYY-MM-DD") from None
    if row.get("joined_at"):
        item["joined_at"] = parse_time(row["joined_at"], "joined_at")
    attributes = {k.removeprefix("attr."): v for k, v in row.items() if k.startswith("attr.") and v}
    if attributes:
        item["attributes"] = attributes
    clean = profiles.clean_profile(item)  # phone and time zone, as the API checks them
    clean["external_id"] = item["external_id"]
    return clean


def parse_events(text: str, now: dt.datetime) -> Iterator[tuple[int, ingest.EventIn | RowError]]:
    for line, row in _rows(
        text, {"event_id", "member", "type", "occurred_at"}, EVENT_COLUMNS, "prop."
    ):
        try:
            event = _event(row)
            problem = ingest.check(event, now)
            if problem:
                raise InvalidField(*problem)
            yield line, event
        except InvalidField as exc:
            yield line, RowError(line, exc.field, exc.message)


def _event(row: dict[str, str]) -> ingest.EventIn:
    for name in ("event_id", "member", "type", "occurred_at"):
        if not row.get(name):
            raise InvalidField(name, "is empty")
    for name, longest in (("event_id", 100), ("member", 128), ("category", 64)):
        if len(row.get(name) or "") > longest:
            raise InvalidField(name, f"is longer than {longest} characters")
    amount = None
    if row.get("amount"):
        try:
            amount = Decimal(row["amount"].replace(",", ""))
        except InvalidOperation:
            raise InvalidField("amount", f"{row['amount']!r} is not a number") from None
    return ingest.EventIn(
        event_id=row["event_id"],
        member=row["member"],
        type=row["type"],
        occurred_at=parse_time(row["occurred_at"], "occurred_at"),
        amount=amount,
        currency=row.get("currency") or None,
        category=row.get("category") or None,
        properties={
            k.removeprefix("prop."): v for k, v in row.items() if k.startswith("prop.") and v
        },
    )


def _check(parsed_rows, progress: Callable[[int], None]) -> tuple[Report, list]:
    """Count every row, keep the good ones, collect the errors of the bad ones."""
    report = Report()
    good = []
    for _, parsed in parsed_rows:
        report.rows += 1
        progress(1)
        if isinstance(parsed, RowError):
            report.errors.append(parsed)
        else:
            good.append(parsed)
            if len(report.sample) < SAMPLE_ROWS:
                report.sample.append(_sample_row(parsed))
    report.valid = len(good)
    return report, good


def _sample_row(parsed: dict[str, Any] | ingest.EventIn) -> dict[str, str]:
    """A good row in the file's column names (attr.x, prop.x), values as stored."""
    if isinstance(parsed, ingest.EventIn):
        values = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)}
        extra, prefix = values.pop("properties"), "prop."
    else:
        values = {"external_id": parsed["external_id"], **parsed}
        extra, prefix = values.pop("attributes", None) or {}, "attr."
    row = {name: _cell(value) for name, value in values.items() if value is not None}
    row.update({prefix + name: _cell(value) for name, value in extra.items()})
    return row


def _cell(value: object) -> str:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def import_members(
    session: Session,
    text: str,
    *,
    now: dt.datetime,
    write: bool,
    progress: Callable[[int], None] = lambda n: None,
    written: Callable[[int], None] = lambda n: None,
) -> Report:
    """Check every row; when ``write`` and no row is bad, upsert them all, calling
    ``written`` after each chunk (the caller may commit there: an import run again
    updates the same members)."""
    report, items = _check(parse_members(text), progress)
    if write and not report.errors:
        created, updated = profiles.upsert_many(
            session, ((item.pop("external_id"), item) for item in items), now, written
        )
        report.stored = {"created": created, "updated": updated}
    return report


def import_events(
    session: Session,
    text: str,
    *,
    now: dt.datetime,
    write: bool,
    default_currency: str,
    unknown_members: ingest.UnknownMembers,
    progress: Callable[[int], None] = lambda n: None,
    written: Callable[[int], None] = lambda n: None,
    clock: Callable[[], dt.datetime] | None = None,
) -> Report:
    """Check every row; when ``write`` and no row is bad, store them in chunks, calling
    ``written`` after each (the caller may commit there: an import run again skips
    the events stored, by their event_id). With ``clock``, each chunk is received at
    its own time: periodic passes take events received a minute ago as committed."""
    report, events = _check(parse_events(text, now), progress)
    if write and not report.errors:
        stored: dict[str, int] = {}
        for start in range(0, len(events), CHUNK):
            for outcome in ingest.ingest(
                session,
                events[start : start + CHUNK],
                now=clock() if clock else now,
                default_currency=default_currency,
                unknown_members=unknown_members,
            ):
                stored[outcome.status.value] = stored.get(outcome.status.value, 0) + 1
            written(len(events[start : start + CHUNK]))
        report.stored = stored
    return report


EXPORT_COLUMNS = [
    "external_id",
    "phone",
    "name",
    "timezone",
    "region",
    "birthday",
    "joined_at",
    "stage",
    "tier",
    "points_balance",
    "consent_sms",
    "consent_push",
]


def export_members(
    session: Session, filters: profiles.MemberFilter, page_size: int = 1000
) -> Iterator[str]:
    """CSV text (header first) of the members matching the filters, read page by page
    so that a million members stream in constant memory; attributes as one JSON column.
    Erased members are left out."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*EXPORT_COLUMNS, "attributes"])
    yield _drain(buffer)
    after = None
    while True:
        members, after = profiles.list_page(session, filters, after, page_size)
        for m in members:
            writer.writerow(
                [
                    m.external_id,
                    m.phone or "",
                    m.name or "",
                    m.timezone,
                    m.region or "",
                    m.birthday.isoformat() if m.birthday else "",
                    m.joined_at.isoformat(),
                    m.stage.value if m.stage else "",
                    m.tier or "",
                    m.points_balance,
                    int(m.consent_sms),
                    int(m.consent_push),
                    json.dumps(m.attributes, ensure_ascii=False) if m.attributes else "",
                ]
            )
        yield _drain(buffer)
        if after is None:
            return


def export_filter(
    *,
    timezone: str,
    stage: Stage | None = None,
    tier: str | None = None,
    region: str | None = None,
    joined_from: dt.date | None = None,
    joined_to: dt.date | None = None,
    attributes: Mapping[str, str] | None = None,
) -> profiles.MemberFilter:
    """The filter of an export by calendar days, as marketers pick them: members who
    joined from the first day through the last, days counted in ``timezone``."""
    if joined_from and joined_to and joined_to < joined_from:
        raise InvalidField("joined_to", "must not be before joined_from")
    zone = ZoneInfo(timezone)

    def midnight(day: dt.date | None) -> dt.datetime | None:
        return dt.datetime.combine(day, dt.time(), zone) if day else None

    return profiles.MemberFilter(
        stage=stage,
        tier=tier or None,
        region=region or None,
        joined_after=midnight(joined_from),
        joined_before=midnight(joined_to + dt.timedelta(days=1) if joined_to else None),
        attributes=dict(attributes or {}),
    )


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def tally_import(session: Session, report: Report, *, day: dt.date, now: dt.datetime) -> None:
    """Count an events import on the Data in page, as the API's batches are counted."""
    outcomes = itertools.chain.from_iterable(
        itertools.repeat((status, None, None, None), n) for status, n in report.stored.items()
    )
    ingest.tally(session, outcomes, source="csv", day=day, now=now)
