"""The OpenAI-compatible generator: one chat-completions call per guide, on the official SDK.

The ``openai`` SDK brings the timeouts, the retries of transient failures (connection
errors, timeouts, 408, 409, 5xx, a 429 without ``Retry-After``) with exponential
back-off and jitter, the streaming and the ``usage``; any OpenAI-compatible server
works through ``base_url``. Once its attempts are spent a :class:`GeneratorError` lets
Dramatiq's ``Retries`` decide; a refused request (bad key, bad model: other 4xx) raises
:class:`PermanentGeneratorError`. A 429 with ``Retry-After`` is not waited out here: it
raises :class:`RateLimitedError` at once, and the limiter pauses every call to the
provider, in every worker process, for that long. The API key goes in one header and
is never logged nor put in an error message.
"""

from __future__ import annotations

import time
from typing import Any

import openai

from workers.generators import prompt
from workers.generators.base import (
    GeneratorError,
    GuideRequest,
    OnText,
    PermanentGeneratorError,
    RateLimitedError,
    Usage,
    Written,
)
from workers.generators.metering import estimate_tokens

#: Part of an error message quoted in ours, in characters.
BODY_EXCERPT_CHARS = 200
#: Statuses the SDK retries (it gives up with them when its attempts are spent).
TRANSIENT_STATUSES = frozenset({408, 409, 429})


class OpenAIGenerator:
    """Writes guides with an OpenAI-compatible chat-completions API; safe across threads.

    Parameters:
      base_url: API root, e.g. ``https://api.openai.com/v1``.
      api_key: bearer key; when missing, :meth:`generate` raises PermanentGeneratorError.
      model: chat model name.
      timeout_s: timeout of one HTTP request, in seconds.
      max_attempts: HTTP attempts per guide on transient failures (the SDK retries).
      max_chars: longest guide kept, in characters (longer output is cut).
      stream: ask for the answer as a stream of chunks, with ``usage`` in the last.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout_s: float = 60.0,
        max_attempts: int = 4,
        max_chars: int = 60_000,
        stream: bool = True,
    ) -> None:
        self.name = f"openai:{model}"
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts)
        self.max_chars = max_chars
        self.stream = stream
        self._api_key = api_key or None
        # One client (one connection pool) for every thread: the SDK's client is thread-safe.
        self._client = (
            openai.OpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=timeout_s,
                max_retries=self.max_attempts - 1,
                http_client=openai.DefaultHttpxClient(
                    event_hooks={"response": [_leave_paced_429s_to_the_limiter]}
                ),
            )
            if self._api_key
            else None
        )

    def __repr__(self) -> str:
        return f"OpenAIGenerator(base_url={self.base_url!r}, model={self.model!r})"

    def generate(self, request: GuideRequest, *, on_text: OnText | None = None) -> Written:
        """Return the model's Markdown guide for ``request`` (cut to ``max_chars``) and usage.

        Tokens come from the answer's ``usage``; a server that sends none gets them
        estimated from characters (``estimated``).

        Raises:
          PermanentGeneratorError: no key, or the API refused the request (4xx but 408,
            409 and 429).
          GeneratorError: the API kept failing, or answered without a guide.
        """
        if self._client is None:
            raise PermanentGeneratorError(
                "no API key for the OpenAI-compatible API: set OPENAI_API_KEY"
            )
        messages = prompt.build_messages(request)
        started = time.monotonic()
        try:
            if self.stream:
                text, model, reported = self._streamed(messages, on_text)
            else:
                text, model, reported = self._answered(messages, on_text)
        except openai.APIError as exc:
            raise self._classified(exc) from None
        except ValueError as exc:  # a body or an event that is not JSON
            raise GeneratorError(f"malformed chat-completions answer ({exc})") from None
        except Exception as exc:
            if not _is_transport_error(exc):
                raise
            # The SDK retries failed requests; an answer cut mid-stream surfaces as is.
            raise GeneratorError(
                f"connection lost during the answer ({type(exc).__name__}) from {self.base_url}"
            ) from None
        if not text.strip():
            raise GeneratorError("the API answered with an empty guide")
        markdown = self._redact(text)[: self.max_chars]
        usage = _usage(model or self.model, messages, text, reported, time.monotonic() - started)
        return Written(markdown, usage)

    def _create(self, messages: list[dict[str, str]], **options: Any) -> Any:
        return self._client.chat.completions.create(  # type: ignore[union-attr]
            model=self.model, messages=messages, temperature=0.2, **options
        )

    def _answered(
        self, messages: list[dict[str, str]], on_text: OnText | None
    ) -> tuple[str, str | None, Any]:
        """One answer: its text, model and ``usage`` (None when the server sent none)."""
        answer = self._create(messages)
        try:
            text = answer.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            excerpt = self._excerpt(answer)
            raise GeneratorError(f"malformed chat-completions answer: {excerpt}") from None
        if not isinstance(text, str):
            raise GeneratorError("the API answered with an empty guide")
        if on_text is not None and text:
            on_text(self._redact(text)[: self.max_chars])
        return text, getattr(answer, "model", None), getattr(answer, "usage", None)

    def _streamed(
        self, messages: list[dict[str, str]], on_text: OnText | None
    ) -> tuple[str, str | None, Any]:
        """A stream of chunks: the text they add up to, the model and the last ``usage``."""
        stream = self._create(messages, stream=True, stream_options={"include_usage": True})
        pieces: list[str] = []
        model, reported, kept = None, None, 0
        with stream:
            for chunk in stream:
                model = getattr(chunk, "model", None) or model
                reported = getattr(chunk, "usage", None) or reported
                piece = _delta_text(chunk)
                if not piece:
                    continue
                pieces.append(piece)
                if on_text is not None and kept < self.max_chars:
                    shown = self._redact(piece)[: self.max_chars - kept]
                    kept += len(shown)
                    on_text(shown)
        return "".join(pieces), model, reported

    def _classified(self, exc: openai.APIError) -> GeneratorError:
        """Return our error for the SDK's, once its retries are spent: permanent or not."""
        attempts = f"{self.max_attempts} attempt(s)"
        if isinstance(exc, openai.APITimeoutError):
            return GeneratorError(f"no answer within {self.timeout_s:g} s ({attempts})")
        if isinstance(exc, openai.APIConnectionError):
            cause = type(exc.__cause__ or exc).__name__
            return GeneratorError(f"connection failed ({cause}) to {self.base_url} ({attempts})")
        if not isinstance(exc, openai.APIStatusError):
            return GeneratorError(f"malformed chat-completions answer: {self._message(exc)}")
        status, message = exc.status_code, self._message(exc)
        retry_after = _retry_after_s(exc.response.headers) if status == 429 else None
        if retry_after is not None:
            return RateLimitedError(
                f"the API at {self.base_url} answered HTTP 429: {message}", retry_after
            )
        if status >= 500 or status in TRANSIENT_STATUSES:
            return GeneratorError(
                f"the API at {self.base_url} failed {attempts}; last: HTTP {status}: {message}"
            )
        return PermanentGeneratorError(_client_error(status, message))

    def _message(self, exc: openai.APIError) -> str:
        """Return the API's error message, else the start of the body, without the key."""
        body = getattr(exc, "body", None)
        found = body.get("message") if isinstance(body, dict) else None
        if not isinstance(found, str) or not found:
            response = getattr(exc, "response", None)
            text = getattr(response, "text", "") if response is not None else ""
            found = " ".join(str(text).split()) or exc.message or "empty body"
        return self._redact(found)[:BODY_EXCERPT_CHARS]

    def _excerpt(self, answer: Any) -> str:
        return repr(self._redact(str(answer))[:BODY_EXCERPT_CHARS])

    def _redact(self, text: str) -> str:
        # Some compatible servers echo what they were sent; never pass the key on.
        return text.replace(self._api_key, "[redacted]") if self._api_key else text


