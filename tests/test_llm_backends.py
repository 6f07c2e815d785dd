"""LLM backends and the call cache.

The openai backend is exercised with the real ``openai`` SDK over real HTTP against
tests/fake_openai_server.py; every expected count below follows from the scripted faults (one
scripted fault = one extra request = one retry). The transformers backend is checked on the
bundled SmolLM2 (chat template with our explicit system message, a few greedy tokens).
"""

import hashlib
import json

import pytest

from editprobe.dataset_builder.llm import (LLM, ChatRequest, LLMConfigError, OpenAIBackend, TransformersBackend,
                                           parse_json_object)
from editprobe.dataset_builder.llm_cache import LLMCache, cache_key
from tests.fake_openai_server import FakeOpenAIServer

KEY = "sk-test-0123456789-not-a-real-key"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread while this module runs: on 2 shared cores, two threads spin against any other
    busy process (measured: a 4-token SmolLM2 generation 17 s with two threads vs ~1 s with one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def smollm2():
    backend = TransformersBackend(batch_size=2)
    backend.load()
    return backend


@pytest.fixture
def server():
    with FakeOpenAIServer(api_key=KEY, stall_seconds=1.0) as srv:
        yield srv


def _backend(srv, **kw):
    kw = {"api_key": KEY, "base_url": srv.base_url, "timeout": 0.4, "retry_base_delay": 0.01, "workers": 2, **kw}
    return OpenAIBackend(kw.pop("model", "fake-model"), **kw)


def _ask(text, **kw):
    return ChatRequest.of([{"role": "user", "content": text}], **kw)


# --------------------------------------------------------------------------- cache

def test_cache_key_is_sha256_of_canonical_json():
    messages = [{"role": "user", "content": "hi"}]
    # written out by hand: sorted keys, no spaces
    canonical = ('{"backend":"openai","messages":[{"content":"hi","role":"user"}],"model":"m",'
                 '"parameters":{"max_tokens":5,"temperature":0}}')
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert cache_key("openai", "m", messages, {"temperature": 0, "max_tokens": 5}) == expected
    assert cache_key("openai", "m", [{"content": "hi", "role": "user"}], {"max_tokens": 5, "temperature": 0}) == expected
    assert cache_key("openai", "m", messages, {"temperature": 0.7, "max_tokens": 5}) != expected
    assert cache_key("transformers", "m", messages, {"temperature": 0, "max_tokens": 5}) != expected


def test_cache_entry_holds_only_the_answer(tmp_path):
    source_text = "Which family does Epaspidoceras belong to?"
    with FakeOpenAIServer(lambda body: "Perisphinctidae", api_key=KEY) as srv:
        llm = LLM(_backend(srv), LLMCache(tmp_path))
        llm.chat(_ask(source_text))
    entries = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert len(entries) == 1  # no tmp file left behind
    key = llm.key(_ask(source_text))
    assert entries[0] == tmp_path / key[:2] / f"{key}.json"
    # the answer and its token counts (one word out; six words in, as the fake server counts), never the prompt
    assert json.loads(entries[0].read_text()) == {"text": "Perisphinctidae", "tokens_in": 6, "tokens_out": 1}
    assert "Epaspidoceras" not in entries[0].read_text()


def test_cache_reads_broken_entries_as_misses(tmp_path):
    cache = LLMCache(tmp_path)
    key = "ab" + "0" * 62
    cache.path(key).parent.mkdir(parents=True)
    cache.path(key).write_text('{"text": "trunc')  # a torn write (cannot happen with rename, but be safe)
    (cache.path(key).parent / ".ab000000.x.tmp").write_text("leftover")
    assert cache.get(key) is None and len(cache) == 1
    cache.put(key, "answer", 3, 1)
    assert cache.get(key) == {"text": "answer", "tokens_in": 3, "tokens_out": 1}


def test_second_identical_batch_makes_no_call(server, tmp_path):
    requests = [_ask(f"question {i}") for i in range(5)] + [_ask("question 0")]  # one duplicate
    first = LLM(_backend(server), LLMCache(tmp_path))
    answers = [r.text for r in first.chat_many(requests)]
    assert answers == [f"question {i}" for i in range(5)] + ["question 0"]
    assert (first.stats.calls, first.stats.cache_hits) == (5, 0)  # the duplicate is asked once
    second = LLM(_backend(server), LLMCache(tmp_path))
    assert [r.text for r in second.chat_many(requests)] == answers
    assert (second.stats.calls, second.stats.cache_hits) == (0, 6)
    assert server.total_received == 5


# --------------------------------------------------------------------------- openai backend: faults

@pytest.mark.parametrize("fault", ["429", "500", "stall", "malformed"])
def test_one_fault_is_retried(server, tmp_path, fault):
    server.script(fault)
    llm = LLM(_backend(server), LLMCache(tmp_path))
    result = llm.chat(_ask("after a fault"))
    assert result.ok and result.text == "after a fault"
    assert server.total_received == 2  # the faulty request + one retry
    assert (llm.stats.calls, llm.stats.retries, llm.stats.failures) == (1, 1, 0)


def test_backoff_doubles_from_the_base_delay(server):
    delays = []
    backend = _backend(server, retry_base_delay=0.25, sleep=delays.append)
    server.script("500", "429", "500")
    assert LLM(backend, None).chat(_ask("x")).ok
    assert delays == [0.25, 0.5, 1.0]


def test_gives_up_after_max_retries_and_caches_nothing(server, tmp_path):
    server.script("500", "500", "500")
    llm = LLM(_backend(server, max_retries=2), LLMCache(tmp_path))
    result = llm.chat(_ask("x"))
    assert not result.ok and "HTTP 500" in result.error
    assert server.total_received == 3 and llm.stats.failures == 1 and len(LLMCache(tmp_path)) == 0
    again = LLM(_backend(server, max_retries=2), LLMCache(tmp_path))
    assert again.chat(_ask("x")).text == "x" and again.stats.calls == 1


def test_bounded_concurrency(tmp_path):
    import threading
    import time

    active, peak, lock = [0], [0], threading.Lock()

    def slow(body):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.15)
        with lock:
            active[0] -= 1
        return "ok"

    with FakeOpenAIServer(slow, api_key=KEY) as srv:
        llm = LLM(_backend(srv, workers=3, timeout=5), None)
        assert all(r.ok for r in llm.chat_many([_ask(str(i)) for i in range(9)]))
    assert peak[0] == 3


