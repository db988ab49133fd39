"""Message templates: linted at save time with the line of the problem, sandboxed
against the known escapes, filters for money and dates per language, the SMS as sent
(signature and opt-out) and its length in segments."""

from __future__ import annotations

import datetime as dt

import pytest

from journeys import render, templates


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("您好 {{ member.name }\n", 1, "unexpected"),
        ("第一行\n{{ membr.name }}", 2, "unknown variable 'membr'"),
        ("{{ member.name }}\n\n{{ member.nmae }}", 3, "member has no 'nmae'"),
        ("{{ coupon.value|moneyy }}", 1, "unknown filter 'moneyy'"),
        ("{% for x in member %}{{ x }}{% endfor %\n}", 1, "expected token"),
        ("{{ config }}", 1, "unknown variable 'config'"),
        ("{{ cycler.__init__.__globals__ }}", 1, "unknown variable 'cycler'"),
        ("", 1, "write the message"),
    ],
    ids=[
        "syntax",
        "unknown-name",
        "unknown-attribute",
        "unknown-filter",
        "block",
        "config",
        "cycler",
        "empty",
    ],
)
def test_lint_refuses_with_the_line(text, line, words):
    problems = templates.lint(text)
    assert problems, text
    assert problems[0].line == line
    assert words in problems[0].message


def test_lint_accepts_every_documented_variable_and_any_context_key():
    text = " ".join(f"{{{{ member.{name} }}}}" for name in templates.MEMBER)
    text += " {{ coupon.value|money }} {{ benefit.expires_at|date }} {{ context.order_id }}"
    assert templates.lint(text) == []


@pytest.mark.parametrize(
    "escape",
    [
        "{{ member.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ self._TemplateReference__context }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ lipsum.__globals__ }}",
        "{{ context.__class__.__init__.__globals__ }}",
    ],
)
def test_the_known_sandbox_escapes_reach_nothing(escape):
    try:
        out = render.render(escape, templates.SAMPLE)
    except render.RenderError as error:
        assert "unsafe" in str(error) or "undefined" in str(error).lower()
        return
    assert "os" not in out and "module" not in out and "Environment" not in out
    assert "function" not in out and "class" not in out


def test_escapes_through_a_variable_are_refused_at_save_time():
    for escape in ("{{ member.__class__ }}", "{{ self._TemplateReference__context }}"):
        assert templates.lint(escape), escape


def test_money_and_dates_in_each_language():
    assert render.money("30", "zh") == "30元" and render.money("29.9", "en") == "¥29.90"
    moment = dt.datetime(2026, 11, 26, 16, 30, tzinfo=dt.UTC)  # 27 Nov, 00:30 in Shanghai
    assert render.date(moment, "zh") == "11月27日"
    assert render.date(moment, "en", "Europe/London") == "26 Nov"
    text = "{{ coupon.value|money }}券 {{ coupon.expires_at|date }}到期"
    assert render.render(text, templates.SAMPLE) == "50元券 11月26日到期"
    english = {**templates.SAMPLE, "language": "en"}
    assert render.render(text, english) == "¥50券 26 Nov到期"


@pytest.mark.parametrize(
    ("text", "encoding", "characters", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("{}" * 40, "GSM-7", 160, 1),  # extension characters count twice
        ("好" * 70, "UCS-2", 70, 1),
        ("好" * 71, "UCS-2", 71, 2),
        ("好" * 134, "UCS-2", 134, 2),
        ("好" * 135, "UCS-2", 135, 3),
        ("a🎉", "UCS-2", 3, 1),  # an emoji is two UCS-2 units
    ],
    ids=[
        "gsm-160",
        "gsm-161",
        "gsm-306",
        "gsm-307",
        "extension",
        "ucs-70",
        "ucs-71",
        "ucs-134",
        "ucs-135",
        "emoji",
    ],
)
def test_sms_length_and_segments(text, encoding, characters, segments):
    assert templates.length(text) == templates.Length(characters, encoding, segments)


def test_the_sms_as_sent_carries_the_signature_and_the_opt_out_of_the_members_country():
    style = templates.SmsStyle(signature="【鞋履会员】")
    assert templates.compose_sms("明天见", style, phone="+8613800138000") == (
        "【鞋履会员】明天见 拒收请回复R"
    )
    assert templates.compose_sms("See you", style, phone="+447700900123") == (
        "【鞋履会员】See you Reply STOP to opt out"
    )
    shown = templates.preview("{{ member.name }}，{{ coupon.value|money }}券已到账", channel="sms")
    assert shown["text"] == "【会员中心】王芳，50元券已到账 拒收请回复R"
    assert (shown["encoding"], shown["segments"]) == ("UCS-2", 1)
    with pytest.raises(templates.TemplateProblems) as raised:
        templates.preview("{{ member.nmae }}", channel="sms")
    assert raised.value.problems[0].line == 1
