"""A driver whose syscalls take their time: one never answers, one is slow, one stops when told.

* ``weather`` sleeps an hour and ignores cancellation: the watchdog must abandon it.
* ``forecast`` does the same, but its driver declares a time-out of 1 s.
* ``slow_echo`` sleeps ``LLMOS_TEST_SLOW_SECONDS`` (default 0.3 s) and, when
  ``LLMOS_TEST_ACK_FILE`` is set, first appends ``START <text>`` to that file
  (the crash test kills `llmos run` while it sleeps).
* ``patient`` waits on ``ctx.cancel`` and notes in ``STOPPED`` when it was told to stop.
"""

import os
import time

from llmos_shell import hookimpl

STOPPED: list[str] = []


def weather(city: str) -> str:
    """Current weather for a city.

    Args:
        city: The city, like Paris.
    """
    time.sleep(3600)
    return f"sunny in {city}"


def forecast(city: str) -> str:
    """Tomorrow's weather for a city.

    Args:
        city: The city, like Paris.
    """
    time.sleep(3600)
    return f"rain in {city}"


def slow_echo(text: str) -> str:
    """Repeat a text, slowly.

    Args:
        text: What to repeat.
    """
    ack = os.environ.get("LLMOS_TEST_ACK_FILE")
    if ack:
        with open(ack, "a", encoding="utf-8") as file:
            file.write(f"START {text}\n")
    time.sleep(float(os.environ.get("LLMOS_TEST_SLOW_SECONDS", "0.3")))
    return f"echo: {text}"


def patient(seconds: float, ctx=None) -> str:
    """Wait, stopping early when cancelled.

    Args:
        seconds: How long to wait.
    """
    if ctx.cancel.wait(seconds):
        STOPPED.append("cancelled")
        return "stopped"
    return "waited"


@hookimpl
def register_syscalls(register):
    register(weather, examples=["What is the weather in Paris?", "Is it raining in London?"])
    register(forecast, timeout=1, examples=["What is the forecast for Oslo?", "Will it rain tomorrow in Rome?"])
    register(slow_echo, examples=["Echo hello world", "Echo this text back to me"])
    register(patient, examples=["Wait 5 seconds", "Pause for a while"])
