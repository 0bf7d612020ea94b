"""The OpenAI-compatible generator: one chat-completions call per guide.

Transient failures (connection errors, timeouts, 429, 5xx) are retried here with
exponential back-off and jitter; once the attempts are spent a :class:`GeneratorError`
lets Dramatiq's ``Retries`` decide. A 429 with ``Retry-After`` is not waited out here:
it raises :class:`RateLimitedError` at once, and the limiter pauses every call to the
provider, in every worker process, for that long.  Client errors (bad key, bad
model) raise :class:`PermanentGeneratorError`.  The API key is sent in one header and is
never logged nor put in an error message.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import requests

from workers.generators.base import (
    GeneratorError,
    GuideRequest,
    PermanentGeneratorError,
    RateLimitedError,
)

logger = logging.getLogger(__name__)

#: Instructions given to the model with every request.
SYSTEM_PROMPT = (
    "You write practical hands-on guides for software project tasks. Answer in Markdown "
    "only (no HTML): a '# Hands-on: <task title>' heading, then the goal, what to have "
    "done before starting, numbered concrete steps with short code examples where useful, "
    "and a 'Check your work' checklist. Build on the guides of the tasks it depends on."
)
#: Part of each dependency's guide sent to the model, in characters.
DEPENDENCY_GUIDE_CHARS = 2_000
#: Part of the previous pipeline step's guide sent to the model, in characters.
PREVIOUS_GUIDE_CHARS = 4_000
#: Part of an error response body quoted in error messages, in characters.
BODY_EXCERPT_CHARS = 200


class OpenAIGenerator:
    """Writes guides with an OpenAI-compatible chat-completions API; safe across threads.

    Parameters:
      base_url: API root, e.g. ``https://api.openai.com/v1``.
      api_key: bearer key; when missing, :meth:`generate` raises PermanentGeneratorError.
      model: chat model name.
      timeout_s: timeout of one HTTP request, in seconds.
      max_attempts: HTTP attempts per guide on transient failures.
      max_chars: longest guide kept, in characters (longer output is cut).
      backoff_base_s: first retry delay, in seconds (doubles per attempt, with jitter).
      backoff_cap_s: longest retry delay, in seconds, ``Retry-After`` included.
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
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
    ) -> None:
        self.name = f"openai:{model}"
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts)
        self.max_chars = max_chars
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._api_key = api_key or None
        # requests.Session is not documented as thread-safe: one per worker thread.
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"OpenAIGenerator(url={self.url!r}, model={self.model!r})"

    def generate(self, request: GuideRequest) -> str:
        """Return the model's Markdown guide for ``request``, cut to ``max_chars``.

        Raises:
          PermanentGeneratorError: no key, or the API refused the request (4xx but 429).
          RateLimitedError: the API answered 429 with a ``Retry-After``.
          GeneratorError: the API kept failing, or answered without a guide.
        """
        if not self._api_key:
            raise PermanentGeneratorError(
                "no API key for the OpenAI-compatible API: set OPENAI_API_KEY"
            )
        payload = {"model": self.model, "messages": build_messages(request), "temperature": 0.2}
        response = self._post_with_retries(payload, request.task_key)
        return self._guide_from(response)[: self.max_chars]

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _post_with_retries(self, payload: dict[str, Any], task_key: str) -> requests.Response:
        problem = ""
        for attempt in range(1, self.max_attempts + 1):
            response, problem, retry_after = self._attempt(payload)
            if response is not None:
                return response
            if attempt < self.max_attempts:
                delay = self.backoff_delay(attempt, retry_after)
                logger.warning(
                    "Chat completions for task %s failed (attempt %d of %d: %s); "
                    "retrying in %.2f s.",
                    task_key,
                    attempt,
                    self.max_attempts,
                    problem,
                    delay,
                )
                time.sleep(delay)
        raise GeneratorError(
            f"the API at {self.url} failed {self.max_attempts} time(s); last: {problem}"
        )

    def _attempt(
        self, payload: dict[str, Any]
    ) -> tuple[requests.Response | None, str, float | None]:
        """POST once; return the response on success, else what failed and its Retry-After."""
        try:
            response = self._session().post(
                self.url,
                json=payload,
                headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=self.timeout_s,
            )
        except requests.Timeout:
            return None, f"no answer within {self.timeout_s:g} s", None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            return None, f"connection failed ({type(exc).__name__})", None
        except requests.RequestException as exc:
            raise PermanentGeneratorError(
                f"cannot call {self.url} ({type(exc).__name__}): check OPENAI_BASE_URL"
            ) from None
        if response.status_code < 300:
            return response, "", None
        if response.status_code != 429 and response.status_code < 500:
            raise PermanentGeneratorError(self._client_error(response))
        problem = f"HTTP {response.status_code}: {self._excerpt(response)}"
        retry_after = _retry_after_s(response)
        if response.status_code == 429 and retry_after is not None:
            raise RateLimitedError(f"the API at {self.url} answered {problem}", retry_after)
        return None, problem, retry_after

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Return the wait before retry ``attempt`` (1-based), in seconds, capped.

        ``Retry-After`` wins when the server sends it; otherwise exponential back-off with
        "full jitter" between half and all of ``backoff_base_s * 2 ** (attempt - 1)``.
        """
        if retry_after is not None:
            return min(self.backoff_cap_s, max(0.0, retry_after))
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _client_error(self, response: requests.Response) -> str:
        status, message = response.status_code, self._excerpt(response)
        if status == 401:
            return f"the API rejected the key ({status}): {message}; set OPENAI_API_KEY"
        if status == 403:
            return f"the API refused access ({status}): {message}; check OPENAI_API_KEY"
        if status == 404:
            return f"not found ({status}): {message}; check OPENAI_BASE_URL and OPENAI_MODEL"
        return f"the API rejected the request ({status}): {message}"

    def _excerpt(self, response: requests.Response) -> str:
        """Return the API's error message, else the start of the body, without the key."""
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = None
        if not isinstance(message, str) or not message:
            message = " ".join(response.text.split()) or response.reason or "empty body"
        return self._redact(message)[:BODY_EXCERPT_CHARS]

    def _guide_from(self, response: requests.Response) -> str:
        """Return the first choice's content; GeneratorError when the answer has none."""
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            excerpt = self._redact(response.text[:BODY_EXCERPT_CHARS])
            raise GeneratorError(
                f"malformed chat-completions answer (HTTP {response.status_code}): {excerpt!r}"
            ) from None
        if not isinstance(content, str) or not content.strip():
            raise GeneratorError("the API answered with an empty guide")
        return self._redact(content)

    def _redact(self, text: str) -> str:
        # Some compatible servers echo what they were sent; never pass the key on.
        return text.replace(self._api_key, "[redacted]") if self._api_key else text


def build_messages(request: GuideRequest) -> list[dict[str, str]]:
    """Return the chat messages (system prompt, then the task) for ``request``."""
    parts = [
        f"Project: {request.project_name}",
        f"Task {request.task_key}: {request.task_title}",
        f"Description:\n{request.task_description.strip() or '(none)'}",
    ]
    for dependency in request.dependencies:
        guide = _clip(dependency.guide, DEPENDENCY_GUIDE_CHARS) or "(no guide yet)"
        parts.append(f"Depends on: {dependency.title}\nIts guide:\n{guide}")
    if request.previous_guide:
        previous = _clip(request.previous_guide, PREVIOUS_GUIDE_CHARS)
        parts.append(f"Guide of the previous pipeline step:\n{previous}")
    parts.append("Write the hands-on guide for this task.")
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def _clip(text: str | None, limit: int) -> str:
    if not text:
        return ""
    return text if len(text) <= limit else text[:limit].rstrip() + "\n[…truncated]"


def _retry_after_s(response: requests.Response) -> float | None:
    """Return ``Retry-After`` in seconds, or None when absent or an HTTP date."""
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None
