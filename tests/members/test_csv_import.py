"""The CSV module without a database or Flask: what the check reports, how files that
are not CSV text are refused, and the day range of an export filter."""

import datetime as dt

import pytest

from members import csv_import
from members.lifecycle import Stage

NOW = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)


def test_a_check_keeps_a_sample_of_the_first_good_rows_as_they_will_be_stored():
    text = (
        "external_id,phone,birthday,joined_at,attr.channel\n"
        "u-1,138 0013 8000,1990-05-20,2026-01-15T10:00:00+08:00,tmall\n"
        "u-2,12345,,,\n" + "".join(f"u-{i},,,,\n" for i in range(3, 3 + csv_import.SAMPLE_ROWS))
    )
    report = csv_import.import_members(None, text, now=NOW, write=False)
    assert (report.rows, report.valid, len(report.errors)) == (7, 6, 1)
    assert len(report.sample) == csv_import.SAMPLE_ROWS
    assert report.sample[0] == {
        "external_id": "u-1",
        "phone": "+8613800138000",
        "birthday": "1990-05-20",
        "joined_at": "2026-01-15T02:00:00+00:00",
        "attr.channel": "tmall",
    }
    assert report.sample[1] == {"external_id": "u-3"}  # the bad row is not in the sample


def test_event_samples_use_the_file_columns():
    text = (
        "event_id,member,type,occurred_at,amount,prop.store\n"
        "e-1,u-1,order,2026-11-01T10:00:00+08:00,199.00,南京西路店\n"
    )
    report = csv_import.import_events(
        None, text, now=NOW, write=False, default_currency="CNY", unknown_members=None
    )
    assert report.sample == [
        {
            "event_id": "e-1",
            "member": "u-1",
            "type": "order",
            "occurred_at": "2026-11-01T10:00:00+08:00",
            "amount": "199.00",
            "prop.store": "南京西路店",
        }
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00", "contains NUL characters"),
        ("external_id\n".encode("utf-16"), "neither UTF-8 nor GB18030"),
    ],
)
def test_bytes_that_are_not_csv_text_are_refused(data, message):
    with pytest.raises(csv_import.CsvError, match=message):
        csv_import.decode(data)


def test_an_unclosed_quote_is_a_file_error_naming_the_line():
    text = 'external_id,name\nu-1,ok\nu-2,"open\n' + "x" * 200_000 + "\n"
    with pytest.raises(csv_import.CsvError, match=r"^line \d+: not readable as CSV .*quote"):
        csv_import.import_members(None, text, now=NOW, write=False)


def test_export_filter_counts_whole_days_in_the_programme_time_zone():
    filters = csv_import.export_filter(
        timezone="Asia/Shanghai",
        stage=Stage.VIP,
        tier="",
        region="上海",
        joined_from=dt.date(2026, 3, 1),
        joined_to=dt.date(2026, 3, 31),
        attributes={"channel": "tmall"},
    )
    assert filters.joined_after == dt.datetime(2026, 2, 28, 16, tzinfo=dt.UTC)
    assert filters.joined_before == dt.datetime(2026, 3, 31, 16, tzinfo=dt.UTC)
    assert (filters.stage, filters.tier, filters.region) == (Stage.VIP, None, "上海")
    assert filters.attributes == {"channel": "tmall"}


def test_export_filter_refuses_a_range_that_ends_before_it_starts():
    with pytest.raises(csv_import.InvalidField) as raised:
        csv_import.export_filter(
            timezone="UTC", joined_from=dt.date(2026, 3, 2), joined_to=dt.date(2026, 3, 1)
        )
    assert raised.value.field == "joined_to"
