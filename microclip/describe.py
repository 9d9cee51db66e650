"""Write class descriptions with an LLM, in the CuPL format ``{class name: [sentence, ...]}``.

The descriptions feed the two LLM-derived heads (docs/method.md §4). This module
follows the reference's GPT-4o recipe (docs/method.md §9; ``gpt_4o_descriptions/batch_jobs`` of
the reference): model ``gpt-4o`` at temperature 0.1, a system message asking for N short numbered
sentences that are visually identifiable descriptions, and per class one user message per question
template, each ending in ``Include '<class>' in each sentence.``. The numbered reply is parsed into
sentences ending in ".".

Two deliberate differences from the reference:

* it talks to any OpenAI-compatible chat-completions endpoint synchronously, one class at a time,
  instead of submitting an OpenAI Batch job, so a local server (vLLM, llama.cpp, Ollama) works too;
* the output file is rewritten atomically after every class, so a killed run loses nothing and a
  re-run resumes where it stopped.

Typical use, once the lead has wired the subcommand::

    python -m microclip describe --classname classes.txt --out descriptions.json --dataset eurosat
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from microclip.cliargs import add_classname, new_parser, same_named
from microclip.files import atomic_write_json, parse_json

if TYPE_CHECKING:  # openai is imported lazily so `import microclip` works without it
    import openai

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o"
DEFAULT_TEMPERATURE = 0.1
DEFAULT_N_SENTENCES = 10
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_RETRIES = 4

# Sentences longer than this are dropped: CLIP's text encoder sees at most 77 BPE tokens, and the
# reference raises on longer ones (docs/method.md §4.3). Exact token checks are left to the heads; this
# only catches replies that ran on (a paragraph instead of a sentence).
MAX_SENTENCE_CHARS = 300

# Sent as the key when the endpoint needs none: the openai client refuses to start without a key.
NO_KEY_PLACEHOLDER = "no-key"

# The reference's system message (batch_jobs/*.jsonl), with the sentence count as a parameter.
SYSTEM_PROMPT = (
    "You are a helpful assistant. Give {n} short (<25 words) numbered sentences answering prompt "
    "as visually identifiable descriptions."
)
# Appended to every question, as in the reference, so each sentence names the class.
INCLUDE_CLASS_SUFFIX = " Include '{c}' in each sentence."

# Used when neither questions nor a known dataset is given.
GENERIC_QUESTIONS: tuple[str, ...] = (
    "What does {article} {c} look like?",
    "Describe the appearance of {article} {c}.",
    "What are the identifying visual characteristics of {article} {c}?",
)

# The reference's per-dataset question templates (gpt_4o_descriptions/batch_generate.ipynb), with
# its positional "{} {}" written as "{article} {c}". Kept verbatim, odd grammar included ("the
# {article}" yields "the an ..."), because that is what produced the reference's GPT-4o files.
REFERENCE_QUESTIONS: dict[str, tuple[str, ...]] = {
    "cars": (
        "How can you identify {article} {c}?",
        "Description of {article} {c}, a type of car.",
        "A caption of a photo of {article} {c}:",
        "What are the primary characteristics of {article} {c}?",
        "Description of the exterior of {article} {c}.",
        "What are the identifying characteristics of {article} {c}, a type of car?",
        "Describe an image from the internet of {article} {c}.",
        "What does {article} {c} look like?",
        "Describe what {article} \u201c{c}\u201d, a type of car, looks like.",
        "List the visual cues that help in identifying {article} \u201c{c}\u201d.",
    ),
    "pets": ("Describe what a pet {c} looks like.", "Visually describe {article} '{c}', a type of pet."),
    "dtd": (
        "What does a \u201c{c}\u201d material look like?",
        "What does a \u201c{c}\u201d surface look like?",
        "What does a \u201c{c}\u201d texture look like?",
        "What does a \u201c{c}\u201d object look like?",
        "What does a \u201c{c}\u201d thing look like?",
        "What does a \u201c{c}\u201d pattern look like?",
    ),
    "resisc45": (
        "Describe a satellite photo of {article} {c}.",
        "Describe {article} {c} as it would appear in an aerial image.",
        "How can you identify {article} {c} in an aerial photo?",
        "Describe the satellite photo of {article} {c}.",
        "Describe an aerial photo of {article} {c}.",
    ),
    "flowers": (
        "Describe how to identify {article} {c}, a type of flower.",
        "What does {article} {c} flower look like?",
    ),
    "fgvc": (
        "What does {article} {c} look like?",
        "Describe the exterior of {article} {c} aircraft.",
        "Visually distinguishing features of {article} {c} airplane?",
        "What are the primary characteristics of {article} {c}?",
    ),
    "ucf101": (
        "Describe the action of {c} in a photo.",
        "What does the act of {c} look like in an image?",
        "Describe key visual features of \u201c{c}\u201d.",
        "Describe the action \u201c{c}\u201d.",
    ),
    "eurosat": (
        "Describe a satellite photo of {article} \u201c{c}\u201d.",
        "Describe {article} \u201c{c}\u201d as it would appear in an aerial image.",
        "How can you identify {article} \u201c{c}\u201d in an aerial photo?",
        "Describe the satellite photo of {article} \u201c{c}\u201d.",
        "Describe an aerial photo of {article} \u201c{c}\u201d.",
        "List how one can recognize the {article} \u201c{c}\u201d within an aerial image.",
        "List the distinguishing features of the {article} \u201c{c}\u201d in a satellite photo.",
        "List the visual cues that help in identifying the {article} \u201c{c}\u201d in an aerial image.",
        (
            "List the visual characteristics that make the {article} \u201c{c}\u201d easily identifiable "
            "in a satellite image."
        ),
        "List how one can identify the {article} \u201c{c}\u201d based on visual cues in an aerial photo.",
    ),
    "gtsrb": (
        "What does a \u201c{c}\u201d traffic sign look like?",
        "Describe where the {c} sign visually appears on roads.",
        "Visually describe a road sign that indicates \u201c{c}\u201d.",
        "What are unique visual features of a \u201c{c}\u201d traffic sign commonly found in Germany?",
    ),
}

# A list item starts with "1." / "1)" / "(1)" / "1:" / "1 -" or a bullet ("-", "*", "•", "+").
# "(?!\d)" keeps "1.5 m wingspan" at the start of a wrapped line from reading as item 1.
_ITEM_START = re.compile(r"^\s*(?:\(?\d{1,3}\s*[.)\]:](?!\d)|\d{1,3}\s+-|[-*\u2022+])\s*")
_BOLD = re.compile(r"\*\*|__")
_WHITESPACE = re.compile(r"\s+")
# Trailing punctuation replaced by a single ".", so every sentence ends the same way.
_TRAILING = re.compile(r"[\s.!?;:,]+$")


class DescribeError(RuntimeError):
    """A description run stopped; the message names the class, the endpoint and what was saved."""


@dataclass
class _Usage:
    """Token counts the endpoint reported, summed over the run (for the progress bar and the log)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    dropped_long: int = 0
    long_examples: list[str] = field(default_factory=list)


