"""Thirty students open one example at once, speaking the app's protocol the way their browsers do.

A browser that opens the app fetches its config and runs the page-load events (the model lists); a
click on an example thumbnail sends that gallery's ``select`` event (no upload: the picture is already on
the server), which shows the picture and explains it in one event.
This script sends exactly those events over HTTP (``/gradio_api/queue/join``, then the session's
server-sent events stream), from its own process, so the clients' CPU is not charged to the server's
Python interpreter (a class's browsers run on the students' machines, not on the server).

Each student, per round: the Walkthrough example click (timed), the Explore tab opened (the tab's
model-list refresh, not timed: it is load the server carries; an event without the queue, one POST), the
Explore example click (timed). Round 0 is every student opening the page at once (the config and the
page-load events, timed); every round starts on one barrier. Nothing is asserted here except that every
answer carries a prediction.

    python bench/classroom.py --url http://127.0.0.1:7860 --clients 30 --rounds 3
    (bench/app.py --only burst starts the app and runs this script against it)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

TIMEOUT_S = 120.0


@dataclass
class Round:
    """One round: every student's walkthrough and Explore latencies (seconds), and the failures."""

    round: int
    clients: int
    walkthrough_s: list[float] = field(default_factory=list)
    explore_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0  # from the start signal to the last answer


class AppProtocol:
    """The app's events as the browser finds them in ``/config``: by the component and event that trigger them."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        config = httpx.get(f"{self.url}/config", timeout=TIMEOUT_S).json()
        self.components = {c["id"]: c for c in config["components"]}
        self.dependencies = config["dependencies"]

    def prop(self, component: int, name: str) -> Any:
        return self.components[component].get("props", {}).get(name)

    def triggered_by(self, event: str, **props: str) -> dict:
        for dependency in self.dependencies:
            for target, name in dependency["targets"]:
                component = self.components.get(target, {"props": {}})
                if name == event and all(component["props"].get(k) == v for k, v in props.items()):
                    return dependency
        raise LookupError(f"no {event} event on a component with {props}")

    def load_events(self) -> list[dict]:
        """The page-load events the browser sends to the server (one that only runs JavaScript, such as reading a
        link's address, never reaches it)."""
        return [
            d
            for d in self.dependencies
            if any(name == "load" for _, name in d["targets"]) and d.get("backend_fn", True)
        ]

    def example_index(self, gallery_elem_id: str, file_name: str) -> int:
        gallery = self.triggered_by("select", elem_id=gallery_elem_id)["targets"][0][0]
        names = [item["image"]["orig_name"] for item in self.prop(gallery, "value")]
        return names.index(file_name)

    def defaults(self, dependency: dict, **overrides: Any) -> list:
        return [overrides.get(str(i), self.prop(i, "value")) for i in dependency["inputs"]]


class Student:
    """One browser session: its own session hash and HTTP connection."""

    def __init__(self, app: AppProtocol) -> None:
        self.app = app
        self.session = uuid.uuid4().hex[:11]
        self.http = httpx.Client(timeout=TIMEOUT_S)

    def send(self, dependency: dict, data: list, event_data: Any = None, trigger: int | None = None) -> list:
        """One event, joined to the queue and followed on the session's stream until it completes; an event
        without the queue (``queue: false`` in the config) is one POST, as the browser sends it."""
        payload = {
            "data": data,
            "event_data": event_data,
            "fn_index": dependency["id"],
            "trigger_id": trigger,
            "session_hash": self.session,
        }
        if dependency.get("queue") is False:
            answer = self.http.post(f"{self.app.url}/gradio_api/run/predict", json=payload)
            answer.raise_for_status()
            return answer.json()["data"]
        joined = self.http.post(f"{self.app.url}/gradio_api/queue/join", json=payload)
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        params = {"session_hash": self.session}
        with self.http.stream("GET", f"{self.app.url}/gradio_api/queue/data", params=params) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                    if not message.get("success"):
                        raise RuntimeError(str(message.get("output"))[:200])
                    return message["output"]["data"]
        raise RuntimeError(f"the stream ended before event {event_id} completed")

    def open_page(self) -> None:
        """What the browser asks for when the page opens: the config, then the page-load events."""
        self.http.get(f"{self.app.url}/config").raise_for_status()
        for dependency in self.app.load_events():
            self.send(dependency, self.app.defaults(dependency), trigger=dependency["targets"][0][0])

    def click_example(self, gallery_elem_id: str, index: int, data: list | None = None) -> tuple[dict, list]:
        dependency = self.app.triggered_by("select", elem_id=gallery_elem_id)
        event = {"index": index, "value": None, "selected": True}
        data = self.app.defaults(dependency) if data is None else data
        return dependency, self.send(dependency, data, event, trigger=dependency["targets"][0][0])


def lesson_step(student: Student, walk_index: int, explore_index: int) -> tuple[float, float]:
    """The walkthrough of the example, then Explore of it; each answer must carry a prediction."""
    app = student.app
    started = time.perf_counter()
    _, walked = student.click_example("walkthrough-examples", walk_index)
    walked_at = time.perf_counter()
    tab = app.triggered_by("select", id="explore")
    student.send(tab, app.defaults(tab), {"id": "explore", "selected": True}, trigger=tab["targets"][0][0])
    opened_at = time.perf_counter()
    _, explained = student.click_example("explore-examples", explore_index)
    done = time.perf_counter()
    if "Prediction" not in json.dumps(walked) or "Prediction" not in json.dumps(explained):
        raise RuntimeError("an answer without a prediction")
    return walked_at - started, done - opened_at


def together(students: list[Student], act: Callable[[Student], Any]) -> tuple[list[Any], list[str], float]:
    """``act`` for every student at once (one barrier): the answers, the errors, and the wall time."""
    answers: list[Any] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(students) + 1)

    def attend(student: Student) -> None:
        try:
            barrier.wait(timeout=TIMEOUT_S)
            answer = act(student)
        except Exception as error:  # noqa: BLE001 - counted and reported
            with lock:
                errors.append(f"{type(error).__name__}: {error}"[:200])
            return
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=attend, args=(s,), daemon=True) for s in students]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=TIMEOUT_S)
    started = time.perf_counter()
    for thread in threads:
        thread.join(timeout=TIMEOUT_S)
    return answers, errors, time.perf_counter() - started


def run_round(number: int, students: list[Student], indices: tuple[int, int]) -> Round:
    answers, errors, wall_s = together(students, lambda student: lesson_step(student, *indices))
    return Round(number, len(students), [a[0] for a in answers], [a[1] for a in answers], errors, wall_s)


def open_pages(students: list[Student]) -> Round:
    """Round 0: every student opens the page at once (its time is in ``walkthrough_s``; no Explore)."""

    def open_page(student: Student) -> float:
        started = time.perf_counter()
        student.open_page()
        return time.perf_counter() - started

    answers, errors, wall_s = together(students, open_page)
    return Round(0, len(students), answers, [], errors, wall_s)


def classroom(url: str, clients: int, rounds: int, image: str) -> list[Round]:
    app = AppProtocol(url)
    indices = (app.example_index("walkthrough-examples", image), app.example_index("explore-examples", image))
    students = [Student(app) for _ in range(clients)]
    try:  # the page is open before the teacher says "open this one"
        return [open_pages(students)] + [run_round(n, students, indices) for n in range(1, rounds + 1)]
    finally:
        for student in students:
            student.http.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--image", default="toybird-velmun-finch.png", help="an example's file name")
    args = p.parse_args(argv)
    json.dump([asdict(r) for r in classroom(args.url, args.clients, args.rounds, args.image)], sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