def _retry_after_s(headers: Any) -> float | None:
    """Return a response's ``Retry-After`` (or ``retry-after-ms``) in seconds, else None."""
    for name, unit in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers[name]) / unit)
        except (KeyError, TypeError, ValueError):
            continue
    return None


def _leave_paced_429s_to_the_limiter(response: Any) -> None:
    """Tell the SDK not to retry a 429 that says how long to wait (the limiter waits)."""
    if response.status_code == 429 and _retry_after_s(response.headers) is not None:
        response.headers["x-should-retry"] = "false"


def _delta_text(chunk: Any) -> str:
    """Return the text a stream chunk adds ("" for a usage-only or role-only chunk)."""
    choices = getattr(chunk, "choices", None) or []
    delta = getattr(choices[0], "delta", None) if choices else None
    content = getattr(delta, "content", None)
    return content if isinstance(content, str) else ""


def _is_transport_error(exc: BaseException) -> bool:
    """True for the HTTP client's network errors (``httpx``'s ``TransportError`` family)."""
    return any(kind.__name__ == "TransportError" for kind in type(exc).__mro__)


def _client_error(status: int, message: str) -> str:
    """Return what a refused request means and what to fix."""
    if status == 401:
        return f"the API rejected the key ({status}): {message}; set OPENAI_API_KEY"
    if status == 403:
        return f"the API refused access ({status}): {message}; check OPENAI_API_KEY"
    if status == 404:
        return f"not found ({status}): {message}; check OPENAI_BASE_URL and OPENAI_MODEL"
    return f"the API rejected the request ({status}): {message}"


def _usage(
    model: str, messages: list[dict[str, str]], text: str, reported: Any, elapsed_s: float
) -> Usage:
    """Return the call's usage: the server's ``usage``, else estimated from characters."""
    prompt_tokens = getattr(reported, "prompt_tokens", None)
    completion_tokens = getattr(reported, "completion_tokens", None)
    estimated = not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int)
    if estimated:
        prompt_tokens = estimate_tokens(prompt.prompt_chars(messages))
        completion_tokens = estimate_tokens(len(text))
    return Usage(
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        estimated=estimated,
        latency_ms=round(elapsed_s * 1000),
        prompt_version=prompt.VERSION,
    )