def parse_numbered_sentences(text: str) -> list[str]:
    """Split an LLM's numbered (or bulleted) list reply into clean sentences ending in ".".

    Robust to ``1.``, ``1)``, ``(1)``, ``- `` and ``* `` markers, markdown bold, items wrapped over
    several lines, a missing final period, a preamble ("Here are 10 sentences:") and an epilogue
    after a blank line. Empty items and duplicates (ignoring case and spacing) are dropped, first
    occurrence kept. If the reply has no list markers at all, each non-empty line is one sentence,
    so a model that ignores the numbering still yields something usable.
    """
    lines = [_BOLD.sub("", line) for line in text.splitlines()]
    items: list[str] = []
    current: list[str] | None = None  # the item being built; None outside the list
    has_markers = any(_ITEM_START.match(line) and _ITEM_START.sub("", line, count=1).strip() for line in lines)
    if not has_markers:
        items = [line for line in lines if line.strip()]
    else:
        for line in lines:
            if not line.strip():
                # A blank line ends the item, so an epilogue paragraph is not glued onto the last one.
                if current is not None:
                    items.append(" ".join(current))
                current = None
                continue
            if _ITEM_START.match(line):
                if current is not None:
                    items.append(" ".join(current))
                current = [_ITEM_START.sub("", line, count=1)]
            elif current is not None:
                current.append(line.strip())  # a wrapped continuation of the current item
            # else: preamble or epilogue text outside the list; dropped
        if current is not None:
            items.append(" ".join(current))

    sentences: list[str] = []
    seen: set[str] = set()
    for item in items:
        body = _TRAILING.sub("", _WHITESPACE.sub(" ", item).strip())
        body = body.strip(" \"'\u201c\u201d")  # some models quote each item
        body = _TRAILING.sub("", body)
        if not body:
            continue
        sentence = body + "."
        key = sentence.casefold()
        if key in seen:
            continue
        seen.add(key)
        sentences.append(sentence)
    return sentences


