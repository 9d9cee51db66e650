"""Tests for microclip.describe against a real local HTTP server speaking the chat-completions protocol.

The server answers each request with a numbered list built from the class named in the request, so a
test can tell which class got which sentences; it records every request, and can be told to fail.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from microclip import describe
from microclip.describe import (
    GENERIC_QUESTIONS,
    MAX_SENTENCE_CHARS,
    DescribeError,
    build_parser,
    describe_classes,
    main,
    parse_numbered_sentences,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

KEY_ENV = "MICROCLIP_TEST_DESCRIBE_KEY"
CLASS_IN_PROMPT = re.compile(r"Include '(.+)' in each sentence\.$")

# A rule for the fake server: (class name, how many requests for that class came before) -> an
# (HTTP status, body) to send instead of a normal reply, or None to answer normally.
Rule = Callable[[str, int], "tuple[int, str] | None"]


def question_tag(user_text: str) -> str:
    """A short tag that differs between questions, so each reply has one question-specific sentence."""
    return hashlib.sha1(user_text.encode()).hexdigest()[:8]


def fake_reply(class_name: str, user_text: str) -> str:
    """A reply in the shape LLMs give: preamble, mixed markers, a missing period, an epilogue.

    Sentence 1 is the same for every question (the pooled result must keep it once); sentence 2 is
    question-specific.
    """
    return (
        "Sure! Here are 3 sentences:\n\n"
        f"1. A {class_name} is easy to spot.\n"
        f"2) The {class_name} shows mark {question_tag(user_text)}\n"
        f"3. **The {class_name}** has a distinctive outline.\n\n"
        "Let me know if you need more."
    )


class FakeChatServer:
    """A minimal OpenAI chat-completions server on 127.0.0.1 in a background thread."""

    def __init__(self) -> None:
        self.requests: list[dict] = []  # {"path", "headers", "body"} per request, in arrival order
        self.rule: Rule = lambda class_name, seen: None
        self.content_override: Callable[[str], str] | None = None  # class -> reply text
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def classes_requested(self) -> list[str]:
        return [self.class_of(r["body"]) for r in self.requests]

    @staticmethod
    def class_of(body: dict) -> str:
        match = CLASS_IN_PROMPT.search(body["messages"][-1]["content"])
        assert match, body
        return match.group(1)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
                    return
                class_name = server.class_of(body)
                with server._lock:
                    seen = sum(1 for r in server.requests if server.class_of(r["body"]) == class_name)
                    server.requests.append(
                        {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                    )
                override = server.rule(class_name, seen)
                if override is not None:
                    self._send(*override)
                    return
                user_text = body["messages"][-1]["content"]
                if server.content_override is not None:
                    content = server.content_override(class_name)
                else:
                    content = fake_reply(class_name, user_text)
                reply = {
                    "id": f"chatcmpl-{len(server.requests)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                    ],
                    "usage": {"prompt_tokens": 30, "completion_tokens": 40, "total_tokens": 70},
                }
                self._send(200, json.dumps(reply))

            def _send(self, status: int, text: str, content_type: str = "application/json") -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                # Retry quickly: the openai client honours this instead of its 0.5 s+ backoff.
                self.send_header("retry-after-ms", "5")
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeChatServer]:
    # A proxy set in the environment must not intercept requests to the local server.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(KEY_ENV, "test-key")
    fake = FakeChatServer()
    yield fake
    fake.close()


def run_cli(server: FakeChatServer, classes_file: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "--classname",
            str(classes_file),
            "--out",
            str(out),
            "--api_base",
            server.url,
            "--api_key_env",
            KEY_ENV,
            "--no_progress",
            *extra,
        ]
    )


def write_classes(path: Path, classes: list[str]) -> Path:
    path.write_text("\n".join(classes) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- output file


def test_cli_writes_cupl_json_with_each_class_own_sentences(server: FakeChatServer, tmp_path: Path) -> None:
    classes = ["Black-footed Albatross", "Forest", "Annual Crop Land"]
    out = tmp_path / "out" / "descriptions.json"  # the folder does not exist yet

    assert run_cli(server, write_classes(tmp_path / "classes.txt", classes), out) == 0

    data = json.loads(out.read_text(encoding="utf-8"))
    assert list(data) == classes  # label order kept
    for name in classes:
        sentences = data[name]
        # 1 shared sentence + 1 per question + 1 shared, duplicates across questions removed
        assert len(sentences) == 2 + len(GENERIC_QUESTIONS)
        assert all(isinstance(s, str) and s.endswith(".") and name in s for s in sentences)
        assert len(set(sentences)) == len(sentences)
        assert sentences[0] == f"A {name} is easy to spot."
    assert sorted(server.classes_requested()) == sorted(c for c in classes for _ in GENERIC_QUESTIONS)
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temp files left


def test_classes_from_json_list(server: FakeChatServer, tmp_path: Path) -> None:
    classes_file = tmp_path / "classes.json"
    classes_file.write_text(json.dumps(["Pug", "Egyptian Mau"]), encoding="utf-8")
    out = tmp_path / "d.json"

    assert run_cli(server, classes_file, out) == 0

    assert list(json.loads(out.read_text())) == ["Pug", "Egyptian Mau"]


# ---------------------------------------------------------------- request body


def test_request_follows_the_reference_recipe(server: FakeChatServer, tmp_path: Path) -> None:
    describe_classes(
        ["Eagle"],
        api_base=server.url,
        api_key="sk-abc",
        questions=["What does {article} {c} look like?"],
        n_sentences=7,
        progress=False,
    )

    (request,) = server.requests
    body = request["body"]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer sk-abc"
    assert body["model"] == "gpt-4o"
    assert body["temperature"] == pytest.approx(0.1)
    system, user = body["messages"]
    assert system["role"] == "system"
    assert "7 short" in system["content"] and "numbered sentences" in system["content"]
    assert "visually identifiable" in system["content"]
    assert user == {"role": "user", "content": "What does an Eagle look like? Include 'Eagle' in each sentence."}


def test_cli_passes_model_temperature_and_question_file(server: FakeChatServer, tmp_path: Path) -> None:
    questions = tmp_path / "q.txt"
    questions.write_text("# comment lines are skipped\nDescribe {article} {c} from above.\n\nShow {c}.\n")
    out = tmp_path / "d.json"

    code = run_cli(
        server,
        write_classes(tmp_path / "c.txt", ["Herbaceous_Land"]),
        out,
        "--model",
        "local-llm",
        "--temperature",
        "0.7",
        "--questions",
        str(questions),
    )

    assert code == 0
    users = [r["body"]["messages"][1]["content"] for r in server.requests]
    # underscores become spaces in the prompt, but the output key stays the exact class string
    assert users == [
        "Describe a Herbaceous Land from above. Include 'Herbaceous Land' in each sentence.",
        "Show Herbaceous Land. Include 'Herbaceous Land' in each sentence.",
    ]
    assert {r["body"]["model"] for r in server.requests} == {"local-llm"}
    assert {r["body"]["temperature"] for r in server.requests} == {0.7}
    assert list(json.loads(out.read_text())) == ["Herbaceous_Land"]


def test_dataset_flag_uses_the_reference_questions(server: FakeChatServer, tmp_path: Path) -> None:
    out = tmp_path / "d.json"

    assert run_cli(server, write_classes(tmp_path / "c.txt", ["Forest"]), out, "--dataset", "gtsrb") == 0

    users = [r["body"]["messages"][1]["content"] for r in server.requests]
    assert len(users) == len(describe.REFERENCE_QUESTIONS["gtsrb"])
    assert users[0] == "What does a \u201cForest\u201d traffic sign look like? Include 'Forest' in each sentence."


def test_question_without_class_placeholder_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DescribeError, match=r"no '\{c\}' placeholder"):
        describe_classes(
            ["Eagle"], api_base="http://127.0.0.1:9/v1", api_key=None, questions=["Describe it."], progress=False
        )


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("1. A red bird.\n2. A long tail.", ["A red bird.", "A long tail."]),
        ("1) A red bird\n2) A long tail", ["A red bird.", "A long tail."]),
        ("- A red bird.\n- A long tail", ["A red bird.", "A long tail."]),
        ("(1) A red bird.\n* A long tail!", ["A red bird.", "A long tail."]),
        ("1.**A red bird.**\n2. **Tail:** long", ["A red bird.", "Tail: long."]),
        ("Here are 10 sentences about birds:\n1. A red bird.\n\nHope this helps!", ["A red bird."]),
        (
            "1. A bird with a\n   1.5 m wingspan.\n2. A hooked bill.",
            ["A bird with a 1.5 m wingspan.", "A hooked bill."],
        ),
        ("1. A red bird.\n2.\n3.   \n4. a red bird.\n5. A red  bird", ["A red bird."]),
        ('1. "A quoted bird."\n2. A bird...', ["A quoted bird.", "A bird."]),
        ("A red bird.\nA long tail.", ["A red bird.", "A long tail."]),  # no markers at all
        ("", []),
    ],
)
def test_parse_numbered_sentences(reply: str, expected: list[str]) -> None:
    assert parse_numbered_sentences(reply) == expected


def test_overlong_sentences_are_dropped_with_a_warning(
    server: FakeChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.content_override = lambda c: f"1. A {c} is small.\n2. A {c} " + "very " * 80 + "long."

    result = describe_classes(["Wren"], api_base=server.url, api_key=None, questions=["{c}?"], progress=False)

    assert result == {"Wren": ["A Wren is small."]}
    assert any(
        "dropped 1 sentence" in r.getMessage() and str(MAX_SENTENCE_CHARS) in r.getMessage() for r in caplog.records
    )


def test_reply_without_sentences_is_an_error(server: FakeChatServer) -> None:
    server.content_override = lambda c: "   \n\n"

    with pytest.raises(DescribeError, match=r"'Wren'.*no usable sentences"):
        describe_classes(["Wren"], api_base=server.url, api_key=None, questions=["{c}?"], progress=False)


# ---------------------------------------------------------------- resume


def test_rerun_skips_classes_already_in_the_file(server: FakeChatServer, tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    assert run_cli(server, write_classes(tmp_path / "c.txt", ["Pug", "Boxer"]), out) == 0
    first = json.loads(out.read_text())
    server.requests.clear()

    assert run_cli(server, write_classes(tmp_path / "c.txt", ["Pug", "Boxer", "Beagle"]), out) == 0

    assert set(server.classes_requested()) == {"Beagle"}
    data = json.loads(out.read_text())
    assert list(data) == ["Pug", "Boxer", "Beagle"]
    assert data["Pug"] == first["Pug"]


def test_overwrite_describes_every_class_again(server: FakeChatServer, tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    out.write_text(json.dumps({"Pug": ["An old sentence."]}))

    assert run_cli(server, write_classes(tmp_path / "c.txt", ["Pug"]), out, "--overwrite") == 0

    assert set(server.classes_requested()) == {"Pug"}
    assert "An old sentence." not in json.loads(out.read_text())["Pug"]


def test_resume_keeps_other_entries_and_returns_saved_ones(server: FakeChatServer, tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    out.write_text(json.dumps({"Other": ["Kept."], "Pug": ["Saved pug."]}))

    result = describe_classes(["Pug", "Boxer"], api_base=server.url, api_key=None, out_path=out, progress=False)

    assert set(server.classes_requested()) == {"Boxer"}
    assert result["Pug"] == ["Saved pug."] and list(result) == ["Pug", "Boxer"]
    assert list(json.loads(out.read_text())) == ["Pug", "Boxer", "Other"]


def test_malformed_existing_file_is_a_clear_error(server: FakeChatServer, tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    out.write_text('["not", "a", "dict"]')

    with pytest.raises(DescribeError, match="--overwrite"):
        describe_classes(["Pug"], api_base=server.url, api_key=None, out_path=out, progress=False)
    assert server.requests == []


def test_killed_run_keeps_finished_classes_and_resumes(server: FakeChatServer, tmp_path: Path) -> None:
    # The server holds the request for "Boxer" until released, so the run is killed mid-class.
    release = threading.Event()
    server.rule = lambda c, seen: (release.wait(10), None)[1] if c == "Boxer" else None
    classes_file = write_classes(tmp_path / "c.txt", ["Pug", "Boxer", "Beagle"])
    out = tmp_path / "d.json"
    argv = [
        "--classname",
        str(classes_file),
        "--out",
        str(out),
        "--api_base",
        server.url,
        "--api_key_env",
        KEY_ENV,
        "--no_progress",
        "--dataset",
        "pets",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "microclip.describe", *argv],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while "Boxer" not in server.classes_requested():
            assert proc.poll() is None and time.monotonic() < deadline, "the run never reached 'Boxer'"
            time.sleep(0.02)
        proc.kill()
        proc.wait(10)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()

    assert list(json.loads(out.read_text())) == ["Pug"]
    server.rule = lambda c, seen: None
    server.requests.clear()

    assert main(argv) == 0

    assert set(server.classes_requested()) == {"Boxer", "Beagle"}
    assert list(json.loads(out.read_text())) == ["Pug", "Boxer", "Beagle"]


# ---------------------------------------------------------------- failures


def test_always_failing_class_gives_clear_error_and_keeps_earlier_classes(
    server: FakeChatServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.rule = lambda c, seen: (503, '{"error": {"message": "model is down"}}') if c == "Boxer" else None
    out = tmp_path / "d.json"

    code = run_cli(server, write_classes(tmp_path / "c.txt", ["Pug", "Boxer", "Beagle"]), out, "--max_retries", "2")

    assert code == 1
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1
    assert "'Boxer'" in err_lines[0] and server.url in err_lines[0] and "503" in err_lines[0]
    assert "1 of 3 classes are saved" in err_lines[0]
    assert server.classes_requested().count("Boxer") == 3  # the first try and 2 retries
    assert "Beagle" not in server.classes_requested()
    assert list(json.loads(out.read_text())) == ["Pug"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_rejected_key_is_not_retried_and_says_so(server: FakeChatServer) -> None:
    server.rule = lambda c, seen: (401, '{"error": {"message": "Incorrect API key"}}')

    with pytest.raises(DescribeError, match=r"'Pug' via http://127\.0\.0\.1.*rejected the API key"):
        describe_classes(["Pug"], api_base=server.url, api_key="bad", progress=False)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "body",
    ["this is not json", '{"id": "x", "object": "chat.completion", "choices": []}'],
    ids=["not-json", "no-choices"],
)
def test_bad_reply_body_is_a_clear_error(server: FakeChatServer, body: str) -> None:
    server.rule = lambda c, seen: (200, body)

    with pytest.raises(DescribeError, match=r"describing class 'Pug' via http://127\.0\.0\.1"):
        describe_classes(["Pug"], api_base=server.url, api_key=None, progress=False)


def test_unreachable_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    # Port 9 (discard) on loopback: nothing listens there in a test environment.
    with pytest.raises(DescribeError, match=r"'Pug' via http://127\.0\.0\.1:9/v1: could not connect"):
        describe_classes(
            ["Pug"],
            api_base="http://127.0.0.1:9/v1",
            api_key=None,
            progress=False,
            max_retries=0,
            out_path=tmp_path / "d.json",
        )
    assert not (tmp_path / "d.json").exists()


# ---------------------------------------------------------------- API key


def test_missing_key_env_var_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)

    code = main(
        [
            "--classname",
            str(write_classes(tmp_path / "c.txt", ["Pug"])),
            "--out",
            str(tmp_path / "d.json"),
            "--api_base",
            "https://api.example.invalid/v1",
            "--api_key_env",
            KEY_ENV,
            "--no_progress",
        ]
    )

    assert code == 2
    err = capsys.readouterr().err
    assert KEY_ENV in err and "--api_key_env ''" in err
    assert not (tmp_path / "d.json").exists()


def test_empty_key_env_sends_a_placeholder_key(server: FakeChatServer, tmp_path: Path) -> None:
    out = tmp_path / "d.json"

    code = main(
        [
            "--classname",
            str(write_classes(tmp_path / "c.txt", ["Pug"])),
            "--out",
            str(out),
            "--api_base",
            server.url,
            "--api_key_env",
            "",
            "--no_progress",
        ]
    )

    assert code == 0
    assert {r["headers"]["authorization"] for r in server.requests} == {f"Bearer {describe.NO_KEY_PLACEHOLDER}"}


def test_unset_key_is_allowed_for_a_loopback_endpoint(
    server: FakeChatServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(KEY_ENV)

    assert run_cli(server, write_classes(tmp_path / "c.txt", ["Pug"]), tmp_path / "d.json") == 0
    assert server.requests


def test_key_is_read_from_the_named_env_var(server: FakeChatServer, tmp_path: Path) -> None:
    assert run_cli(server, write_classes(tmp_path / "c.txt", ["Pug"]), tmp_path / "d.json") == 0

    assert {r["headers"]["authorization"] for r in server.requests} == {"Bearer test-key"}


def test_parser_defaults_match_the_reference_recipe() -> None:
    args = build_parser().parse_args(["--classname", "c.txt", "--out", "d.json"])

    assert (args.model, args.temperature, args.n_sentences) == ("gpt-4o", 0.1, 10)
    assert args.api_base == "https://api.openai.com/v1" and args.api_key_env == "OPENAI_API_KEY"
    assert args.questions is None and args.overwrite is False
