"""The LLM judge (sumrl.evaluate.judge): reply parsing, the disabled stage, the hf backend on the tiny model, and
the openai backend against a real OpenAI-compatible server.

The server is `transformers serve` (transformers' own FastAPI/uvicorn server, the `serving` extra), started
here as a subprocess on a free port and serving the tiny test model on the CPU: real HTTP, a real model, no
mocked function. The tiny random model does not follow the answer format, so most of its replies are invalid:
exactly what the invalid-reply accounting must show.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from argparse import Namespace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sumrl import stages
from sumrl.artifacts import DataError, read_json, write_jsonl
from sumrl.config import Config
from sumrl.evaluate import judge
from sumrl.params import ParamsError, check_environment, load_params

from frontends import run as run_tool

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECRET = "sk-test-7c1e9d-DO-NOT-WRITE"
POST_LINE = '"POST /v1/chat/completions HTTP/1.1" 200'
DOCS = {
    "t0": ("We propose a parser for long documents and evaluate it on three corpora.",
           "A parser for long documents is proposed."),
    "t1": ("This paper studies summarization of scientific abstracts with reinforcement learning.",
           "Summarization with reinforcement learning."),
    "t2": ("We release a dataset of annotated dialogues and report baseline results.",
           "A dialogue dataset with baselines."),
}
POLICIES = ["base", "sft", "reinforce_s0"]


# ---- parsing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, expected", [
    ("B", "B"),
    ("**A**.", "A"),
    ("Summary A is better", "A"),
    ("Summary B is better than summary A.", "B"),
    ("Answer: B", "B"),
    ("B. It covers the main points.", "B"),
    ("A or B", None),
    ("A better summary would mention the corpora.", None),
    ("Summary A and summary B are equally good", None),
    ("", None),
    ("\n\n\n", None),
])
def test_parse_verdict(reply, expected):
    assert judge.parse_verdict(reply) == expected


@pytest.mark.parametrize("reply, expected", [
    ("Score: 7/10", 7.0),
    ("10", 10.0),
    ("8 out of 10", 8.0),
    ("On a scale of 1 to 10, I give it 6.", 6.0),
    ("7.5", 7.5),
    ("8.", 8.0),
    ("Score: 8. The summary is fluent.", 8.0),
    ("1. Read the document and note its main points.\n2. Read the", None),  # SmolLM2-135M echoing the steps
    ("One integer from 1 to 10", None),
    ("eleven", None),
    ("11", None),
    ("Score: 0", None),
    ("", None),
])
def test_parse_score(reply, expected):
    assert judge.parse_score(reply) == expected


def test_pair_outcome_cancels_position():
    assert judge.pair_outcome("A", "B") == 1.0   # the policy wins as A and as B
    assert judge.pair_outcome("A", "A") == 0.5   # the judge always picks the first position: a tie
    assert judge.pair_outcome("B", "A") == 0.0
    assert judge.pair_outcome(None, "B") is None


def test_reply_key_covers_what_decides_the_reply():
    q = judge.Query("prompt", 16)
    ident = {"backend": "openai", "model": "m"}
    variants = [(ident, q), ({**ident, "model": "other"}, q), (ident, judge.Query("prompt", 17)),
                (ident, judge.Query("prompt", 16, 1.0, 0, 0)), (ident, judge.Query("prompt", 16, 1.0, 0, 1))]
    keys = {judge.reply_key(i, query) for i, query in variants}
    assert len(keys) == 5
    assert judge.reply_key(ident, q) == judge.reply_key(dict(ident), judge.Query("prompt", 16))


def test_cache_survives_a_torn_line(tmp_path, caplog):
    path = tmp_path / "replies.jsonl"
    cache = judge.ReplyCache(path)
    cache.add("k1", "A")
    path.write_text(path.read_text() + '{"key": "k2", "rep')  # a run killed mid-write
    cache = judge.ReplyCache(path)
    assert "k1" in cache and "k2" not in cache
    assert "1 unreadable lines ignored" in caplog.text
    cache.add("k3", "Score: 7")
    assert judge.ReplyCache(path).replies == {"k1": "A", "k3": "Score: 7"}


# ---- params and environment ------------------------------------------------------------------------

def judge_params(*overrides: str) -> dict:
    return load_params(ROOT / "params.yaml", check_files=False, overrides=[
        "rl.methods=[reinforce]", "rl.seeds=[0]", "model.dtype=float32", "compute.device=cpu", "compute.threads=2",
        "judge.enabled=true", "judge.max_rows=2", "judge.max_new_tokens=4", *overrides,
    ])


def test_openai_judge_needs_a_model_name_and_its_url_in_the_environment():
    with pytest.raises(ParamsError, match=r"judge.model: required when judge.backend is 'openai'"):
        judge_params("judge.backend=openai")
    params = judge_params("judge.backend=openai", "judge.model=m", "judge.url_env=MY_JUDGE_URL")
    with pytest.raises(ParamsError, match=r"environment variable MY_JUDGE_URL is not set"):
        check_environment(params, environ={})
    with pytest.raises(ParamsError, match=r"MY_JUDGE_URL must be an http:// or https:// URL") as err:
        check_environment(params, environ={"MY_JUDGE_URL": "ftp://user:pw@host"})
    assert "pw@host" not in str(err.value)
    check_environment(params, environ={"MY_JUDGE_URL": "http://127.0.0.1:1/v1"})
    check_environment(judge_params("judge.enabled=false", "judge.backend=openai"), environ={})


# ---- the stage -------------------------------------------------------------------------------------

def write_generations(policies=POLICIES, bad_line: int | None = None) -> None:
    for k, policy in enumerate(policies):
        rows = [{"id": i, "document": doc, "summary": f"{policy} says: {ref.lower()}" if k else "",
                 "reference": ref, "references": [ref], "has_eos": True, "length": 5, "completion_ids": [1]}
                for i, (doc, ref) in DOCS.items()]
        if bad_line is not None:
            del rows[bad_line - 1]["reference"]
        write_jsonl(stages.GENERATIONS.format(policy=policy), rows)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_generations()
    return tmp_path


def test_disabled_judge_writes_enabled_false_without_torch(tmp_path):
    """The CLI path every default workflow run takes: fast, and torch is never imported."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    code = ("import sys; from sumrl.cli import main; rc = main(['judge']); "
            "assert 'torch' not in sys.modules, 'torch imported by a disabled judge'; sys.exit(rc)")
    start = time.monotonic()
    proc = run_tool([sys.executable, "-c", code], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - start < 20
    assert json.loads((tmp_path / stages.JUDGE).read_text()) == {"enabled": False}
    assert not (tmp_path / ".cache" / "judge").exists()


def test_bad_generation_row_is_an_error_naming_file_and_line(workspace):
    write_generations(bad_line=2)
    with pytest.raises(DataError, match=r"reports/generations/base.jsonl: line 2: .*\['reference'\]"):
        judge.run(judge_params())


def test_hf_backend_on_the_tiny_model(workspace, tiny_model_dir):
    """backend hf with judge.model null judges with models/base; against SFT, SFT gets no win rate."""
    Path("models").mkdir()
    os.symlink(tiny_model_dir, "models/base")
    params = judge_params("judge.against=sft", "judge.batch_size=4")
    judge.run(params, Namespace())
    out = read_json(stages.JUDGE)
    assert out["judge"]["backend"] == "hf" and out["judge"]["model"] == "models/base" and out["judge"]["sha256"]
    assert set(out["policies"]) == {*POLICIES, "reference"}
    assert out["policies"]["sft"]["pairwise"] is None and out["policies"]["reference"]["pairwise"] is None
    for policy in ("base", "reinforce_s0"):
        pw = out["policies"][policy]["pairwise"]
        assert pw["pairs"] == 2 and pw["valid"] + pw["invalid"] == 2
    # 2 policies x 2 rows x 2 orders + 4 scored summary sets x 2 rows, one greedy reply each
    assert out["replies"] == {"total": 16, "requested": 16, "from_cache": 0}

    judge.run(params, Namespace())
    again = read_json(stages.JUDGE)
    assert again["replies"] == {"total": 16, "requested": 0, "from_cache": 16}
    assert again["policies"] == out["policies"]


# ---- against a real OpenAI-compatible server ----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"transformers serve not healthy after {timeout} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """`transformers serve` pinned to the tiny model: (base URL ending in /v1, its log file)."""
    exe = BIN / "transformers"
    if not exe.exists():
        pytest.fail(f"{exe} not found: install requirements.txt (transformers' serving extra)")
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([str(exe), "serve", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32",
                                 "--host", "127.0.0.1", "--port", str(port)],
                                stdout=log_file, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log_path)
        yield f"{url}/v1", log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def posts(log_path: Path) -> int:
    return log_path.read_text().count(POST_LINE)


def openai_params(tiny_model_dir: Path, *overrides: str) -> dict:
    # transformers serve answers only to the model it is pinned to, named as given on its command line.
    return judge_params("judge.backend=openai", f"judge.model={tiny_model_dir}", "judge.samples=2", *overrides)


def invalid_counts(params: dict) -> dict[str, tuple[int, int]]:
    """(pairwise, G-Eval) invalid replies per name, parsed here from the cached replies."""
    rows = {p: judge.read_policy_rows(p, params["judge"]["max_rows"]) for p in stages.policies(params)}
    pairs, scores = judge.build_queries(params, rows)
    identity = {"backend": "openai", "model": params["judge"]["model"]}
    replies, counts = judge.answer(judge.all_queries(pairs, scores), identity, judge.ReplyCache(),
                                   lambda: pytest.fail("a reply is missing from the cache"))
    assert counts["requested"] == 0
    pw = {p: sum(judge.parse_verdict(replies[q]) is None for two in per for q in two) for p, per in pairs.items()}
    ge = {p: sum(judge.parse_score(replies[q]) is None for s in per for q in s) for p, per in scores.items()}
    return {p: (pw.get(p, 0), ge[p]) for p in scores}


def written_files(root: Path) -> dict[Path, str]:
    return {p: p.read_text(errors="replace") for p in root.rglob("*") if p.is_file()}


def test_openai_backend_against_transformers_serve(workspace, server, tiny_model_dir, monkeypatch, caplog):
    url, server_log = server
    monkeypatch.setenv("SUMRL_JUDGE_URL", url)
    monkeypatch.setenv("SUMRL_JUDGE_API_KEY", SECRET)
    params = openai_params(tiny_model_dir)
    check_environment(params)
    before = posts(server_log)
    caplog.set_level("INFO", logger="sumrl")

    judge.run(params, Namespace())
    out = read_json(stages.JUDGE)
    # 3 policies x 2 rows x 2 orders + 4 scored summary sets (3 policies, references) x 2 rows x 2 samples
    total = 3 * 2 * 2 + 4 * 2 * 2
    assert out["replies"] == {"total": total, "requested": total, "from_cache": 0}
    assert posts(server_log) - before == total, "every request reached the server"
    assert out["judge"] == {"backend": "openai", "model": str(tiny_model_dir)}
    assert len((workspace / judge.CACHE).read_text().splitlines()) == total
    for name, (pw_invalid, ge_invalid) in invalid_counts(params).items():
        entry = out["policies"][name]
        assert entry["geval"]["invalid_replies"] == ge_invalid and entry["geval"]["replies"] == 4
        assert entry["geval"]["scored"] + entry["geval"]["unscored"] == 2
        if name != "reference":
            assert entry["pairwise"]["invalid_replies"] == pw_invalid
            assert entry["pairwise"]["valid"] + entry["pairwise"]["invalid"] == 2
    assert sum(e["geval"]["invalid_replies"] for e in out["policies"].values()) > 0, "the random model parsed?"

    judge.run(params, Namespace())
    again = read_json(stages.JUDGE)
    assert again["replies"] == {"total": total, "requested": 0, "from_cache": total}
    assert posts(server_log) - before == total, "a rerun sent a request"
    assert again["policies"] == out["policies"]
    assert f"{total} from cache, 0 requested" in caplog.text

    leaks = [str(p) for p, text in written_files(workspace).items() if SECRET in text or url in text]
    assert not leaks, f"the key or the URL was written to {leaks}"
    assert SECRET not in caplog.text and url not in caplog.text
    assert SECRET not in server_log.read_text()


def test_endpoint_errors_name_the_variable_not_the_key(workspace, server, tiny_model_dir, monkeypatch):
    url, _ = server
    monkeypatch.setenv("SUMRL_JUDGE_API_KEY", SECRET)
    monkeypatch.setenv("SUMRL_JUDGE_URL", url)
    # The server refuses a model it does not serve: HTTP 400 (not retried), with its own explanation.
    with pytest.raises(judge.JudgeError, match=r"\$SUMRL_JUDGE_URL: HTTP 400") as refused:
        judge.run(openai_params(tiny_model_dir, "judge.model=no-such-model"))
    monkeypatch.setenv("SUMRL_JUDGE_URL", f"http://{SECRET}@127.0.0.1:{free_port()}/v1")
    with pytest.raises(judge.JudgeError, match=r"no answer in 1 attempt") as unreachable:
        judge.run(openai_params(tiny_model_dir, "judge.retries=0", "judge.max_new_tokens=5"))
    for err in (refused, unreachable):
        assert SECRET not in str(err.value) and url not in str(err.value)


class FlakyEndpoint(BaseHTTPRequestHandler):
    """Answers 503 to the first request, then a chat completion; records each request's Authorization header."""

    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        FlakyEndpoint.seen.append(self.headers.get("Authorization"))
        ok = len(FlakyEndpoint.seen) > 1
        body = json.dumps({"choices": [{"message": {"content": "B"}}]} if ok else {"error": "busy"}).encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("key", [SECRET, None])
def test_retry_after_503_and_the_key_only_in_the_header(monkeypatch, key):
    """A stdlib server (not the model server: that one does not fail on demand) for the retry path."""
    monkeypatch.setattr(judge.backends, "BACKOFF_S", 0.01)
    FlakyEndpoint.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FlakyEndpoint)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        environ = {"SUMRL_JUDGE_URL": f"http://127.0.0.1:{httpd.server_port}/v1/",
                   **({"SUMRL_JUDGE_API_KEY": key} if key else {})}
        backend = judge.OpenAIBackend(Config.of(judge_params("judge.backend=openai", "judge.model=m",
                                                             "judge.retries=1")).judge,
                                      environ)
        assert backend.complete(judge.Query("Which is better?", 4)) == "B"
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert FlakyEndpoint.seen == [f"Bearer {key}" if key else None] * 2
