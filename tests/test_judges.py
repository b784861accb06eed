"""Judge clients against a real chat-completions HTTP server on 127.0.0.1 (no API key, no network).

``ChatServer`` is also used by test_mtbench.py and test_headtohead.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from srscale.config import MTBenchConfig
from srscale.errors import SrscaleError
from srscale.evaluation.judges import LocalJudge, OpenAIChatJudge, make_judge

Reply = str | tuple[int, str]  # content, or (HTTP status, raw body)


class ChatServer:
    """A real HTTP server speaking the OpenAI chat-completions protocol, run in a thread.

    ``responder(request_json) -> content`` or ``(status, raw_body)``; every request is recorded
    (path, headers, JSON body) in ``requests``.
    """

    def __init__(self, responder: Callable[[dict], Reply]) -> None:
        self.responder = responder
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
                if self.path != "/v1/chat/completions":
                    self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
                    return
                reply = server.responder(body)
                if isinstance(reply, tuple):
                    self._send(*reply)
                    return
                self._send(
                    200,
                    json.dumps(
                        {
                            "id": "chatcmpl-test",
                            "object": "chat.completion",
                            "model": body.get("model"),
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": reply},
                                    "finish_reason": "stop",
                                }
                            ],
                        }
                    ),
                )

            def _send(self, status: int, raw: str) -> None:
                data = raw.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def free_port() -> int:
    """A loopback port nothing listens on (bound then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fast_judge(base_url: str, **kw) -> OpenAIChatJudge:
    kw.setdefault("retry_sleep", 0.01)
    kw.setdefault("timeout", 5)
    return OpenAIChatJudge("judge-model", base_url=base_url, **kw)


def echo(body: dict) -> str:
    return "Echo: " + body["messages"][-1]["content"] + " Rating: [[7]]"


# ------------------------------------------------------------------------------------ over HTTP
def test_openai_judge_speaks_chat_completions(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test")
    with ChatServer(echo) as server:
        judge = fast_judge(server.base_url + "/", api_key_env="MY_JUDGE_KEY")
        out = judge.complete("You are a judge.", "Rate this.", max_tokens=33)
    assert out == "Echo: Rate this. Rating: [[7]]"
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    body = req["json"]
    assert body["model"] == "judge-model"
    assert body["messages"] == [
        {"role": "system", "content": "You are a judge."},
        {"role": "user", "content": "Rate this."},
    ]
    assert body["temperature"] == 0 and body["max_tokens"] == 33 and body["n"] == 1
    assert judge.name == "judge-model"


def test_no_key_needed_for_other_endpoints(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ChatServer(echo) as server:
        judge = fast_judge(server.base_url)
        assert judge.complete("", "hi", 8).startswith("Echo: hi")
    assert "Authorization" not in server.requests[0]["headers"]
    assert [m["role"] for m in server.requests[0]["json"]["messages"]] == ["user"]


def test_batch_keeps_order_with_parallel_requests():
    def slow_echo(body):
        text = body["messages"][-1]["content"]
        time.sleep(0.02 * (5 - int(text)))  # later requests finish first
        return text

    with ChatServer(slow_echo) as server:
        judge = fast_judge(server.base_url, parallel=4)
        out = judge.complete_batch([("s", str(i)) for i in range(5)], 8)
    assert out == ["0", "1", "2", "3", "4"]
    assert len(server.requests) == 5


def test_transient_errors_are_retried():
    calls = []

    def flaky(body):
        calls.append(1)
        return (503, '{"error": {"message": "busy"}}') if len(calls) < 3 else "Rating: [[9]]"

    with ChatServer(flaky) as server:
        assert fast_judge(server.base_url, max_retries=2).complete("s", "u", 8) == "Rating: [[9]]"
    assert len(server.requests) == 3


def test_persistent_server_error_gives_up_after_bounded_retries():
    with ChatServer(lambda body: (500, "oops")) as server:
        with pytest.raises(SrscaleError) as err:
            fast_judge(server.base_url, max_retries=2).complete("s", "u", 8)
    assert len(server.requests) == 3
    msg = str(err.value)
    assert "\n" not in msg and "HTTP 500" in msg and "eval.mtbench.base_url" in msg


def test_rejected_key_is_one_line_and_not_retried():
    body = json.dumps({"error": {"message": "Incorrect API key\nprovided"}})
    with ChatServer(lambda b: (401, body)) as server:
        with pytest.raises(SrscaleError) as err:
            fast_judge(server.base_url, max_retries=3).complete("s", "u", 8)
    assert len(server.requests) == 1
    msg = str(err.value)
    assert "\n" not in msg and "HTTP 401" in msg and "Incorrect API key provided" in msg


def test_wrong_base_url_is_explained():
    with ChatServer(echo) as server:
        with pytest.raises(SrscaleError) as err:
            fast_judge(server.base_url.removesuffix("/v1")).complete("s", "u", 8)
    msg = str(err.value)
    assert "HTTP 404" in msg and "/v1" in msg and "\n" not in msg


def test_malformed_response_is_an_error():
    with ChatServer(lambda b: (200, "<html>not json</html>")) as server:
        with pytest.raises(SrscaleError, match="chat-completions format"):
            fast_judge(server.base_url).complete("s", "u", 8)


def test_null_content_is_empty_string():
    raw = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": None}}]})
    with ChatServer(lambda b: (200, raw)) as server:
        assert fast_judge(server.base_url).complete("s", "u", 8) == ""


def test_unreachable_endpoint_is_one_clear_line():
    url = f"http://127.0.0.1:{free_port()}/v1"
    judge = fast_judge(url, max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(SrscaleError) as err:
        judge.complete("s", "u", 8)
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert msg.startswith(f"MT-Bench judge: cannot reach {url} (connection refused")
    assert "start the server or change eval.mtbench.base_url" in msg
    assert "\n" not in msg


def test_timeout_is_reported():
    with ChatServer(lambda b: time.sleep(1.0) or "late") as server:
        with pytest.raises(SrscaleError) as err:
            fast_judge(server.base_url, timeout=0.2, max_retries=0).complete("s", "u", 8)
    assert "timed out after 0.2s" in str(err.value)


def test_missing_key_for_openai(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(SrscaleError) as err:
        make_judge(MTBenchConfig(judge="openai"))
    msg = str(err.value)
    assert msg == (
        "MT-Bench judge: OPENAI_API_KEY is not set; export it or use eval.mtbench.judge=endpoint "
        "with eval.mtbench.base_url=http://HOST:PORT/v1"
    )


def test_openai_judge_with_key_is_built_without_contacting_anyone(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    judge = make_judge(MTBenchConfig(judge="openai", judge_model="gpt-4"))
    assert isinstance(judge, OpenAIChatJudge)
    assert judge.url == "https://api.openai.com/v1/chat/completions" and judge.name == "gpt-4"


# ------------------------------------------------------------------------------------ make_judge / local
def test_make_judge_endpoint(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ChatServer(echo) as server:
        judge = make_judge(MTBenchConfig(judge="endpoint", judge_model="qwen", base_url=server.base_url))
        assert judge.complete("s", "u", 4).startswith("Echo: u")
    assert server.requests[0]["json"]["model"] == "qwen"
    with pytest.raises(SrscaleError, match=r"judge=endpoint needs eval.mtbench.base_url"):
        make_judge(MTBenchConfig(judge="endpoint"))


def test_local_judge_batches_through_the_model_callable():
    calls = []

    def chat(conversations, max_new_tokens):
        calls.append((conversations, max_new_tokens))
        return [f"Rating: [[{i + 1}]]" for i in range(len(conversations))]

    judge = make_judge(MTBenchConfig(judge="local"), chat=chat)
    assert isinstance(judge, LocalJudge) and judge.name == "self"
    assert judge.complete_batch([("sys", "a"), ("sys", "b"), ("", "c")], 64) == [
        "Rating: [[1]]",
        "Rating: [[2]]",
        "Rating: [[3]]",
    ]
    assert len(calls) == 1
    convs, max_new = calls[0]
    assert max_new == 64
    assert convs[0] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "a"}]
    assert convs[2] == [{"role": "user", "content": "c"}]

    folded = LocalJudge(chat, fold_system=True)
    folded.complete("sys", "a", 8)
    assert calls[-1][0] == [[{"role": "user", "content": "sys\n\na"}]]

    named = make_judge(MTBenchConfig(judge="local", local_judge_path="/models/judge-7b/"), chat=chat)
    assert named.name == "judge-7b"
    with pytest.raises(SrscaleError, match="judge=local needs a model"):
        make_judge(MTBenchConfig(judge="local"))


def test_local_judge_reply_count_is_checked():
    judge = LocalJudge(lambda convs, n: ["only one"])
    with pytest.raises(SrscaleError, match="1 replies for 2 prompts"):
        judge.complete_batch([("", "a"), ("", "b")], 8)