def test_json_mode_falls_back_to_parsing(tmp_path):
    with FakeOpenAIServer(lambda body: 'Sure! {"topic": "Science"}', api_key=KEY) as srv:
        srv.reject_json_mode = True
        backend = _backend(srv)
        first = LLM(backend, None).chat(_ask("a", json_mode=True))
        second = LLM(backend, None).chat(_ask("b", json_mode=True))
        assert first.json() == {"topic": "Science"} and second.json() == {"topic": "Science"}
        # the first request tried JSON mode, got 400, and the backend stopped asking for it
        assert srv.json_mode_requests == 1 and srv.total_received == 3


# --------------------------------------------------------------------------- openai backend: configuration errors

def test_wrong_key_is_one_clear_line(server):
    with pytest.raises(LLMConfigError) as info:
        LLM(_backend(server, api_key="sk-wrong-key", api_key_env="MY_LLM_KEY"), None).chat(_ask("x"))
    message = str(info.value)
    assert "\n" not in message and "MY_LLM_KEY" in message and "401" in message
    assert "sk-wrong-key" not in message
    assert server.total_received == 1  # not retried


def test_unknown_model_is_one_clear_line(server):
    with pytest.raises(LLMConfigError) as info:
        LLM(_backend(server, model="no-such-model"), None).chat(_ask("x"))
    assert "\n" not in str(info.value) and "no-such-model" in str(info.value) and "404" in str(info.value)


def test_missing_key_fails_before_any_call():
    with pytest.raises(LLMConfigError, match="environment variable MY_LLM_KEY"):
        OpenAIBackend("m", api_key=None, api_key_env="MY_LLM_KEY")


def test_backend_repr_hides_the_key(server):
    assert KEY not in repr(_backend(server)) and KEY not in repr(LLM(_backend(server), None).backend)


# --------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("text,expected", [
    ('{"topic": "Science"}', {"topic": "Science"}),
    ('```json\n{"1": "a"}\n```', {"1": "a"}),
    ('Here you go: {"newquestion": "Who?"} Hope it helps.', {"newquestion": "Who?"}),
])
def test_parse_json_object(text, expected):
    assert parse_json_object(text) == expected


@pytest.mark.parametrize("text", ["no json here", '["a list"]', '{"broken": '])
def test_parse_json_object_refuses(text):
    with pytest.raises(ValueError):
        parse_json_object(text)


# --------------------------------------------------------------------------- transformers backend

def test_transformers_backend_sends_an_explicit_system_message(smollm2):
    backend = smollm2
    prepared = backend.prepare(_ask("Name a colour."))
    assert prepared.messages[0] == ("system", backend.system)
    mine = ChatRequest.of([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert backend.prepare(mine) is mine
    _, tokenizer, _ = backend.load()
    rendered = tokenizer.apply_chat_template(prepared.message_dicts(), tokenize=False, add_generation_prompt=True)
    assert "named SmolLM" not in rendered  # SmolLM2's template injects this only when no system message is sent
    assert rendered.startswith(f"<|im_start|>system\n{backend.system}<|im_end|>")


def test_transformers_backend_generates_greedily_and_caches(smollm2, tmp_path):
    backend = smollm2
    requests = [_ask("Name a colour.", max_tokens=4), _ask("Name a fruit.", max_tokens=4)]
    first = LLM(backend, LLMCache(tmp_path))
    a = first.chat_many(requests)
    assert all(r.ok and 1 <= r.tokens_out <= 4 and r.tokens_in > 10 for r in a)
    again = LLM(backend, LLMCache(tmp_path)).chat_many(requests)
    assert [r.text for r in again] == [r.text for r in a] and all(r.cached for r in again)
    # greedy: a fresh, uncached call gives the same text
    assert LLM(backend, None).chat(requests[0]).text == a[0].text


def test_unreachable_endpoint_is_one_clear_line():
    with FakeOpenAIServer() as srv:
        closed = srv.base_url  # nothing listens here once the server has stopped
    with pytest.raises(LLMConfigError) as info:
        LLM(OpenAIBackend("fake-model", api_key=KEY, base_url=closed, max_retries=1, retry_base_delay=0.01),
            None).chat(_ask("x"))
    assert "\n" not in str(info.value) and closed in str(info.value)
