"""App benchmarks against Gradio's own floor: what the app costs on top of Gradio, measured in one run.

The app is built with ``ui.app.build_demo`` and served on 127.0.0.1 only, next to a *floor* app: a
trivial Gradio app (an image upload in, a short text out: the image's size) with the same queue
settings (queue size, two requests at a time). Everything is driven with ``gradio_client`` exactly as a
script would. Measurements:

* ``latency``: interleaved rounds of the floor's round trip (``/floor``), ``/explore`` through
  ``gradio_client`` (upload, queue, forward pass, every view rendered, outputs downloaded), the bare
  ``microclip.explain.explain_image`` call, and the ``explore`` callback in-process (decode + forward +
  rendering, no HTTP), so the table shows where the time goes. Medians of ``--repeats``.
  Target: ``/explore`` <= 2x the floor's round trip.
* ``burst``: a class on one example: ``--burst-clients`` students start together and each opens the
  walkthrough then Explore of the same picture, as students do when the teacher says "open this one".
  ``--burst-rounds`` bursts in a row (the first finds nothing computed yet). Per request and per client
  (walkthrough + Explore): p50, p95, max. Target: p95 of a request <= 1 s on 2 cores. Two kinds of
  client (``--burst-client``): ``browser`` (default) sends the events a browser sends on an example click,
  from another process (``bench/classroom.py``); ``gradio_client`` is one gradio_client per student in this
  process, uploading the picture to ``/walkthrough`` and ``/explore`` as a script would (its clients' CPU
  and uploads are charged to the server's interpreter, so it measures more than the server).
* ``throughput``: requests per second completed by ``--clients`` concurrent gradio_client clients (one
  thread each) in a ``--duration`` window: the floor, ``/explore`` with nothing else running, and
  ``/explore`` while an adaptation (started through ``/adapt_start``, toy-world data) trains in the
  server. Targets: explore >= 0.4 of the floor's; with the adaptation >= 0.75 of explore alone.

The model is the bundled adapted toy-world checkpoint (``checkpoints/toybirds-microclip.safetensors``)
when present; otherwise a randomly initialised ToyCLIP-B-8 (the same architecture) is built on the fly
and shown zero-shot on the toy-world classes, and the script says so. Nothing is asserted; the script
prints markdown tables (and optionally JSON). Every loop is bounded by a count or a deadline.

    python bench/app.py                       # everything, ~2 min on 2 CPU cores
    python bench/app.py --only latency --repeats 30
    python bench/app.py --clients 8 --duration 20 --json bench/results/app.json
    python bench/app.py --profile             # cProfile of the in-process explore callback, top 25
    python bench/app.py --only burst --burst-clients 30 --burst-rounds 3   # thirty students on one example
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gradio as gr
import torch
from classroom import Round  # bench/classroom.py: this script's folder is on sys.path
from gradio_client import Client, handle_file
from PIL import Image

from microclip.data.images import load_image
from microclip.explain import explain_image
from microclip.machine import cpu_name
from microclip.resources import PROJECT_ROOT as ROOT
from studio.jobs import AdaptationRunner
from studio.registry import TOY_ADAPTED, TOY_ASSETS, ModelRegistry
from ui.app import QUEUE_SIZE, build_demo, launch_kwargs
from ui.common import INFERENCE_CONCURRENCY, INFERENCE_ID
from ui.explore import explore as explore_callback

log = logging.getLogger("bench.app")

TARGETS = {"latency": 2.0, "throughput": 0.4, "with_adaptation": 0.75, "burst_p95_s": 1.0}
DEFAULT_IMAGE = ROOT / "assets" / "examples" / "toybird-velmun-finch.png"
RATIO = 0.5
DISPLAY = (0.5, "jet", 0, 100, 0, "SOAP weight", False)  # opacity, cmap, clip lo/hi, threshold, raw map, numbers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default=str(TOY_ADAPTED), help="adapted .safetensors checkpoint (default: bundled toy)")
    p.add_argument("--image", default=str(DEFAULT_IMAGE), help="image to explain")
    p.add_argument("--only", choices=["latency", "throughput", "burst"], default=None)
    p.add_argument("--repeats", type=int, default=15, help="timed latency rounds (default 15)")
    p.add_argument("--warmup", type=int, default=2, help="untimed latency rounds first (default 2)")
    p.add_argument("--clients", type=int, default=8, help="concurrent gradio_client clients (default 8)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per throughput window (default 20)")
    p.add_argument("--burst-clients", type=int, default=30, help="clients in the one-example burst (default 30)")
    p.add_argument("--burst-rounds", type=int, default=2, help="bursts in a row (default 2)")
    p.add_argument(
        "--cold",
        action="store_true",
        help="build the app without computing the examples at start (app.py computes them; see ui.app.warm_examples)",
    )
    p.add_argument(
        "--burst-client",
        choices=["browser", "gradio_client"],
        default="browser",
        help="browser: example clicks as a browser sends them, from another process (default); "
        "gradio_client: uploads through gradio_client from this process",
    )
    p.add_argument(
        "--burst-timeout",
        type=float,
        default=120.0,
        help="seconds a burst may take before it is abandoned (default 120)",
    )
    p.add_argument("--adapt-steps", type=int, default=200, help="steps of the background adaptation (max 200)")
    p.add_argument("--adapt-batch", type=int, default=16)
    p.add_argument("--adapt-crops", type=int, default=4)
    p.add_argument("--toy-per-class", type=int, default=8, help="toy-world images per class for the adaptation")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads in the server process (default: the app's own choice)",
    )
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--profile", action="store_true", help="only profile the in-process explore callback (cProfile)")
    return p.parse_args(argv)


# ------------------------------------------------------------------ the model and the server


def build_registry(ckpt: Path, scratch: Path) -> tuple[ModelRegistry, str, str]:
    """(registry, model name, a note on which model it is)."""
    registry = ModelRegistry("cpu")
    if ckpt.is_file():
        name = registry.add_checkpoint(ckpt, "toybirds · microCLIP adapted", default=True)
        return registry, name, f"adapted checkpoint {ckpt.name}"
    from microclip.toyworld import TOY_MODEL_NAME
    from microclip.toyworld.pretrain import build_model, export_open_clip_folder

    torch.manual_seed(0)
    folder = scratch / "toyclip-random"
    folder.mkdir()
    export_open_clip_folder(build_model(), folder)
    read = lambda name: json.loads((TOY_ASSETS / name).read_text())  # noqa: E731
    name = registry.add_base(
        f"local-dir:{folder}",
        None,
        read("classes.json"),
        "toybirds · random ToyCLIP zero-shot",
        templates=read("templates.json"),
        descriptions=read("descriptions.json"),
        default=True,
    )
    note = (
        f"NOTE: {ckpt} not found; using a randomly initialised {TOY_MODEL_NAME} (same architecture as the "
        "bundled toy model) zero-shot on the toy-world classes"
    )
    print(note, flush=True)
    return registry, name, note


def build_floor() -> gr.Blocks:
    """Gradio's floor: an image upload in, a short text out, the app's queue settings; nothing else."""

    def size(path: str) -> str:
        with Image.open(path) as image:
            return f"{image.width}x{image.height}"

    with gr.Blocks() as floor:
        image = gr.Image(type="filepath")
        text = gr.Textbox()
        gr.Button().click(
            size, image, text, api_name="floor", concurrency_limit=INFERENCE_CONCURRENCY, concurrency_id=INFERENCE_ID
        )
    return floor.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def explore_args(image: Path, model: str) -> tuple:
    return (handle_file(str(image)), model, "", None, RATIO, *DISPLAY)


# ------------------------------------------------------------------ measurements


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_latency(
    url: str,
    floor_url: str,
    downloads: Path,
    registry: ModelRegistry,
    name: str,
    image: Path,
    repeats: int,
    warmup: int,
) -> dict:
    """Interleaved rounds of: the floor app's round trip, /explore over HTTP (as scripts use it: outputs
    downloaded), bare explain_image, and the explore callback in-process."""
    model = registry.get(name).model
    picture = load_image(image)
    args = explore_args(image, name)
    app = Client(url, verbose=False, download_files=str(downloads))
    floor = Client(floor_url, verbose=False, download_files=str(downloads))
    times: dict[str, list[float]] = {"floor": [], "http": [], "bare": [], "callback": []}
    for round_index in range(warmup + repeats):
        measured = {}
        started = time.perf_counter()
        answer = floor.predict(handle_file(str(image)), api_name="/floor")
        measured["floor"] = time.perf_counter() - started
        assert "x" in answer, answer

        started = time.perf_counter()
        summary = app.predict(*args, api_name="/explore")[0]
        measured["http"] = time.perf_counter() - started
        assert "Prediction:" in summary, summary  # a failed request must not pass for a fast one

        started = time.perf_counter()
        explain_image(model, picture, RATIO)
        measured["bare"] = time.perf_counter() - started

        started = time.perf_counter()
        explore_callback(registry, str(image), name, "", None, RATIO, *DISPLAY)
        measured["callback"] = time.perf_counter() - started
        if round_index >= warmup:
            for key, value in measured.items():
                times[key].append(value)
    per_round = statistics.median(h / f for h, f in zip(times["http"], times["floor"]))
    return {
        "repeats": repeats,
        "warmup": warmup,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "p90_s": {k: quantile(v, 0.9) for k, v in times.items()},
        "explore_over_floor": per_round,
        "explore_over_floor_of_medians": statistics.median(times["http"]) / statistics.median(times["floor"]),
    }


def profile_callback(registry: ModelRegistry, name: str, image: Path, rounds: int = 20) -> None:
    """cProfile of the explore callback called in-process (what the server does per request, minus HTTP)."""
    import cProfile
    import pstats

    explore_callback(registry, str(image), name, "", None, RATIO, *DISPLAY)  # warm
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        explore_callback(registry, str(image), name, "", None, RATIO, *DISPLAY)
    profiler.disable()
    print(f"cProfile of {rounds} in-process explore callbacks (cumulative):")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


@dataclass
class Window:
    condition: str
    clients: int
    duration_s: float
    completed: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    adapt_steps: int | None = None  # training steps done by the adaptation during the window
    adapt_note: str = ""

    @property
    def rate(self) -> float:
        return self.completed / self.duration_s


def hammer(url: str, send, clients: int, duration: float, downloads: Path, condition: str) -> Window:
    """``clients`` threads, each with its own Client, call ``send(client)`` back to back until the deadline;
    ``send`` returns True when the answer is right."""
    connected = [Client(url, verbose=False, download_files=str(downloads)) for _ in range(clients)]
    window = Window(condition, clients, duration)
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + duration

    def loop(client: Client) -> None:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                ok = send(client)
            except Exception as error:  # noqa: BLE001 - a refused or failed request is counted, not fatal
                log.warning("request failed: %s", error)
                ok = False
            done = time.perf_counter()
            with lock:
                if done > deadline:  # finished after the window closed: not counted
                    break
                if ok:
                    window.completed += 1
                    window.latencies_s.append(done - sent)
                else:
                    window.errors += 1

    threads = [threading.Thread(target=loop, args=(c,), daemon=True) for c in connected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration + 120)
    return window


def adapt_progress(control: Client, job_id: str) -> tuple[str, int]:
    text, progress, *_ = control.predict(job_id, api_name="/adapt_status")
    bar = re.search(r"value='(\d+)'", progress)
    return text, int(bar[1]) if bar else 0


def bench_throughput(
    url: str, floor_url: str, name: str, image: Path, args: argparse.Namespace, downloads: Path
) -> list[Window]:
    request = explore_args(image, name)

    def explore(client: Client) -> bool:
        return "Prediction:" in client.predict(*request, api_name="/explore")[0]

    def floor(client: Client) -> bool:
        return "x" in client.predict(handle_file(str(image)), api_name="/floor")

    Client(url, verbose=False, download_files=str(downloads)).predict(*request, api_name="/explore")  # warm up
    floor_window = hammer(floor_url, floor, args.clients, args.duration, downloads, "floor app")
    idle = hammer(url, explore, args.clients, args.duration, downloads, "/explore, nothing else running")

    control = Client(url, verbose=False, download_files=str(downloads))
    job_id = control.predict(
        name,
        "toy world",
        None,
        "",
        args.toy_per_class,
        "",
        None,
        False,
        min(args.adapt_steps, 200),
        args.adapt_batch,
        1e-4,
        args.adapt_crops,
        2,
        api_name="/adapt_start",
    )[0]
    deadline = time.monotonic() + 300
    while True:  # bounded: wait for training to start (data generated, model built)
        text, step = adapt_progress(control, job_id)
        if "running" in text or re.search(r"\*\*(error|done|stopped)", text):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"the adaptation did not start training within 300 s: {text}")
        time.sleep(0.5)
    if "running" not in text:
        raise RuntimeError(f"the adaptation did not run: {text}")
    busy = hammer(url, explore, args.clients, args.duration, downloads, "/explore, an adaptation training")
    text, end_step = adapt_progress(control, job_id)
    busy.adapt_steps = end_step - step
    busy.adapt_note = "ran through the window" if "running" in text else f"ended early: {text.strip('*')}"
    control.predict(job_id, api_name="/adapt_stop")
    stop_deadline = time.monotonic() + 120
    while not re.search(r"\*\*(stopped|done|finished|error)", adapt_progress(control, job_id)[0]):
        if time.monotonic() > stop_deadline:
            break
        time.sleep(0.5)
    return [floor_window, idle, busy]


@dataclass
class Burst(Round):
    """One burst: classroom.py's round of every client's latencies (seconds) and failures, plus each client's
    walkthrough and Explore back to back."""

    per_client_s: list[float] = field(default_factory=list)


def bench_burst(
    url: str, name: str, image: Path, clients: int, rounds: int, timeout: float, downloads: Path
) -> list[Burst]:
    """``clients`` students open the walkthrough, then Explore, of the same example at the same moment.

    Clients connect first (each its own session), then wait on one barrier, so the requests arrive together
    as in a classroom. Bounded: the barrier and every thread have ``timeout``; the app's queue (32) holds
    the burst without refusing, since each client has one request in flight at a time."""
    connected = [Client(url, verbose=False, download_files=str(downloads)) for _ in range(clients)]
    return [one_burst(round_index, connected, name, image, timeout) for round_index in range(1, rounds + 1)]


def one_burst(round_index: int, connected: list[Client], name: str, image: Path, timeout: float) -> Burst:
    burst = Burst(round_index, len(connected))
    lock = threading.Lock()
    barrier = threading.Barrier(len(connected) + 1)

    def student(client: Client) -> None:
        try:
            barrier.wait(timeout=timeout)
        except threading.BrokenBarrierError:
            return
        try:
            started = time.perf_counter()
            page, _numbers = client.predict(handle_file(str(image)), name, "", api_name="/walkthrough")
            walked = time.perf_counter()
            summary = client.predict(*explore_args(image, name), api_name="/explore")[0]
            done = time.perf_counter()
            if "Prediction" not in page or "Prediction:" not in summary:  # a failure must not pass for speed
                raise RuntimeError(f"unexpected answer: {page[:80]!r} / {summary[:80]!r}")
        except Exception as error:  # noqa: BLE001 - counted and reported, not fatal
            with lock:
                burst.errors.append(f"{type(error).__name__}: {error}"[:200])
            return
        with lock:
            burst.walkthrough_s.append(walked - started)
            burst.explore_s.append(done - walked)
            burst.per_client_s.append(done - started)

    threads = [threading.Thread(target=student, args=(c,), daemon=True) for c in connected]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=timeout)
    started = time.perf_counter()
    deadline = started + timeout
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.perf_counter()))
    burst.wall_s = time.perf_counter() - started
    hung = sum(thread.is_alive() for thread in threads)
    if hung:
        burst.errors.append(f"{hung} clients still waiting after {timeout:.0f} s")
    return burst


def browser_burst(url: str, image: Path, clients: int, rounds: int, timeout: float) -> list[Burst]:
    """The burst as browsers send it (``bench/classroom.py``, run in its own process against ``url``)."""
    command = [sys.executable, str(ROOT / "bench" / "classroom.py"), "--url", url, "--clients", str(clients)]
    command += ["--rounds", str(rounds), "--image", image.name]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout * (rounds + 1), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench/classroom.py failed: {done.stderr.strip()[-500:]}")
    bursts = []
    for row in json.loads(done.stdout):
        per_client = [w + e for w, e in zip(row["walkthrough_s"], row["explore_s"])]
        bursts.append(Burst(**row, per_client_s=per_client))
    return bursts


ROUND_NAMES = {0: "0: the page opens (config + page-load events; in the walkthrough column)"}


class GcPauses:
    """The server's garbage-collection pauses while it is in effect (a full collection stops every request)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started = 0.0

    def _record(self, phase: str, _info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds.append(time.perf_counter() - self._started)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._record)