def article_for(name: str) -> str:
    """'an' before a vowel letter, else 'a' (the reference's rule; "an hour" is not handled)."""
    return "an" if name[:1].lower() in "aeiou" else "a"


def build_messages(class_name: str, question: str, n_sentences: int) -> list[dict[str, str]]:
    """The chat messages for one class and one question template (``{c}``, optional ``{article}``).

    Underscores in the class name become spaces in the prompt only (folder-style names such as
    ``Annual_Crop``); the output key stays the exact class string, since the heads look it up.
    """
    name = class_name.replace("_", " ").strip()
    # str.replace, not str.format: class names and templates may contain other braces.
    filled = question.replace("{article}", article_for(name)).replace("{c}", name)
    return [
        {"role": "system", "content": SYSTEM_PROMPT.format(n=n_sentences)},
        {"role": "user", "content": filled + INCLUDE_CLASS_SUFFIX.replace("{c}", name)},
    ]


def check_questions(questions: Sequence[str]) -> list[str]:
    """Validate question templates: at least one, each naming the class with ``{c}``."""
    checked = [q.strip() for q in questions if q.strip()]
    if not checked:
        raise DescribeError(
            "no question templates given; each template is a line such as 'What does {article} {c} look like?'"
        )
    missing = [q for q in checked if "{c}" not in q]
    if missing:
        raise DescribeError(
            f"question template {missing[0]!r} has no '{{c}}' placeholder for the class "
            f"name ({len(missing)} of {len(checked)} templates lack it)"
        )
    return checked


