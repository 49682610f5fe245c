"""`llmos serve` is safe by default: each probe a web page or a careless client would send gets a
4xx JSON error in OpenAI's shape, and nothing runs. One real server (the small model) on 127.0.0.1,
real HTTP; `stop` and `response_format` honoured; a client that disconnects stops its process.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import jsonschema
import pytest

from conftest import REPO, assert_one_line_error, run_llmos
from llmos_shell.config import TEST_MODEL
from servers import free_port, llmos_serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ALLOWED = "http://127.0.0.1:9"     # a page origin the operator allowed (nothing needs to listen there)
EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_model_path):
    home = tmp_path_factory.mktemp("serve-safety-home")
    plugins = tmp_path_factory.mktemp("no-plugins")
    with llmos_serve(home, TEST_MODEL, args=("--allow-origin", ALLOWED, "--max-body-mb", "1"),
                     env={"LLMOS_PLUGINS_DIR": str(plugins)}) as running:
        running.home = home
        yield running


def post(server, body, *, headers=None, content: bytes | None = None) -> httpx.Response:
    if content is None:
        content = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    return httpx.post(server.url + "/v1/chat/completions", content=content, headers=headers, timeout=600)


def processes(server) -> list[tuple[int, str]]:
    conn = sqlite3.connect(server.home / "llmos.db", timeout=10)
    try:
        return conn.execute("SELECT pid, status FROM processes ORDER BY pid").fetchall()
    finally:
        conn.close()


def refused(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    return error


WRITE = {"model": "llmos", "max_tokens": 32,
         "messages": [{"role": "user", "content": "Write the text 'pwned' to /notes/csrf.txt"}]}


def test_a_cross_site_text_plain_post_runs_nothing(server):
    before = processes(server)
    # what a page's <form> or fetch(no-cors) sends: no preflight, Origin set, text/plain
    error = refused(post(server, None, content=json.dumps(WRITE).encode(),
                         headers={"Content-Type": "text/plain", "Origin": EVIL}), 403)
    assert "--allow-origin" in error["message"]
    # without an Origin (not a browser): text/plain is still no JSON body
    assert "application/json" in refused(post(server, None, content=json.dumps(WRITE).encode(),
                                               headers={"Content-Type": "text/plain"}), 415)["message"]
    assert processes(server) == before


def test_a_foreign_host_is_refused(server):
    before = processes(server)
    error = refused(post(server, WRITE, headers={"Host": f"evil.example:{server.port}"}), 421)
    assert "DNS rebinding" in error["message"]
    refused(httpx.get(server.url + "/v1/models", headers={"Host": "evil.example"}), 421)
    assert processes(server) == before
    # the names it listens on are fine
    assert httpx.get(f"http://localhost:{server.port}/v1/models").status_code == 200


def test_a_foreign_origin_is_refused_and_an_allowed_one_gets_cors(server):
    refused(post(server, WRITE, headers={"Origin": EVIL}), 403)
    refused(httpx.options(server.url + "/v1/chat/completions",
                          headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}), 403)
    preflight = httpx.options(server.url + "/v1/chat/completions",
                              headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST",
                                       "Access-Control-Request-Headers": "content-type, authorization"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "content-type" in preflight.headers["access-control-allow-headers"].lower()
    listed = httpx.get(server.url + "/v1/models", headers={"Origin": ALLOWED})
    assert listed.status_code == 200 and listed.headers["access-control-allow-origin"] == ALLOWED


def test_bad_bodies_are_400s_and_leave_no_process(server):
    before = processes(server)
    deep = b'{"model": "llmos", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert "nested" in refused(post(server, None, content=deep, headers={"Content-Type": "application/json"}),
                               400)["message"]
    part = {"model": TEST_MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}
    assert "messages.0.content" in refused(post(server, part), 400)["message"]
    image = {"model": TEST_MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:,"}}]}]}
    refused(post(server, image), 400)
    nan = b'{"model": "%s", "temperature": NaN, "messages": [{"role": "user", "content": "hi"}]}' % TEST_MODEL.encode()
    assert "NaN" in refused(post(server, None, content=nan, headers={"Content-Type": "application/json"}),
                            400)["message"]
    huge = b'{"model": "%s", "temperature": 1e999, "messages": [{"role": "user", "content": "hi"}]}' % TEST_MODEL.encode()
    refused(post(server, None, content=huge, headers={"Content-Type": "application/json"}), 400)
    assert processes(server) == before


def raw_response(server, head: str, chunks=()) -> tuple[int, dict]:
    """Send a request by hand (the body may be cut short) and read the status and JSON body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            sock.sendall(chunk)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 2 or \
                not data.rstrip().endswith(b"}"):
            more = sock.recv(65536)
            if not more:
                break
            data += more
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