def print_bursts(bursts: list[Burst], client: str, cold: bool) -> None:
    how = "example clicks as browsers send them" if client == "browser" else "gradio_client uploads"
    names = ROUND_NAMES | {1: "1 (cold: nothing computed yet)" if cold else "1 (examples computed at start)"}
    print(f"### Burst: {bursts[0].clients} clients open the walkthrough, then Explore, of one example ({how})\n")
    print(
        "| round | walkthrough p50 / p95 / max ms | Explore p50 / p95 / max ms | per request p95 ms | "
        "per client (both) p50 / p95 ms | all served in s | errors |"
    )
    print("|---|---|---|---:|---|---:|---:|")

    def three(values: list[float]) -> str:
        if not values:
            return "—"
        return " / ".join(f"{quantile(values, q) * 1e3:.0f}" for q in (0.5, 0.95, 1.0))

    for b in bursts:
        both = b.walkthrough_s + b.explore_s
        client = (
            f"{quantile(b.per_client_s, 0.5) * 1e3:.0f} / {quantile(b.per_client_s, 0.95) * 1e3:.0f}"
            if b.per_client_s
            else "—"
        )
        p95 = f"{quantile(both, 0.95) * 1e3:.0f}" if both else "—"
        print(
            f"| {names.get(b.round, b.round)} | {three(b.walkthrough_s)} | {three(b.explore_s)} | "
            f"{p95} | {client} | {b.wall_s:.1f} | {len(b.errors)} |"
        )
    for b in bursts:
        for error in b.errors[:3]:
            print(f"- round {b.round}: {error}")
    print()