def is_local_endpoint(api_base: str) -> bool:
    """True for loopback hosts, where servers such as vLLM or Ollama usually need no key."""
    host = urlparse(api_base).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_descriptions_file(path: Path) -> dict[str, list[str]]:
    """Read an existing CuPL file (to resume); an error says how to start over if it is malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DescribeError(f"cannot resume from {path}: {exc}; fix or delete it, or pass --overwrite") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(s, str) for s in v) for k, v in data.items()
    ):
        raise DescribeError(
            f"cannot resume from {path}: it is not a {{class name: [sentence, ...]}} JSON "
            "object; pass --overwrite to replace it"
        )
    return data


def _make_client(api_base: str, api_key: str | None, timeout_s: float, max_retries: int) -> openai.OpenAI:
    """An OpenAI client for ``api_base``; its own retry loop backs off on connection errors, 429, 5xx."""
    try:
        import openai
    except ImportError as exc:  # keep the rest of microclip importable without it
        raise DescribeError("the 'openai' package is needed to write descriptions: pip install openai") from exc
    return openai.OpenAI(
        base_url=api_base, api_key=api_key or NO_KEY_PLACEHOLDER, timeout=timeout_s, max_retries=max_retries
    )


def _ask(
    client: openai.OpenAI, *, model: str, messages: list[dict[str, str]], temperature: float, usage: _Usage
) -> str:
    """One chat completion; returns the reply text. Raises DescribeError with the reason only."""
    import openai

    try:
        response = client.chat.completions.create(model=model, messages=messages, temperature=temperature)
    except openai.AuthenticationError as exc:
        raise DescribeError(
            f"the endpoint rejected the API key (HTTP {exc.status_code}); check the key "
            "in the environment variable named by --api_key_env"
        ) from exc
    except openai.APIStatusError as exc:
        raise DescribeError(f"HTTP {exc.status_code}: {_short(exc.message)}") from exc
    except openai.APITimeoutError as exc:
        raise DescribeError("the request timed out after retries") from exc
    except openai.APIConnectionError as exc:
        raise DescribeError(f"could not connect after retries ({_short(str(exc.__cause__ or exc))})") from exc
    except (openai.OpenAIError, ValueError) as exc:  # ValueError: a body that is not JSON
        raise DescribeError(f"bad reply: {_short(str(exc))}") from exc
    usage.requests += 1
    # The client does not validate the body, so a server that answers 200 with some other JSON
    # shape only shows up when the fields are read.
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError, KeyError) as exc:
        raise DescribeError(
            f"the reply is not a chat completion (no choices[0].message.content): {_short(repr(response))}"
        ) from exc
    if not isinstance(content, str):
        raise DescribeError(f"the reply has no text content (got {type(content).__name__})")
    reported = getattr(response, "usage", None)
    usage.prompt_tokens += int(getattr(reported, "prompt_tokens", 0) or 0)
    usage.completion_tokens += int(getattr(reported, "completion_tokens", 0) or 0)
    return content


def _short(text: str, limit: int = 200) -> str:
    """One line, at most ``limit`` characters, for error messages that must stay one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe_classes(
    classes: list[str],
    *,
    api_base: str,
    model: str = DEFAULT_MODEL,
    api_key: str | None,
    questions: list[str] | None = None,
    n_sentences: int = DEFAULT_N_SENTENCES,
    temperature: float = DEFAULT_TEMPERATURE,
    out_path: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> dict[str, list[str]]:
    """Ask an OpenAI-compatible endpoint to describe each class; return ``{class: [sentence, ...]}``.

    Each class gets one request per question template (default :data:`GENERIC_QUESTIONS`); the
    sentences of all its replies are pooled, de-duplicated, and those over
    :data:`MAX_SENTENCE_CHARS` characters dropped with a warning.

    With ``out_path``, the file is rewritten atomically after every class, and classes already in
    it are skipped, so re-running after a crash or Ctrl-C resumes. ``overwrite=True`` ignores the
    existing file and describes every class again. Entries in the file for classes not in
    ``classes`` are kept, after the requested ones.

    ``api_key=None`` sends a placeholder key, for local servers that need none. The client retries
    connection errors, 429 and 5xx up to ``max_retries`` times with exponential backoff (it honours
    the server's Retry-After). Any failure raises :class:`DescribeError` naming the class and the
    endpoint; everything described before it is already in ``out_path``.

    The return value holds every requested class, in ``classes`` order, including resumed ones.
    """
    from tqdm import tqdm

    if n_sentences < 1:
        raise DescribeError(f"n_sentences must be at least 1, got {n_sentences}")
    question_list = check_questions(list(GENERIC_QUESTIONS) if questions is None else questions)
    wanted = _unique_classes(classes)

    saved = _saved_descriptions(out_path, wanted, overwrite)
    todo = [c for c in wanted if not saved.get(c)]  # an empty list counts as not done
    usage = _Usage()
    client = _make_client(api_base, api_key, timeout_s, max_retries) if todo else None
    bar = tqdm(todo, desc="describe", unit="class", disable=not progress)
    for class_name in bar:
        try:
            saved[class_name] = _describe_one(
                client,
                class_name,
                question_list,
                model=model,
                n_sentences=n_sentences,
                temperature=temperature,
                usage=usage,
            )
        except DescribeError as exc:
            bar.close()
            done = sum(1 for c in wanted if saved.get(c))
            where = f"{done} of {len(wanted)} classes are saved in {out_path}" if out_path else "nothing saved"
            raise DescribeError(
                f"describing class {class_name!r} via {api_base}: {exc} ({where}; re-run the same command to resume)"
            ) from exc
        if out_path is not None:
            atomic_write_json(out_path, _ordered(saved, wanted))
        bar.set_postfix(tokens=usage.prompt_tokens + usage.completion_tokens)
    bar.close()
    _log_usage(usage, api_base, model)
    return {c: saved[c] for c in wanted}


def _saved_descriptions(out_path: Path | None, wanted: list[str], overwrite: bool) -> dict[str, list[str]]:
    """What an earlier run already wrote to ``out_path`` (nothing with ``overwrite``), logged when it resumes."""
    if out_path is None or not out_path.exists() or overwrite:
        return {}
    saved = load_descriptions_file(out_path)
    done = sum(1 for c in wanted if saved.get(c))  # an empty list counts as not done
    if done:
        log.info(
            "resuming %s: %d of %d classes already described, %d to go", out_path, done, len(wanted), len(wanted) - done
        )
    return saved


def _log_usage(usage: _Usage, api_base: str, model: str) -> None:
    """The run's sentences dropped as too long, and the tokens the endpoint reported."""
    if usage.dropped_long:
        log.warning(
            "dropped %d sentence(s) longer than %d characters (CLIP reads at most 77 tokens); e.g. %r",
            usage.dropped_long,
            MAX_SENTENCE_CHARS,
            usage.long_examples[0],
        )
    if usage.requests:
        log.info(
            "%d requests to %s (%s): %d prompt + %d completion tokens",
            usage.requests,
            api_base,
            model,
            usage.prompt_tokens,
            usage.completion_tokens,
        )


def _describe_one(
    client: openai.OpenAI,
    class_name: str,
    questions: list[str],
    *,
    model: str,
    n_sentences: int,
    temperature: float,
    usage: _Usage,
) -> list[str]:
    """All sentences for one class, pooled over the questions; at least one, or DescribeError."""
    pooled: list[str] = []
    seen: set[str] = set()
    for question in questions:
        reply = _ask(
            client,
            model=model,
            messages=build_messages(class_name, question, n_sentences),
            temperature=temperature,
            usage=usage,
        )
        for sentence in parse_numbered_sentences(reply):
            if len(sentence) > MAX_SENTENCE_CHARS:
                usage.dropped_long += 1
                usage.long_examples.append(sentence[:80] + "...")
                continue
            if sentence.casefold() not in seen:  # different questions often yield the same sentence
                seen.add(sentence.casefold())
                pooled.append(sentence)
    if not pooled:
        raise DescribeError(f"no usable sentences in {len(questions)} replies (last reply began {_short(reply, 80)!r})")
    return pooled


def _unique_classes(classes: Sequence[str]) -> list[str]:
    """Classes in order, stripped, without blanks or repeats (a repeat would collide as a JSON key)."""
    out: list[str] = []
    for name in classes:
        name = name.strip()
        if name and name not in out:
            out.append(name)
    if len(out) < len([c for c in classes if c.strip()]):
        log.warning("the class list repeats some names; each is described once")
    if not out:
        raise DescribeError("the class list is empty")
    return out


def _ordered(saved: dict[str, list[str]], wanted: list[str]) -> dict[str, list[str]]:
    """Requested classes first in label order (easy to read against classes.json), then any others."""
    ordered = {c: saved[c] for c in wanted if c in saved}
    ordered.update({c: v for c, v in saved.items() if c not in ordered})
    return ordered


def read_classes(path: Path, dataset: str | None = None) -> list[str]:
    """Class names from a .txt file (one per line), a .json list, or ``{dataset: [...]}`` and ``dataset``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DescribeError(f"cannot read the class list {path}: {exc.strerror}") from exc
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    data = parse_json(text, str(path), DescribeError)
    if isinstance(data, dict):
        if dataset is None or dataset not in data:
            keys = ", ".join(sorted(data)[:20])
            raise DescribeError(f"{path} maps dataset names to class lists; pass --dataset with one of: {keys}")
        data = data[dataset]
    if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
        raise DescribeError(f"{path} must hold a JSON list of class-name strings")
    return data


def read_questions(path: Path) -> list[str]:
    """Question templates, one per line; blank lines and lines starting with '#' are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DescribeError(f"cannot read the question templates {path}: {exc.strerror}") from exc
    return check_questions([line for line in lines if not line.lstrip().startswith("#")])


def resolve_api_key(api_key_env: str, api_base: str) -> str | None:
    """The API key from the environment variable ``api_key_env``; None means "send no real key".

    An empty ``api_key_env`` means no key. An unset variable is an error, except for a loopback
    endpoint, where local servers usually need none.
    """
    if not api_key_env:
        return None
    key = os.environ.get(api_key_env, "").strip()
    if key:
        return key
    if is_local_endpoint(api_base):
        log.info("%s is not set; sending no key to the local endpoint %s", api_key_env, api_base)
        return None
    raise DescribeError(
        f"the environment variable {api_key_env} is not set (needed for {api_base}); "
        f"export {api_key_env}=<your key>, name another variable with --api_key_env, or "
        "pass --api_key_env '' for an endpoint that needs no key"
    )


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``describe`` command line (on ``parser``, the sub-command's, when given)."""
    parser = new_parser(
        parser,
        prog="python -m microclip describe",
        description="Write CuPL-style class descriptions ({class: [sentence, ...]}) with an "
        "OpenAI-compatible chat model, following the reference's GPT-4o recipe. "
        "Re-running resumes: classes already in --out are skipped.",
    )
    add_classname(
        parser,
        "class names: a .txt file with one per line, a .json list, or a .json "
        "{dataset: [classes]} object together with --dataset (--classes: the old spelling)",
        type=Path,
        required=True,
    )
    parser.add_argument("--out", type=Path, required=True, help="output descriptions .json file")
    parser.add_argument(
        "--api_base",
        default=DEFAULT_API_BASE,
        help=f"OpenAI-compatible endpoint (default {DEFAULT_API_BASE}); e.g. "
        "http://127.0.0.1:8000/v1 for a local vLLM server",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"chat model name (default {DEFAULT_MODEL})")
    parser.add_argument(
        "--api_key_env",
        default=DEFAULT_API_KEY_ENV,
        help=f"environment variable holding the API key (default {DEFAULT_API_KEY_ENV}); "
        "'' for an endpoint that needs no key",
    )
    parser.add_argument(
        "--n_sentences",
        type=int,
        default=DEFAULT_N_SENTENCES,
        help=f"sentences asked for per question (default {DEFAULT_N_SENTENCES})",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=DEFAULT_TEMPERATURE,
        help=f"sampling temperature (default {DEFAULT_TEMPERATURE}, as the reference)",
    )
    parser.add_argument(
        "--questions",
        type=Path,
        default=None,
        help="question templates, one per line, with {c} for the class and optional "
        "{article} for 'a'/'an' (default: --dataset's reference set, else a generic set)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="use the reference's question templates for this dataset ("
        + ", ".join(REFERENCE_QUESTIONS)
        + "), and pick it from a {dataset: classes} "
        "--classname file",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="describe every class again instead of resuming from --out"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help=f"seconds per request (default {DEFAULT_TIMEOUT_S:g})"
    )
    parser.add_argument(
        "--max_retries",
        type=int,
        default=DEFAULT_MAX_RETRIES,
        help=f"retries on connection errors, 429 and 5xx (default {DEFAULT_MAX_RETRIES})",
    )
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``describe``; returns 0 on success, 1 if the run stopped, 2 on bad arguments, 130 on Ctrl-C."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """``describe`` with parsed arguments."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        classes = read_classes(args.classname, args.dataset)
        if args.questions is not None:
            questions = read_questions(args.questions)
        elif args.dataset is not None:
            if args.dataset not in REFERENCE_QUESTIONS:
                raise DescribeError(
                    f"no reference question templates for dataset {args.dataset!r} (known: "
                    f"{', '.join(REFERENCE_QUESTIONS)}); pass --questions FILE"
                )
            questions = list(REFERENCE_QUESTIONS[args.dataset])
        else:
            questions = list(GENERIC_QUESTIONS)
        api_key = resolve_api_key(args.api_key_env, args.api_base)
    except DescribeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    try:
        result = describe_classes(
            classes,
            api_key=api_key,
            questions=questions,
            out_path=args.out,
            progress=not args.no_progress,
            timeout_s=args.timeout,
            **same_named(args, "api_base", "model", "n_sentences", "temperature", "overwrite", "max_retries"),
        )
    except DescribeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; classes described so far are saved in {args.out}; re-run to resume", file=sys.stderr)
        return 130
    total = sum(len(v) for v in result.values())
    log.info("wrote %s: %d classes, %d sentences", args.out, len(result), total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