def test_an_oversized_body_is_413_before_it_is_read(server):
    before = processes(server)
    started = time.monotonic()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/json\r\n")
    # 10 MB announced, none of it sent: the answer comes anyway
    status, body = raw_response(server, head + f"Content-Length: {10 << 20}\r\n\r\n")
    assert status == 413 and "larger than" in body["error"]["message"]
    # sent in chunks with no length: refused once past the limit
    chunk = b"x" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 20
    status, body = raw_response(server, head + "Transfer-Encoding: chunked\r\n\r\n", chunks)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert time.monotonic() - started < 10 and processes(server) == before


def test_unsupported_parameters_are_named(server):
    base = {"model": TEST_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    error = refused(post(server, {**base, "logit_bias": {"42": 10}}), 400)
    assert error["param"] == "logit_bias" and "logit_bias" in error["message"]
    assert refused(post(server, {**base, "functions": [{"name": "f"}]}), 400)["param"] == "functions"
    assert refused(post(server, {**base, "top_p": 0.5}), 400)["param"] == "top_p"
    # what clients send by default, at values that change nothing, is accepted
    fine = post(server, {**base, "n": 1, "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0,
                         "logprobs": False, "user": "ada", "stream": False, "stop": None})
    assert fine.status_code == 200, fine.text


def test_stop_is_honoured(server):
    base = {"model": TEST_MODEL, "seed": 3, "temperature": 0, "max_tokens": 40,
            "messages": [{"role": "user", "content": "List ten fruits, separated by commas."}]}
    whole = post(server, base).json()["choices"][0]["message"]["content"]
    words = whole.split()
    assert len(words) > 4, whole
    stop = words[len(words) // 2]
    cut = post(server, {**base, "stop": [stop]}).json()["choices"][0]
    assert stop not in cut["message"]["content"] and whole.startswith(cut["message"]["content"].strip()[:20])
    assert len(cut["message"]["content"]) < len(whole) and cut["finish_reason"] == "stop"


def test_response_format_is_decoded_under_the_grammar(server):
    base = {"model": TEST_MODEL, "max_tokens": 200,
            "messages": [{"role": "user", "content": "Give the name and age of a cat called Tom, as JSON."}]}
    any_object = post(server, {**base, "response_format": {"type": "json_object"}}).json()["choices"][0]
    content = any_object["message"]["content"]
    if any_object["finish_reason"] == "length":   # a rambling object cut at the token limit: still an object
        assert content.lstrip().startswith("{"), content
    else:
        assert isinstance(json.loads(content), dict), content
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    shaped = post(server, {**base, "response_format": {"type": "json_schema",
                                                       "json_schema": {"name": "cat", "schema": schema}}})
    jsonschema.validate(json.loads(shaped.json()["choices"][0]["message"]["content"]), schema)
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}
    assert refused(post(server, {**base, "response_format": bad}), 400)["param"] == "response_format"


def test_a_non_streaming_client_that_disconnects_stops_its_process(server):
    body = json.dumps({"model": TEST_MODEL, "max_tokens": 2000, "temperature": 0,
                       "messages": [{"role": "user", "content": "Write a very long story about the sea."}]})
    before = {pid for pid, _ in processes(server)}
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
        deadline = time.monotonic() + 120
        while not [s for pid, s in processes(server) if pid not in before and s == "running"]:
            assert time.monotonic() < deadline, processes(server)
            time.sleep(0.1)
        time.sleep(1.0)
    gone = time.monotonic()
    while True:
        mine = [s for pid, s in processes(server) if pid not in before]
        if mine and mine[0] == "interrupted":
            break
        assert time.monotonic() - gone < 10, mine
        time.sleep(0.1)


def test_an_empty_token_is_refused_at_startup(home):
    result = run_llmos("--model", TEST_MODEL, "serve", "--port", str(free_port()), "--token", "", home=home,
                       timeout=120)
    assert "--token is empty" in assert_one_line_error(result, 2)