# ------------------------------------------------------------------ report


def print_report(info: dict, latency: dict | None, windows: list[Window] | None) -> dict:
    """Print the tables; return the side-by-side summary (floor, explore, ratios, targets)."""
    print(f"\n## App benchmark against Gradio's floor ({info['model']})\n")
    print(
        f"{info['cpu']}; {info['platform']}; {info['cpus']} CPUs, torch {info['torch']} with {info['threads']} "
        f"threads; load average before: {info['loadavg']}; servers on 127.0.0.1; gradio_client clients in the "
        f"servers' process, the burst's {info['burst_client']} clients "
        f"{'in their own process' if info['burst_client'] == 'browser' else 'there too'}.\n"
    )
    summary: dict = {}
    if latency:
        med, p90 = latency["median_s"], latency["p90_s"]
        summary["floor_ms"], summary["explore_ms"] = med["floor"] * 1e3, med["http"] * 1e3
        summary["latency_ratio"] = latency["explore_over_floor"]
        print(f"### Round trip (median of {latency['repeats']} interleaved rounds)\n")
        print("| path | median ms | p90 ms |")
        print("|---|---:|---:|")
        rows = (
            ("floor app `/floor` via `gradio_client` (image upload in, short text out)", "floor"),
            ("`/explore` via `gradio_client` (upload, queue, forward, every view, downloads)", "http"),
            ("bare `explain_image` (decoded image in, Explanation out)", "bare"),
            ("`ui.explore.explore` in-process (decode + forward + every view)", "callback"),
        )
        for label, key in rows:
            print(f"| {label} | {med[key] * 1e3:.1f} | {p90[key] * 1e3:.1f} |")
        print()
    if windows:
        print(
            f"### Throughput ({windows[0].clients} concurrent gradio_client clients, {windows[0].duration_s:.0f} s "
            "windows)\n"
        )
        print(
            "| condition | requests done | req/s | median latency ms | p90 latency ms | errors | "
            "adaptation steps in window |"
        )
        print("|---|---:|---:|---:|---:|---:|---|")
        for w in windows:
            steps = "—" if w.adapt_steps is None else f"{w.adapt_steps} ({w.adapt_note})"
            print(
                f"| {w.condition} | {w.completed} | {w.rate:.2f} | {statistics.median(w.latencies_s) * 1e3:.0f} | "
                f"{quantile(w.latencies_s, 0.9) * 1e3:.0f} | {w.errors} | {steps} |"
                if w.latencies_s
                else f"| {w.condition} | 0 | 0 | — | — | {w.errors} | {steps} |"
            )
        floor, idle, busy = (w.rate for w in windows)
        summary |= {
            "floor_rps": floor,
            "explore_rps": idle,
            "explore_rps_adapting": busy,
            "throughput_ratio": idle / floor if floor else float("nan"),
            "adapting_ratio": busy / idle if idle else float("nan"),
        }
        print()
    if summary:
        print("### Side by side (targets from issue 9)\n")
        print("| measure | floor | /explore | ratio | target | met |")
        print("|---|---:|---:|---:|---|---|")
        if "latency_ratio" in summary:
            ratio = summary["latency_ratio"]
            print(
                f"| round trip, median ms | {summary['floor_ms']:.0f} | {summary['explore_ms']:.0f} | {ratio:.2f}× "
                f"| ≤ {TARGETS['latency']:.0f}× | {'yes' if ratio <= TARGETS['latency'] else 'no'} |"
            )
        if "throughput_ratio" in summary:
            ratio = summary["throughput_ratio"]
            print(
                f"| {windows[0].clients}-client throughput, req/s | {summary['floor_rps']:.2f} | "
                f"{summary['explore_rps']:.2f} | {ratio:.2f} | ≥ {TARGETS['throughput']} | "
                f"{'yes' if ratio >= TARGETS['throughput'] else 'no'} |"
            )
            ratio = summary["adapting_ratio"]
            print(
                f"| … with an adaptation training (vs /explore alone) | — | {summary['explore_rps_adapting']:.2f} | "
                f"{ratio:.2f} | ≥ {TARGETS['with_adaptation']} | "
                f"{'yes' if ratio >= TARGETS['with_adaptation'] else 'no'} |"
            )
        print()
    print(flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore")
    image = Path(args.image)
    scratch = Path(tempfile.mkdtemp(prefix="microclip-bench-app-"))
    try:
        registry, name, note = build_registry(Path(args.ckpt), scratch)
        registry.get(name)  # load before anything is timed
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.profile:
            profile_callback(registry, name, image)
            return
        runner = AdaptationRunner(registry, scratch / "runs", max_waiting=1)
        demo = build_demo(registry, runner, warm=not args.cold)
        for thread in threading.enumerate():  # a teacher starts the app before the class arrives
            if thread.name == "warm-examples":
                thread.join()
        gc.freeze()  # as app.py does before it serves
        if args.threads:  # build_demo chose the app's own default (studio.inflight.inference_threads)
            torch.set_num_threads(args.threads)
        demo.launch(**launch_kwargs("127.0.0.1", free_port()), prevent_thread_lock=True, quiet=True)
        floor = build_floor()
        floor.launch(**launch_kwargs("127.0.0.1", free_port()), prevent_thread_lock=True, quiet=True)
        downloads = scratch / "downloads"
        info = {
            "model": note,
            "cpu": cpu_name(),
            "platform": platform.platform(terse=True),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "gradio": gr.__version__,
            "threads": torch.get_num_threads(),
            "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "image": str(image),
            "burst_client": args.burst_client,
            "examples_computed_at_start": not args.cold,
        }
        try:
            latency = windows = bursts = None
            if args.only in (None, "latency"):
                latency = bench_latency(
                    demo.local_url, floor.local_url, downloads, registry, name, image, args.repeats, args.warmup
                )
            if args.only in (None, "burst") and args.burst_client == "browser":
                with GcPauses() as pauses:
                    bursts = browser_burst(
                        demo.local_url, image, args.burst_clients, args.burst_rounds, args.burst_timeout
                    )
                info["longest_gc_pause_ms"] = 1000 * max(pauses.seconds, default=0.0)
            elif args.only in (None, "burst"):
                bursts = bench_burst(
                    demo.local_url, name, image, args.burst_clients, args.burst_rounds, args.burst_timeout, downloads
                )
            if args.only in (None, "throughput"):
                windows = bench_throughput(demo.local_url, floor.local_url, name, image, args, downloads)
        finally:
            for job_id in list(runner._jobs):
                runner.stop(job_id)
            demo.close()
            floor.close()
        summary = print_report(info, latency, windows)
        if bursts:
            print_bursts(bursts, args.burst_client, args.cold)
            if "longest_gc_pause_ms" in info:
                pause = info["longest_gc_pause_ms"]
                print(f"\nLongest garbage-collection pause in the server during the bursts: {pause:.0f} ms")
            last = bursts[-1].walkthrough_s + bursts[-1].explore_s
            summary["burst_p95_s"] = quantile(last, 0.95) if last else float("nan")
        if args.json:
            out = Path(args.json)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(
                json.dumps(
                    {
                        "info": info,
                        "summary": summary,
                        "targets": TARGETS,
                        "latency": latency,
                        "throughput": [asdict(w) | {"rate": w.rate} for w in windows or []],
                        "burst": [asdict(b) for b in bursts or []],
                    },
                    indent=2,
                )
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
