"""`llmos call` goes through the kernel's gate: validated, approved, audited."""

from __future__ import annotations

import json

from conftest import assert_one_line_error, run_llmos


def test_llmos_call_is_approved_and_audited_like_the_kernels_calls(home):
    assert run_llmos("fs", "put", "-", "/notes/keep.txt", input="keep me", home=home).returncode == 0
    # an irreversible syscall is refused without a terminal to ask at, unless --approve auto
    refused = run_llmos("call", "delete_file", '{"path": "/notes/keep.txt"}', home=home)
    line = assert_one_line_error(refused, 3)
    assert "delete_file was denied by the approval policy (never)" in line
    assert run_llmos("fs", "cat", "/notes/keep.txt", home=home).stdout == "keep me"
    ran = run_llmos("call", "delete_file", '{"path": "/notes/keep.txt"}', "--approve", "auto", home=home)
    assert ran.returncode == 0, ran.stderr
    assert run_llmos("fs", "cat", "/notes/keep.txt", home=home).returncode == 1
    # bad arguments never reach the driver, and say why in one line
    bad = run_llmos("call", "write_file", '{"path": "/a.txt"}', home=home)
    assert "content" in assert_one_line_error(bad, 2)
    # everything that ran, was refused or failed its schema is in the audit log, as the kernel's calls are
    log = run_llmos("log", "--json", home=home)
    rows = [json.loads(line) for line in log.stdout.splitlines() if line.strip()]
    assert [(r["name"], r["status"]) for r in rows] == [("delete_file", "denied"), ("delete_file", "ok"),
                                                        ("write_file", "error")]
