"""The `openai` backend: any OpenAI-compatible chat server, meant for vLLM.

vLLM serves LoRA adapters as extra model names (`--lora-modules name=path`), so an adapter is
chosen by sending its name as `model`. A batch is sent as concurrent requests, which vLLM's
continuous batching decodes together. Connection failures become `GeneratorUnavailable` and slow
answers `GenerationTimeout`, which the fallback wrapper (LLM_FALLBACK) turns into a local answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from briefing.llm.base import (
    Chat,
    Completion,
    GenerationError,
    GenerationParams,
    GenerationTimeout,
    GeneratorConfig,
    GeneratorUnavailable,
    UnknownAdapter,
    register,
)


class OpenAIGenerator:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.served_model = model
        self.concurrency = concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers, transport=transport)

    @property
    def model(self) -> str:
        return self.served_model

    def generate(
        self, chats: Sequence[Chat], params: GenerationParams, adapter: str | None = None
    ) -> list[Completion]:
        if len(chats) <= 1:
            return [self._complete(c, params, adapter) for c in chats]
        with ThreadPoolExecutor(min(self.concurrency, len(chats))) as pool:
            return list(pool.map(lambda c: self._complete(c, params, adapter), chats))

    def _complete(self, chat: Chat, params: GenerationParams, adapter: str | None) -> Completion:
        start = time.monotonic()
        with _Translate(self.base_url):
            response = self.client.post(
                "/chat/completions", json=self._body(chat, params, adapter), timeout=params.timeout_s
            )
            _raise_for_status(response, adapter)
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
        body = {**self._body(chat, params, adapter), "stream": True}
        with (
            _Translate(self.base_url),
            self.client.stream("POST", "/chat/completions", json=body, timeout=params.timeout_s) as response,
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

    def models(self) -> list[str]:
        """The model and adapter names the server serves."""
        with _Translate(self.base_url):
            response = self.client.get("/models", timeout=10)
            _raise_for_status(response, None)
        return [m["id"] for m in response.json()["data"]]

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
    return OpenAIGenerator(config.base_url, config.model, api_key=config.api_key)
