"""Judge clients for MT-Bench and head-to-head evaluation.

A judge turns one (system prompt, user prompt) pair into the judge's text. Two kinds:

- :class:`OpenAIChatJudge` speaks the OpenAI chat-completions protocol over HTTP
  (``POST {base_url}/chat/completions``). It serves GPT-4 on the official API and any
  OpenAI-compatible server (vLLM, TGI, Ollama, FastChat's ``openai_api_server``). Only the standard
  library is used; requests are retried a few times with a timeout, and every failure a user can fix
  (no API key, server down, key rejected, unknown model) is raised as a one-line :class:`SrscaleError`.
- :class:`LocalJudge` wraps the stage's model callable ``chat(conversations, max_new_tokens)``.

``make_judge(cfg.eval.mtbench, chat)`` picks one from the typed config.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePath
from typing import Protocol, runtime_checkable

from srscale.errors import SrscaleError

OPENAI_BASE_URL = "https://api.openai.com/v1"

Message = dict[str, str]
ChatFn = Callable[[list[list[Message]], int], list[str]]


@runtime_checkable
class Judge(Protocol):
    """What the evaluation modules need from a judge.

    ``name`` is the judge's model name as written in FastChat files (``"gpt-4"``,
    ``model_judgment/<name>_single.jsonl``).
    """

    name: str

    def complete(self, system: str, user: str, max_tokens: int) -> str: ...

    def complete_batch(self, requests: Sequence[tuple[str, str]], max_tokens: int) -> list[str]: ...


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OpenAIChatJudge:
    """A judge behind an OpenAI-compatible chat-completions endpoint.

    Args:
        model: the ``model`` field sent to the server (``"gpt-4"``, the name vLLM serves, ...).
        base_url: the API root, ending in ``/v1``.
        api_key_env: environment variable holding the key. Required for the official OpenAI URL;
            optional elsewhere (sent as a bearer token when set).
        temperature: sampling temperature (FastChat judges at 0).
        timeout: seconds per HTTP request.
        max_retries: extra attempts after a transient failure (connection, timeout, 429, 5xx).
        retry_sleep: seconds before the first retry; doubles after each.
        parallel: concurrent requests in :meth:`complete_batch`.
        setting: the config prefix named in error messages (``eval.mtbench``).
        label: what the judge is called in error messages.
    """

    def __init__(
        self,
        model: str,
        base_url: str = OPENAI_BASE_URL,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        *,
        timeout: float = 120.0,
        max_retries: int = 2,
        retry_sleep: float = 1.0,
        parallel: int = 4,
        setting: str = "eval.mtbench",
        label: str = "MT-Bench judge",
    ) -> None:
        if not base_url:
            raise SrscaleError(f"{label}: no base_url; set {setting}.base_url=http://HOST:PORT/v1")
        self.name = model
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.temperature = temperature
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self.retry_sleep = retry_sleep
        self.parallel = max(1, int(parallel))
        self.setting = setting
        self.label = label
        self.api_key = os.environ.get(api_key_env) or None
        if self.api_key is None and _is_official_openai(self.base_url):
            raise SrscaleError(
                f"{label}: {api_key_env} is not set; export it or use {setting}.judge=endpoint "
                f"with {setting}.base_url=http://HOST:PORT/v1"
            )

    # ------------------------------------------------------------------ requests
    def _payload(self, system: str, user: str, max_tokens: int) -> bytes:
        messages = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user})
        body = {
            "model": self.model,
            "messages": messages,
            "n": 1,
            "temperature": self.temperature,
            "max_tokens": int(max_tokens),
        }
        return json.dumps(body).encode("utf-8")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def complete(self, system: str, user: str, max_tokens: int) -> str:
        """One judgment; retries transient failures, raises :class:`SrscaleError` on the rest."""
        data = self._payload(system, user, max_tokens)
        delay = self.retry_sleep
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2
            request = urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as err:
                detail = _error_detail(err)
                if err.code in (401, 403):
                    raise SrscaleError(
                        f"{self.label}: {self.base_url} rejected the API key (HTTP {err.code}{detail}); "
                        "check the key's environment variable"
                    ) from None
                if err.code == 429 or err.code >= 500:
                    last = f"HTTP {err.code}{detail}"
                    continue
                if err.code == 404:
                    raise SrscaleError(
                        f"{self.label}: {self.url} answered HTTP 404{detail}; check {self.setting}.base_url "
                        f"(it should end in /v1) and the judge model name '{self.model}'"
                    ) from None
                raise SrscaleError(
                    f"{self.label}: {self.url} refused the request (HTTP {err.code}{detail})"
                ) from None
            except urllib.error.URLError as err:
                last = _reason(err.reason, self.timeout)
                continue
            except TimeoutError:
                last = f"timed out after {self.timeout:g}s"
                continue
            except (OSError, http.client.HTTPException) as err:  # reset mid-response and similar
                last = _reason(err, self.timeout)
                continue
            return self._content(raw)
        raise SrscaleError(
            f"{self.label}: cannot reach {self.base_url} ({last}, {self.max_retries + 1} attempts); "
            f"start the server or change {self.setting}.base_url"
        )

    def _content(self, raw: bytes) -> str:
        try:
            obj = json.loads(raw.decode("utf-8"))
            content = obj["choices"][0]["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise SrscaleError(
                f"{self.label}: {self.url} did not answer in the chat-completions format: "
                f"{_one_line(raw.decode('utf-8', 'replace'), 120)!r}"
            ) from None
        return content or ""

    def complete_batch(self, requests: Sequence[tuple[str, str]], max_tokens: int) -> list[str]:
        """Judgments for many (system, user) pairs, ``parallel`` requests at a time, in order."""
        if not requests:
            return []
        if self.parallel == 1 or len(requests) == 1:
            return [self.complete(s, u, max_tokens) for s, u in requests]
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(requests))) as pool:
            return list(pool.map(lambda r: self.complete(r[0], r[1], max_tokens), requests))

    def __repr__(self) -> str:
        return f"OpenAIChatJudge(model={self.model!r}, base_url={self.base_url!r})"


def _is_official_openai(base_url: str) -> bool:
    host = urllib.parse.urlparse(base_url).hostname or ""
    return host == "api.openai.com" or host.endswith(".openai.com")


def _reason(reason: object, timeout: float) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout:g}s"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    text = getattr(reason, "strerror", None) or str(reason)
    return _one_line(text, 80) or type(reason).__name__


def _error_detail(err: urllib.error.HTTPError) -> str:
    """The server's own error message, one line, or ''."""
    try:
        body = err.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - best effort only
        return ""
    message = body
    try:
        obj = json.loads(body)
        if isinstance(obj, dict):
            inner = obj.get("error", obj)
            message = inner.get("message", inner) if isinstance(inner, dict) else inner
            if isinstance(obj.get("message"), str):
                message = obj["message"]
    except ValueError:
        pass
    message = _one_line(str(message), 120)
    return f": {message}" if message else ""


