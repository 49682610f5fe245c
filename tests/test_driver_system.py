"""The system driver (plugins/system.py): exact arithmetic and the date and time.

Called through the real plugin loading, the way the kernel calls syscalls, and
through `llmos call` as a user would.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from conftest import assert_one_line_error, run_llmos
from llmos_shell.errors import UsageError
from llmos_shell.testing import make_system


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    system = make_system(tmp_path_factory.mktemp("system-driver"), plugins=["llmos_plugins.system"], strict=True)
    yield system
    system.close()


def calculate(system, expression: str) -> dict:
    return system.call("calculate", {"expression": expression})


def test_registered_with_examples_and_output(system):
    calc, clock = system.table.get("calculate"), system.table.get("current_time")
    for syscall in (calc, clock):
        assert syscall.driver == "system" and syscall.output == "result"
        assert 6 <= len(syscall.examples) <= 10 and not syscall.capabilities
        assert syscall.description
    assert calc.parameters["required"] == ["expression"]
    assert clock.parameters["properties"]["timezone"]["default"] == ""
    status = system.driver_statuses()
    assert [s.name for s in status] == ["system"] and status[0].ok
    assert "simpleeval" in status[0].backend and "zoneinfo" in status[0].backend


@pytest.mark.parametrize("expression, result", [
    ("17 * 23", "391"),
    ("(3.5 + 2) / 4", "1.375"),
    ("2**10", "1024"),
    ("0.1 + 0.2", "0.3"),
    ("0.1 * 3", "0.3"),
    ("1 - 0.9", "0.1"),
    ("19.99 * 3 + 4.50", "64.47"),
    ("10 / 4", "2.5"),
    ("1 / 1024", "0.0009765625"),
    ("2 ** -2", "0.25"),
    ("15% of 80", "12"),
    ("(10 + 5)% of 80", "12"),
    ("100 + 15%", "115"),
    ("80 - 25%", "60"),
    ("200 * 15%", "30"),
    ("50 / 10%", "500"),
    ("17 % 5", "2"),
    ("sqrt(144)", "12"),
    ("sqrt(2.25)", "1.5"),
    ("(-8) ** (1/3)", "-2"),
    ("(-8) ** (2/3)", "4"),
    ("factorial(20)", "2432902008176640000"),
    ("round(2.675, 2)", "2.68"),
    ("max(1, 250) - min(3, 4)", "247"),
    ("1.5e3", "1500"),
    ("12345678901234567890 * 98765432109876543210", "1219326311370217952237463801111263526900"),
    # Typed as people ask it.
    ("What is 17 times 23?", "391"),
    ("How much is 1,250 divided by 5?", "250"),
    ("2 to the power of 10", "1024"),
    ("the square root of 81", "9"),
    ("what's 20 percent of 150?", "30"),
    ("17 x 23", "391"),
    ("12 × 12 ÷ 3", "48"),
    ("5 squared plus 2 cubed", "33"),
    ("2^8", "256"),
    ("7 mod 3", "1"),
])
def test_exact_arithmetic(system, expression, result):
    answer = calculate(system, expression)
    assert answer == {"expression": expression, "result": result, "exact": True}


def test_big_integers_stay_exact(system):
    assert calculate(system, "2**100")["result"] == str(2 ** 100)
    assert calculate(system, "factorial(30) / factorial(28)")["result"] == "870"


@pytest.mark.parametrize("expression, result", [
    ("1/3", "0.333333333333333"),
    ("2/3", "0.666666666666667"),
    ("sqrt(2)", "1.4142135623731"),
    ("sqrt(2) * sqrt(2)", "2"),     # the float's 2.0000000000000004 is not shown
    ("sin(pi)", "0"),
    ("cos(pi / 3)", "0.5"),
    ("log10(1000)", "3"),
    ("exp(1)", "2.71828182845905"),
    ("2 ** 0.5", "1.4142135623731"),
])
def test_inexact_results_are_rounded_and_say_so(system, expression, result):
    assert calculate(system, expression) == {"expression": expression, "result": result, "exact": False}


@pytest.mark.parametrize("expression, error", [
    ("10**100000", "too large: about 100,000 digits"),
    ("9**9**9", "too large"),
    ("2**4000", "too large"),
    ("factorial(100000)", "too large"),
    ("1e99999", "too large"),
    ("1/0", "division by zero"),
    ("0 ** -1", "division by zero"),
    ("sqrt(-4)", "no real result"),
    ("(-4) ** 0.5", "no real result"),
    ("log(0)", "outside the function's domain"),
    ("__import__('os').system('true')", "cannot calculate"),
    ("(1).real", "only arithmetic is allowed"),
    ("[1, 2]", "only arithmetic is allowed"),
    ("lambda: 1", "only arithmetic is allowed"),
    ("1 < 2", "only arithmetic is allowed"),
    ("'a' * 10", "only numbers can be calculated"),
    ("sqrt", "only numbers can be calculated"),
    ("open + 1", "'open' is not defined"),
    ("1; 2", "cannot read"),
    ("17 *", "cannot read"),
    ("((1)", "cannot read"),
    ("15% of", "cannot read"),
    ("1 +" * 200 + " 1", "too long"),
    ("", "nothing to calculate"),
])
def test_refusals_say_why(system, expression, error):
    started = time.monotonic()
    with pytest.raises(UsageError) as raised:
        calculate(system, expression)
    assert error in str(raised.value) and "\n" not in str(raised.value)
    assert time.monotonic() - started < 1  # refused at once, not computed


def test_deep_expressions_finish(system):
    assert calculate(system, "-" * 400 + "1")["result"] == "1"
    assert calculate(system, "+".join(["1"] * 240))["result"] == "240"
    assert calculate(system, "(" * 200 + "7" + ")" * 200)["result"] == "7"


def _at(monkeypatch, iso: str) -> None:
    instant = datetime.fromisoformat(iso).astimezone(timezone.utc)
    monkeypatch.setattr("llmos_plugins.system._utc_now", lambda: instant)


def test_time_in_zones_and_cities(system, monkeypatch):
    _at(monkeypatch, "2025-07-04T12:30:00+00:00")
    tokyo = system.call("current_time", {"timezone": "Asia/Tokyo"})
    assert tokyo == {"timezone": "Asia/Tokyo", "date": "2025-07-04", "weekday": "Friday", "time": "21:30",
                     "utc_offset": "+09:00", "abbreviation": "JST", "iso": "2025-07-04T21:30:00+09:00",
                     "result": "Friday 4 July 2025, 21:30 (JST, Asia/Tokyo)"}
    assert system.call("current_time", {"timezone": "tokyo"})["timezone"] == "Asia/Tokyo"
    new_york = system.call("current_time", {"timezone": "New York"})
    assert (new_york["timezone"], new_york["time"], new_york["utc_offset"]) == ("America/New_York", "08:30", "-04:00")
    assert system.call("current_time", {"timezone": "Sydney, Australia"})["date"] == "2025-07-04"
    assert system.call("current_time", {"timezone": "UTC+5:30"})["time"] == "18:00"
    assert system.call("current_time", {"timezone": "Beijing"})["timezone"] == "Asia/Shanghai"
    assert system.call("current_time", {"timezone": "PST"})["utc_offset"] == "-07:00"  # Pacific time, in summer
    # Across midnight: the date and weekday follow the zone, not UTC.
    _at(monkeypatch, "2025-12-31T23:30:00+00:00")
    auckland = system.call("current_time", {"timezone": "Pacific/Auckland"})
    assert (auckland["date"], auckland["weekday"], auckland["utc_offset"]) == ("2026-01-01", "Thursday", "+13:00")
    honolulu = system.call("current_time", {"timezone": "Pacific/Honolulu"})
    assert (honolulu["date"], honolulu["weekday"]) == ("2025-12-31", "Wednesday")


def test_local_time_is_now(system, monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")
    before = datetime.now(ZoneInfo("Europe/Paris"))
    local = system.call("current_time", {})
    assert local["timezone"] == "Europe/Paris"
    shown = datetime.fromisoformat(local["iso"])
    assert abs((shown - before).total_seconds()) < 5
    assert local["date"] == shown.date().isoformat() and local["weekday"] == shown.strftime("%A")


def test_unknown_zone_is_refused(system):
    with pytest.raises(UsageError, match="unknown time zone 'Mars/Olympus'"):
        system.call("current_time", {"timezone": "Mars/Olympus"})
    with pytest.raises(UsageError, match="UTC offsets run"):
        system.call("current_time", {"timezone": "UTC+20"})


def test_llmos_call_calculate(home):
    done = run_llmos("call", "calculate", '{"expression": "17*23"}', home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"expression": "17*23", "result": "391", "exact": True}
    refused = run_llmos("call", "calculate", '{"expression": "9**9**9"}', home=home)
    assert "too large" in assert_one_line_error(refused, 2)


def test_llmos_call_current_time_without_system_tz_data(home):
    # An empty PYTHONTZPATH hides /usr/share/zoneinfo: the zones come from the tzdata package.
    done = run_llmos("call", "current_time", '{"timezone": "Asia/Kolkata"}', home=home, env={"PYTHONTZPATH": ""})
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["timezone"] == "Asia/Kolkata" and answer["utc_offset"] == "+05:30"
    bad = run_llmos("call", "current_time", '{"timezone": "Nowhere/Special"}', home=home)
    assert "unknown time zone 'Nowhere/Special'" in assert_one_line_error(bad, 2)
