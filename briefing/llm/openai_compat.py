"""The `openai` backend: any OpenAI-compatible chat server, meant for vLLM.

vLLM serves LoRA adapters as extra model names (`--lora-modules name=path`, or loaded while it
runs: `add_adapter`), so an adapter is chosen by sending its name as `model`. A batch is sent as
concurrent requests, which vLLM's continuous batching decodes together. Connection failures
become `GeneratorUnavailable` and slow answers `GenerationTimeout`, which the fallback wrapper
(LLM_FALLBACK) turns into a local answer.

The time limit is the HTTP timeout of each request (what remains of the call's deadline). A
non-streamed answer arrives whole or not at all, so a request cut by the limit contributes an
empty answer marked "timeout" (the server drops the request when the client hangs up); a stream
keeps the pieces it received.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from briefing.llm.base import (
    Chat,
    Completion,
    Deadline,
    GenerationError,
    GenerationParams,
    GenerationTimeout,
    GeneratorConfig,
    GeneratorUnavailable,
    UnknownAdapter,
    kept,
    register,
)

PROBE_TIMEOUT_S = 2.0  # readiness probes must answer fast; a server this slow to list models is not ready


class OpenAIGenerator:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.served_model = model
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers, transport=transport)

    @property
    def model(self) -> str:
        return self.served_model

    def generate(
        self, chats: Sequence[Chat], params: GenerationParams, adapter: str | None = None
    ) -> list[Completion]:
        deadline = Deadline(params.limit(self.timeout_s))
        if len(chats) <= 1:
            done = [self._complete(c, params, adapter, deadline) for c in chats]
        else:
            with ThreadPoolExecutor(min(self.concurrency, len(chats))) as pool:
                done = list(pool.map(lambda c: self._complete(c, params, adapter, deadline), chats))
        return kept(done, deadline, f"the LLM server at {self.base_url}")

    def _complete(
        self, chat: Chat, params: GenerationParams, adapter: str | None, deadline: Deadline
    ) -> Completion:
        start = time.monotonic()
        try:
            if deadline.passed():  # a chat queued behind a slow batch
                raise deadline.expired(f"the LLM server at {self.base_url}")
            with _Translate(self.base_url):
                response = self.client.post(
                    "/chat/completions",
                    json=self._body(chat, params, adapter),
                    timeout=deadline.remaining(),
                )
                _raise_for_status(response, adapter)
        except GenerationTimeout:
            # the other chats of the batch may have finished; `kept` raises if none did
            return Completion("", adapter or self.served_model, 0, 0, time.monotonic() - start, "timeout")
        body = response.json()
        choice, usage = body["choices"][0], body.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            model=body.get("model", adapter or self.served_model),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            seconds=time.monotonic() - start,
            finish_reason=choice.get("finish_reason") or "stop",
        )

    def stream(self, chat: Chat, params: GenerationParams, adapter: str | None = None) -> Iterator[str]:
        deadline = Deadline(params.limit(self.timeout_s))
        wrote = False
        try:
            for piece in self._pieces(chat, params, adapter, deadline):
                wrote = True
                yield piece
        except GenerationTimeout:
            if not wrote:
                raise
        # leaving the `with` in `_pieces` at the deadline closes the connection: the server stops

    def _pieces(
        self, chat: Chat, params: GenerationParams, adapter: str | None, deadline: Deadline
    ) -> Iterator[str]:
        body = {**self._body(chat, params, adapter), "stream": True}
        with (
            _Translate(self.base_url),
            self.client.stream(
                "POST", "/chat/completions", json=body, timeout=deadline.remaining()
            ) as response,
        ):
            if response.is_error:
                response.read()
                _raise_for_status(response, adapter)
            for line in response.iter_lines():
                piece = _sse_piece(line)
                if piece is None:
                    break
                if piece:
                    yield piece
                if deadline.passed():
                    return

    def add_adapter(self, name: str, path: Path, timeout_s: float = 120.0) -> None:
        """Ask the server to serve the peft adapter folder `path` (a path on the server's machine)
        as model `name` from now on: vLLM's `POST /v1/load_lora_adapter`, which needs the server
        started with `--enable-lora` and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True. A name the server
        already serves from the same path is left alone; from another path, it is unloaded and
        loaded again. A refusal raises GeneratorUnavailable with the server's reason."""
        body = {"lora_name": name, "lora_path": str(path)}
        response = self._admin("load_lora_adapter", body, timeout_s)
        if response.status_code == 400 and "already been loaded" in _error_message(response):
            if self._adapter_root(name, timeout_s) == str(path):
                return
            self._refused(self._admin("unload_lora_adapter", {"lora_name": name}, timeout_s), name, path)
            response = self._admin("load_lora_adapter", body, timeout_s)
        self._refused(response, name, path)

    def _admin(self, route: str, body: dict[str, str], timeout_s: float) -> httpx.Response:
        # vLLM serves these beside the OpenAI routes, under the root's /v1 whatever base_url adds
        url = f"{self.base_url.removesuffix('/v1')}/v1/{route}"
        with _Translate(self.base_url):
            return self.client.post(url, json=body, timeout=timeout_s)

    def _adapter_root(self, name: str, timeout_s: float) -> str | None:
        """The path the server loaded adapter `name` from (vLLM lists it as the model's root)."""
        with _Translate(self.base_url):
            response = self.client.get("/models", timeout=timeout_s)
            _raise_for_status(response, None)
        roots = {m["id"]: m.get("root") for m in response.json()["data"]}
        return roots.get(name)

    def _refused(self, response: httpx.Response, name: str, path: Path) -> None:
        if not response.is_error:
            return
        detail = _error_message(response)
        if response.status_code in (404, 405) and "adapter" not in detail.lower():
            detail = (
                "it loads no adapters at runtime: start vLLM with --enable-lora and "
                f"VLLM_ALLOW_RUNTIME_LORA_UPDATING=True ({response.status_code}: {detail})"
            )
        raise GeneratorUnavailable(
            f"the LLM server at {self.base_url} did not load adapter {name!r} from {path}: {detail}"
        )

    def models(self, timeout_s: float = 10.0) -> list[str]:
        """The model and adapter names the server serves."""
        with _Translate(self.base_url):
            response = self.client.get("/models", timeout=timeout_s)
            _raise_for_status(response, None)
        return [m["id"] for m in response.json()["data"]]

    def ready(self) -> bool:
        """The server answers `GET /models` quickly and lists the configured model."""
        wait = min(PROBE_TIMEOUT_S, self.timeout_s)
        try:
            served = self.models(wait)
        except GenerationTimeout as exc:
            raise GeneratorUnavailable(
                f"the LLM server at {self.base_url} did not list its models within {wait:g} s"
            ) from exc
        if self.served_model not in served:
            raise GeneratorUnavailable(
                f"the LLM server at {self.base_url} does not serve {self.served_model!r}; it serves {served}"
            )
        return True

    def _body(self, chat: Chat, params: GenerationParams, adapter: str | None) -> dict[str, Any]:
        return {
            "model": adapter or self.served_model,
            "messages": [dict(m) for m in chat],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            **({"stop": list(params.stop)} if params.stop else {}),
        }


class _Translate:
    """Turns httpx failures into the protocol's errors, naming the server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, httpx.TimeoutException):
            raise GenerationTimeout(
                f"the LLM server at {self.base_url} did not answer in time: {exc!r}"
            ) from exc
        if isinstance(exc, httpx.TransportError):
            raise GeneratorUnavailable(f"cannot reach the LLM server at {self.base_url}: {exc}") from exc


def _raise_for_status(response: httpx.Response, adapter: str | None) -> None:
    if not response.is_error:
        return
    detail = _error_message(response)
    if response.status_code == 404 and adapter:
        raise UnknownAdapter(f"the LLM server does not serve adapter {adapter!r}: {detail}")
    if response.status_code >= 500:
        raise GeneratorUnavailable(f"the LLM server failed ({response.status_code}): {detail}")
    raise GenerationError(f"the LLM server refused the request ({response.status_code}): {detail}")


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", body)
        return str(error.get("message", error) if isinstance(error, dict) else error)
    except (ValueError, AttributeError):
        return response.text[:300]


def _sse_piece(line: str) -> str | None:
    """The text in one server-sent event line; None at the end of the stream."""
    if not line.startswith("data:"):
        return ""
    data = line.removeprefix("data:").strip()
    if data == "[DONE]":
        return None
    choices = json.loads(data).get("choices") or [{}]
    return str(choices[0].get("delta", {}).get("content") or "")


@register("openai")
def _build(config: GeneratorConfig) -> OpenAIGenerator:
    return OpenAIGenerator(config.base_url, config.model, api_key=config.api_key, timeout_s=config.timeout_s)
