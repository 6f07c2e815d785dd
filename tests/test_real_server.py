"""The builder against a real OpenAI-compatible HTTP server, not a fake.

`transformers serve` (FastAPI + uvicorn, installed with the test extra) serves the embedded SmolLM2 on the
loopback address; `editprobe build --backend openai --base-url http://127.0.0.1:PORT/v1` builds 3 ZsRE
records through it. Half-way the server is killed (SIGKILL) and started again on the same port: the
builder's retries must carry the build through the outage. A rebuild must then be served entirely from the
cache. SmolLM2-135M writes poor paraphrases, so most levels fail their gates: the test checks the pipeline
(calls, retries, cache, report), and prints the pass rate per level, which the README quotes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from editprobe.dataset_builder.llm_cache import LLMCache

REPO = Path(__file__).resolve().parent.parent
ZSRE = "knowedit/zsre_test.json"
KEY = "sk-editprobe-local-server-test-never-written"
SERVE = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
pytestmark = pytest.mark.model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`transformers serve MODEL` on 127.0.0.1:port, started and stopped by the test."""

    def __init__(self, model: Path, port: int, log: Path):
        self.model, self.port, self.log = model, port, log
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 240) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([SERVE, "serve", str(self.model), "--host", "127.0.0.1", "--port",
                                          str(self.port), "--device", "cpu", "--dtype", "float32"],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"the server exited: {self.log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"the server did not answer /health in {timeout:g} s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def served_model() -> Path:
    from editprobe.models import smollm2_local_copy
    from editprobe.paths import default_cache_dir

    if not Path(SERVE).exists() and shutil.which(SERVE) is None:
        pytest.fail("`transformers serve` is not installed: the test extra installs transformers[serving]")
    return smollm2_local_copy(default_cache_dir())


def test_the_builder_survives_a_killed_real_server_and_rebuilds_from_its_cache(data_dir, tmp_path, served_model,
                                                                                capsys):
    out, cache, logs = tmp_path / "out", tmp_path / "llm", tmp_path / "logs"
    logs.mkdir()
    server = Server(served_model, _free_port(), logs / "server.log")
    env = {**os.environ, "EDITPROBE_LOCAL_KEY": KEY, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "editprobe.cli", "build", "--source", str(data_dir / ZSRE), "--config", "zsre",
            "--limit", "3", "--out", str(out), "--llm-cache", str(cache), "--backend", "openai",
            "--llm-model", str(served_model), "--base-url", server.base_url, "--api-key-env", "EDITPROBE_LOCAL_KEY",
            "--topics", "both", "--max-attempts", "2", "--max-tokens", "160", "--workers", "1", "--timeout", "300",
            "--max-retries", "7", "--retry-base-delay", "1", "--quiet"]
    server.start()
    try:
        with open(logs / "build1.out", "w") as o, open(logs / "build1.err", "w") as e:
            build = subprocess.Popen(args, stdout=o, stderr=e, env=env, cwd=REPO)
        deadline = time.time() + 600
        while len(LLMCache(cache)) < 1:  # the first answer is in the cache: kill the server mid-build
            assert build.poll() is None, (logs / "build1.err").read_text()[-3000:]
            assert time.time() < deadline, "no answer cached in 600 s"
            time.sleep(0.2)
        server.kill()
        killed_at = len(LLMCache(cache))
        time.sleep(2)  # the build now meets connection errors and backs off
        server.start()
        assert build.wait(timeout=900) == 0, (logs / "build1.err").read_text()[-3000:]
    finally:
        server.kill()

    report = json.loads((out / "build_report.json").read_text())
    zsre, generator = report["configs"]["zsre"], report["llm"]["generator"]
    assert zsre["records_in"] == 3 and zsre["kept"] + zsre["excluded"] == 3
    assert len(zsre["excluded_records"]) == zsre["excluded"]
    assert generator["model"] == f"openai:{served_model}"
    assert generator["retries"] >= 1, "the outage should have cost at least one retry"
    assert generator["failures"] == 0, "every call should have got through once the server was back"
    # 3 paraphrase requests at least, 3 topic requests; every answer is in the cache, one entry per call
    assert generator["calls"] >= 6 and len(LLMCache(cache)) == generator["calls"] > killed_at
    gates = zsre["gates"]
    assert all(gates[str(level)]["passed"] + gates[str(level)]["failed"] >= 3 for level in range(1, 7))

    # The rebuild makes no call (the server is down: a cache miss would fail to connect), and the dataset
    # is the same.
    first = {p.name: p.read_bytes() for p in (out / "zsre").glob("*.jsonl")}
    rebuild = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert rebuild.returncode == 0, rebuild.stderr[-3000:]
    again = json.loads((out / "build_report.json").read_text())["llm"]["generator"]
    assert (again["calls"], again["cache_hits"]) == (0, generator["calls"])
    assert {p.name: p.read_bytes() for p in (out / "zsre").glob("*.jsonl")} == first

    for folder in (out, cache, logs):
        for path in folder.rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    rates = ", ".join(f"L{level} {gates[str(level)]['passed']}/{gates[str(level)]['passed'] + gates[str(level)]['failed']}"
                      for level in range(1, 7))
    with capsys.disabled():
        print(f"\n  real server (transformers serve, SmolLM2-135M): {zsre['kept']}/3 records kept; "
              f"paraphrases passing per level: {rates}; {generator['calls']} calls, {generator['retries']} retries")
