"""QUIET_HOURS: parsing, which wall times are quiet, and the absolute end of a quiet period on
both sides of midnight and of the daylight-saving changes (Sydney, Lord Howe Island)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler.quiet_hours import QuietHours, QuietHoursError
from scheduler.settings import SettingsError, load_settings

PERTH = ZoneInfo("Australia/Perth")
SYDNEY = ZoneInfo("Australia/Sydney")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
NIGHT = QuietHours(time(21), time(8))


def local(tz: ZoneInfo, *parts: int, fold: int = 0) -> datetime:
    return datetime(*parts, tzinfo=tz, fold=fold)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("21:00-08:00", NIGHT),
        (" 9:30 - 7:05 ", QuietHours(time(9, 30), time(7, 5))),
        ("00:00-06:00", QuietHours(time(0), time(6))),
        ("off", None),
        ("OFF", None),
    ],
)
def test_parse(value: str, expected: QuietHours | None) -> None:
    assert QuietHours.parse(value) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("21-08", "HH:MM-HH:MM"),
        ("9pm-8am", "HH:MM-HH:MM"),
        ("21:00", "HH:MM-HH:MM"),
        ("24:00-08:00", "00 to 23"),
        ("21:60-08:00", "00 to 59"),
        ("08:00-08:00", "both 08:00"),
        ("", "HH:MM-HH:MM"),
        ("\u0662\u0661:\u0660\u0660-\u0660\u0668:\u0660\u0660", "HH:MM-HH:MM"),  # Arabic-Indic digits
    ],
)
def test_parse_refuses(value: str, says: str) -> None:
    with pytest.raises(QuietHoursError, match=says):
        QuietHours.parse(value)


def test_a_bad_setting_names_quiet_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUIET_HOURS", "9pm-8am")
    with pytest.raises(SettingsError, match=r"^QUIET_HOURS: must be HH:MM-HH:MM"):
        load_settings(_env_file=None)


def test_the_setting_defaults_to_nine_to_eight_and_may_be_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(_env_file=None).quiet == NIGHT
    monkeypatch.setenv("QUIET_HOURS", "Off")
    assert load_settings(_env_file=None).quiet is None


@pytest.mark.parametrize(
    ("wall", "quiet"),
    [
        (time(20, 59), False),
        (time(21), True),
        (time(23, 59), True),
        (time(0), True),
        (time(7, 59), True),
        (time(8), False),
    ],
)
def test_a_window_across_midnight(wall: time, quiet: bool) -> None:
    assert NIGHT.covers(wall) is quiet


def test_a_window_within_one_day() -> None:
    lunch = QuietHours(time(12), time(14))
    assert [lunch.covers(time(h)) for h in (11, 12, 13, 14)] == [False, True, True, False]
    assert lunch.ends_after(local(PERTH, 2026, 11, 29, 13, 15), PERTH) == local(PERTH, 2026, 11, 29, 14)


@pytest.mark.parametrize(
    ("now", "end"),
    [
        (local(PERTH, 2026, 11, 29, 21, 0), local(PERTH, 2026, 11, 30, 8, 0)),  # before midnight: tomorrow
        (local(PERTH, 2026, 11, 30, 2, 0), local(PERTH, 2026, 11, 30, 8, 0)),  # after midnight: today
        (local(PERTH, 2026, 11, 30, 7, 59, 59), local(PERTH, 2026, 11, 30, 8, 0)),
    ],
)
def test_the_end_of_the_night(now: datetime, end: datetime) -> None:
    assert NIGHT.ends_after(now, PERTH) == end


@pytest.mark.parametrize("now", [local(PERTH, 2026, 11, 30, 8, 0), local(PERTH, 2026, 11, 29, 20, 59, 59)])
def test_not_quiet_has_no_end(now: datetime) -> None:
    assert NIGHT.ends_after(now, PERTH) is None


def test_the_night_sydney_springs_forward_is_an_hour_shorter() -> None:
    # Sunday 4 October 2026, 02:00 AEST (+10) becomes 03:00 AEDT (+11).
    now = local(SYDNEY, 2026, 10, 3, 22, 0)
    end = NIGHT.ends_after(now, SYDNEY)
    assert end == datetime(2026, 10, 3, 21, 0, tzinfo=UTC)  # 08:00 AEDT
    assert end is not None and end.astimezone(SYDNEY).hour == 8
    assert end - now == timedelta(hours=9)
    # From inside the jump's hour too (01:30 AEST, then 03:30 AEDT).
    assert NIGHT.ends_after(local(SYDNEY, 2026, 10, 4, 1, 30), SYDNEY) == end
    assert NIGHT.ends_after(local(SYDNEY, 2026, 10, 4, 3, 30), SYDNEY) == end


def test_the_night_sydney_falls_back_is_an_hour_longer() -> None:
    # Sunday 5 April 2026, 03:00 AEDT (+11) becomes 02:00 AEST (+10).
    now = local(SYDNEY, 2026, 4, 4, 22, 0)
    end = NIGHT.ends_after(now, SYDNEY)
    assert end == datetime(2026, 4, 4, 22, 0, tzinfo=UTC)  # 08:00 AEST
    assert end - now == timedelta(hours=11)
    # Both 02:30s of that night are quiet, and end at the same 08:00.
    assert NIGHT.ends_after(local(SYDNEY, 2026, 4, 5, 2, 30, fold=0), SYDNEY) == end
    assert NIGHT.ends_after(local(SYDNEY, 2026, 4, 5, 2, 30, fold=1), SYDNEY) == end


def test_an_end_the_clocks_skip_is_the_moment_they_jump() -> None:
    early = QuietHours(time(21), time(2, 30))  # 02:30 does not happen in Sydney on 4 October 2026
    end = early.ends_after(local(SYDNEY, 2026, 10, 3, 23, 0), SYDNEY)
    assert end == datetime(2026, 10, 3, 16, 0, tzinfo=UTC)  # 02:00 AEST = 03:00 AEDT, the jump
    assert end is not None and end.astimezone(SYDNEY).replace(tzinfo=None) == datetime(2026, 10, 4, 3, 0)
    # Lord Howe Island moves 30 minutes, 02:00 -> 02:30 (+10:30 -> +11).
    lord_howe = QuietHours(time(21), time(2, 15)).ends_after(local(LORD_HOWE, 2026, 10, 3, 23, 0), LORD_HOWE)
    assert lord_howe == datetime(2026, 10, 3, 15, 30, tzinfo=UTC)


def test_an_end_that_happens_twice_is_the_first() -> None:
    early = QuietHours(time(21), time(2, 30))
    end = early.ends_after(local(SYDNEY, 2026, 4, 4, 23, 0), SYDNEY)
    assert end == local(SYDNEY, 2026, 4, 5, 2, 30, fold=0).astimezone(UTC)
    assert end == datetime(2026, 4, 4, 15, 30, tzinfo=UTC)  # 02:30 AEDT (+11)


def test_the_end_is_the_same_instant_read_in_any_zone() -> None:
    now = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)  # 22:00 in Perth
    assert NIGHT.ends_after(now, PERTH) == NIGHT.ends_after(now.astimezone(SYDNEY), PERTH)
    assert NIGHT.ends_after(now, PERTH) == datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
