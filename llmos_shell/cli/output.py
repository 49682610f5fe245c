"""How the CLI prints data: a JSON object on one line, and a list as one object per line (``--json``)."""

from __future__ import annotations

import json
from typing import Any, Iterable

import click


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, default=str))


def echo_lines(rows: Iterable[Any]) -> None:
    for row in rows:
        echo_json(row)