class LocalJudge:
    """The model callable used as a judge: one batched ``chat`` call per :meth:`complete_batch`.

    ``fold_system=True`` puts the system prompt at the top of the user turn instead, for chat
    templates without a system role.
    """

    def __init__(self, chat: ChatFn, name: str = "self", *, fold_system: bool = False) -> None:
        self.chat = chat
        self.name = name
        self.fold_system = fold_system

    def _conversation(self, system: str, user: str) -> list[Message]:
        if not system:
            return [{"role": "user", "content": user}]
        if self.fold_system:
            return [{"role": "user", "content": f"{system}\n\n{user}"}]
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def complete(self, system: str, user: str, max_tokens: int) -> str:
        return self.complete_batch([(system, user)], max_tokens)[0]

    def complete_batch(self, requests: Sequence[tuple[str, str]], max_tokens: int) -> list[str]:
        if not requests:
            return []
        replies = self.chat([self._conversation(s, u) for s, u in requests], max_tokens)
        if len(replies) != len(requests):
            raise SrscaleError(
                f"local judge: the model returned {len(replies)} replies for {len(requests)} prompts"
            )
        return [r or "" for r in replies]

    def __repr__(self) -> str:
        return f"LocalJudge(name={self.name!r})"


def complete_batch(judge: object, requests: Sequence[tuple[str, str]], max_tokens: int) -> list[str]:
    """``judge.complete_batch`` when it exists, else ``complete`` per request (for minimal judges)."""
    batch = getattr(judge, "complete_batch", None)
    if batch is not None:
        out = list(batch(list(requests), max_tokens))
    else:
        out = [judge.complete(s, u, max_tokens) for s, u in requests]  # type: ignore[attr-defined]
    if len(out) != len(requests):
        raise SrscaleError(f"judge returned {len(out)} judgments for {len(requests)} prompts")
    return out


def judge_name(judge: object) -> str:
    return str(getattr(judge, "name", None) or type(judge).__name__)


def make_judge(cfg, chat: ChatFn | None = None, *, setting: str = "eval.mtbench") -> Judge:
    """The judge an :class:`~srscale.config.MTBenchConfig` asks for.

    - ``judge=openai``: ``cfg.judge_model`` on ``cfg.base_url`` (default the official API), key from
      ``cfg.api_key_env``.
    - ``judge=endpoint``: ``cfg.judge_model`` on an OpenAI-compatible server; ``cfg.base_url`` required.
    - ``judge=local``: ``chat`` judges. The caller passes the stage's own model, or the model it
      loaded from ``cfg.local_judge_path``; the judge is named after that path's last part, else
      ``"self"``.
    """
    kind = cfg.judge
    if kind == "openai":
        return OpenAIChatJudge(
            cfg.judge_model,
            base_url=cfg.base_url or OPENAI_BASE_URL,
            api_key_env=cfg.api_key_env,
            setting=setting,
        )
    if kind == "endpoint":
        if not cfg.base_url:
            raise SrscaleError(
                f"MT-Bench judge: {setting}.judge=endpoint needs {setting}.base_url=http://HOST:PORT/v1"
            )
        return OpenAIChatJudge(
            cfg.judge_model, base_url=cfg.base_url, api_key_env=cfg.api_key_env, setting=setting
        )
    if kind == "local":
        if chat is None:
            raise SrscaleError(
                f"MT-Bench judge: {setting}.judge=local needs a model to judge with; none was given"
            )
        name = PurePath(cfg.local_judge_path).name if cfg.local_judge_path else "self"
        return LocalJudge(chat, name=name or "self")
    raise SrscaleError(f"MT-Bench judge: unknown {setting}.judge={kind!r}; use openai, endpoint or local")
