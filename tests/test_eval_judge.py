"""LLM grading: the parser reads the paper's format and rejects garbage; the client survives a bad server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nslm.eval import judge

PAPER_ANSWER = """The student's completion is mostly grammatical and it finishes the split sentence.
The story stays with the bunny, although the ending is a little abrupt.

Grammar: 8/10, Creativity: 7/10, Consistency: 9/10, Plot: 7/10
Age group: B (4-5)"""


@pytest.mark.parametrize("text, expected", [
    (PAPER_ANSWER, {"grammar": 8, "creativity": 7, "consistency": 9, "plot": 7, "age_group": "B"}),
    ("**Grammar** - 7\n**Creativity** - 6\n**Consistency** - 8\nAge group: C (6-7)",
     {"grammar": 7, "creativity": 6, "consistency": 8, "plot": None, "age_group": "C"}),
    ("grammar score (out of 10): 6.5\ncreativity = 5 out of 10\nconsistency: 4\nplot: 3/10\nThe age group is D.",
     {"grammar": 6.5, "creativity": 5, "consistency": 4, "plot": 3, "age_group": "D"}),
    ("Grammar: 10/10. Creativity: 0/10. Consistency: 10/10.", {"grammar": 10, "creativity": 0, "consistency": 10, "age_group": None}),
])
def test_parser_reads_free_text(text, expected):
    grades = judge.parse_grades(text)
    assert grades is not None
    for key, value in expected.items():
        assert grades.get(key) == value, key


@pytest.mark.parametrize("text", [
    "",
    "I cannot grade this story.",
    "Grammar: good. Creativity: excellent. Consistency: fine.",
    "Grammar: 8/10, Creativity: 7/10",  # consistency missing
    "Grammar: 85/10, Creativity: 7/10, Consistency: 9/10",  # out of range
    "Grammar: 8/10, Creativity: 7/10, Consistency: 9/10. On reflection, Grammar: 3/10.",  # contradicts itself
    "grammar mistakes: many; creativity 7/10; consistency 9/10",
    "\x00\x01 garbage 1234 ////",
])
def test_parser_rejects_garbage(text):
    assert judge.parse_grades(text) is None


def test_prompt_has_the_paper_layout():
    prompt = judge.build_prompt("Tom had a red ball. He threw it", " over the fence.")
    assert "Tom had a red ball. He threw it *** over the fence." in prompt
    assert "age group" in prompt.lower() and "Grammar: X/10" in prompt


class FakeGrader(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/chat/completions whose behaviour follows the story text."""

    calls: list[str] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        FakeGrader.calls.append(text)
        if "SERVER-ERROR" in text:
            return self._send(500, {"error": {"message": "boom", "type": "server_error"}})
        if "SLOW" in text:
            time.sleep(1.5)
        if "FLAKY" in text and sum("FLAKY" in c for c in FakeGrader.calls) == 1:
            return self._send(503, {"error": {"message": "busy"}})
        answer = "I like it a lot!" if "NONSENSE" in text else PAPER_ANSWER
        self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": answer}}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    def _send(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeGrader)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_grading_against_a_local_server(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "secret")
    grader = judge.judge_from_args(server, "fake-gpt", key_env="MY_KEY", timeout=0.5, retries=2, backoff=0.01)
    records = [
        {"prompt": "Lily had a kite.", "completion": " She flew it high."},
        {"prompt": "Tom was NONSENSE.", "completion": " He ran."},
        {"prompt": "Sam was SLOW.", "completion": " He walked."},
        {"prompt": "Sue saw a SERVER-ERROR.", "completion": " Oh no."},
        {"prompt": "Ben was FLAKY.", "completion": " Then fine."},
    ]
    FakeGrader.calls.clear()
    started = time.time()
    result = grader and judge.grade_stories(grader, records)
    assert time.time() - started < 15
    good, nonsense, slow, error, flaky = result["items"]
    assert good["grammar"] == 8 and good["age_group"] == "B" and good["attempts"] == 1
    assert nonsense["missing"] and nonsense["reasons"] == ["unparseable answer"] * 3
    assert slow["missing"] and slow["reasons"] == ["timeout"] * 3
    assert error["missing"] and error["reasons"] == ["HTTP 500"] * 3
    assert flaky["grammar"] == 8 and flaky["attempts"] == 2
    assert "grammar" not in nonsense and "grammar" not in slow  # nothing made up
    assert result["graded"] == 2 and result["missing"] == 3
    assert result["means"] == {"grammar": 8, "creativity": 7, "consistency": 9, "plot": 7}


def test_unreachable_grader_is_recorded_missing():
    grader = judge.Judge(url="http://127.0.0.1:9/v1", model="m", timeout=0.5, retries=1, backoff=0.01)
    out = grader.grade("A", " b")
    assert out["missing"] and len(out["reasons"]) == 2
