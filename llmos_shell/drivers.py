"""The driver report behind `llmos drivers` and the shell's `drivers` command."""

from __future__ import annotations

from typing import Any


def driver_report(system) -> list[dict[str, Any]]:
    """One row per driver: status ok / unavailable / broken, backend or reason, its syscalls."""
    syscalls_by_driver: dict[str, list[str]] = {}
    for syscall in system.table:
        syscalls_by_driver.setdefault(syscall.driver, []).append(syscall.name)
    rows: dict[str, dict[str, Any]] = {}
    for status in system.driver_statuses():
        rows[status.name] = {"driver": status.name, "status": "ok" if status.ok else "unavailable",
                             "backend": status.backend, "detail": status.detail,
                             "syscalls": syscalls_by_driver.pop(status.name, [])}
    for plugin, names in syscalls_by_driver.items():  # plugins that report no status are ok if they loaded
        rows.setdefault(plugin, {"driver": plugin, "status": "ok", "backend": "python", "detail": "",
                                 "syscalls": names})
    for plugin, error in system.broken.items():
        rows[plugin] = {"driver": plugin, "status": "broken", "backend": "", "detail": error, "syscalls": []}
    return sorted(rows.values(), key=lambda row: row["driver"])
