"""App benchmarks: what the Gradio layer costs on top of the model, and what the server holds under load.

The app is built with ``ui.app.build_demo`` and served on 127.0.0.1 only; everything is driven with
``gradio_client`` exactly as a script would. Two measurements:

* ``latency``: request → rendered Explore result through ``gradio_client`` (``/explore``: upload,
  queue, forward pass, every map and the contribution plot rendered, encoded and downloaded) against
  the bare ``microclip.explain.explain_image`` call on the same model and the same (decoded) image.
  The ``explore`` callback called in-process (decode + forward + rendering, no HTTP) is timed too,
  so the table shows where the time goes. Rounds are interleaved; medians of ``--repeats``.
  Target: HTTP / bare <= 1.3x.
* ``throughput``: Explore requests per second completed by ``--clients`` concurrent gradio_client
  clients (one thread each) during a fixed ``--duration`` window, with no adaptation running, then
  while an adaptation run (started through ``/adapt_start``, toy-world data) trains in the server.

The model is the bundled adapted toy-world checkpoint (``checkpoints/toybirds-microclip.safetensors``)
when present; otherwise a randomly initialised ToyCLIP-B-8 (the same architecture) is built on the fly
and shown zero-shot on the toy-world classes, and the script says so. Nothing is asserted; the script
prints markdown tables (and optionally JSON). Every loop is bounded by a count or a deadline.

    python bench/app.py                       # both, ~2 min on 2 CPU cores
    python bench/app.py --only latency --repeats 30
    python bench/app.py --clients 8 --duration 20 --json out/app.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from microclip.data.images import load_image  # noqa: E402
from microclip.explain import explain_image  # noqa: E402
from ui.app import build_demo, launch_kwargs  # noqa: E402
from ui.explore import explore as explore_callback  # noqa: E402
from ui.jobs import AdaptationRunner  # noqa: E402
from ui.registry import TOY_ADAPTED, TOY_ASSETS, ModelRegistry  # noqa: E402

log = logging.getLogger("bench.app")

TARGET_RATIO = 1.3
DEFAULT_IMAGE = ROOT / "assets" / "examples" / "toybird-fenwhit-finch.png"
RATIO = 0.5
DISPLAY = (0.5, "jet", 0, 100, 0, "SOAP weight", False)  # opacity, cmap, clip lo/hi, threshold, raw map, numbers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default=str(TOY_ADAPTED), help="adapted .safetensors checkpoint (default: bundled toy)")
    p.add_argument("--image", default=str(DEFAULT_IMAGE), help="image to explain")
    p.add_argument("--only", choices=["latency", "throughput"], default=None)
    p.add_argument("--repeats", type=int, default=15, help="timed latency rounds (default 15)")
    p.add_argument("--warmup", type=int, default=2, help="untimed latency rounds first (default 2)")
    p.add_argument("--clients", type=int, default=8, help="concurrent gradio_client clients (default 8)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per throughput window (default 20)")
    p.add_argument("--adapt-steps", type=int, default=200, help="steps of the background adaptation (max 200)")
    p.add_argument("--adapt-batch", type=int, default=16)
    p.add_argument("--adapt-crops", type=int, default=4)
    p.add_argument("--toy-per-class", type=int, default=8, help="toy-world images per class for the adaptation")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the server process")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
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
    name = registry.add_base(f"local-dir:{folder}", None, read("classes.json"), "toybirds · random ToyCLIP zero-shot",
                             templates=read("templates.json"), descriptions=read("descriptions.json"), default=True)
    note = (f"NOTE: {ckpt} not found; using a randomly initialised {TOY_MODEL_NAME} (same architecture as the "
            "bundled toy model) zero-shot on the toy-world classes")
    print(note, flush=True)
    return registry, name, note


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


def bench_latency(url: str, downloads: Path, registry: ModelRegistry, name: str, image: Path, repeats: int,
                  warmup: int) -> dict:
    """Interleaved rounds of: bare explain_image, the explore callback in-process, /explore over HTTP (outputs
    left on the server, then downloaded as ``gradio_client`` does by default)."""
    model = registry.get(name).model
    picture = load_image(image)
    args = explore_args(image, name)
    clients = {"http_nodl": Client(url, verbose=False, download_files=False),
               "http": Client(url, verbose=False, download_files=str(downloads))}
    times: dict[str, list[float]] = {"bare": [], "callback": [], "http_nodl": [], "http": []}
    for round_index in range(warmup + repeats):
        started = time.perf_counter()
        explain_image(model, picture, RATIO)
        bare = time.perf_counter() - started

        started = time.perf_counter()
        outputs = explore_callback(registry, str(image), name, "", None, RATIO, *DISPLAY)
        callback = time.perf_counter() - started
        for value in outputs:  # the contribution figure: Gradio closes its own, we close ours
            if isinstance(value, matplotlib.figure.Figure):
                plt.close(value)

        measured = {"bare": bare, "callback": callback}
        for key, client in clients.items():
            started = time.perf_counter()
            summary = client.predict(*args, api_name="/explore")[0]
            measured[key] = time.perf_counter() - started
            assert "Prediction:" in summary, summary  # a failed request must not pass for a fast one
        if round_index >= warmup:
            for key, value in measured.items():
                times[key].append(value)
    others = [key for key in times if key != "bare"]
    ratios = {key: statistics.median(t / b for t, b in zip(times[key], times["bare"])) for key in others}
    return {"repeats": repeats, "warmup": warmup,
            "median_s": {k: statistics.median(v) for k, v in times.items()},
            "p90_s": {k: quantile(v, 0.9) for k, v in times.items()},
            "ratio_to_bare": ratios,
            "ratio_of_medians": {k: statistics.median(times[k]) / statistics.median(times["bare"]) for k in others}}


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


def hammer(url: str, args: tuple, clients: int, duration: float, downloads: Path, condition: str) -> Window:
    """``clients`` threads, each with its own Client, send /explore back to back until the deadline."""
    connected = [Client(url, verbose=False, download_files=str(downloads)) for _ in range(clients)]
    window = Window(condition, clients, duration)
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + duration

    def loop(client: Client) -> None:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                ok = "Prediction:" in client.predict(*args, api_name="/explore")[0]
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


def bench_throughput(url: str, name: str, image: Path, args: argparse.Namespace, downloads: Path) -> list[Window]:
    request = explore_args(image, name)
    Client(url, verbose=False, download_files=str(downloads)).predict(*request, api_name="/explore")  # warm up
    idle = hammer(url, request, args.clients, args.duration, downloads, "no adaptation")

    control = Client(url, verbose=False, download_files=str(downloads))
    job_id = control.predict(name, "toy world", None, "", args.toy_per_class, "", None, False,
                             min(args.adapt_steps, 200), args.adapt_batch, 1e-4, args.adapt_crops, 2,
                             api_name="/adapt_start")[0]
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
    busy = hammer(url, request, args.clients, args.duration, downloads, "adaptation training")
    text, end_step = adapt_progress(control, job_id)
    busy.adapt_steps = end_step - step
    busy.adapt_note = "ran through the window" if "running" in text else f"ended early: {text.strip('*')}"
    control.predict(job_id, api_name="/adapt_stop")
    stop_deadline = time.monotonic() + 120
    while not re.search(r"\*\*(stopped|done|finished|error)", adapt_progress(control, job_id)[0]):
        if time.monotonic() > stop_deadline:
            break
        time.sleep(0.5)
    return [idle, busy]


# ------------------------------------------------------------------ report

def print_report(info: dict, latency: dict | None, windows: list[Window] | None) -> None:
    print(f"\n## App benchmark ({info['model']})\n")
    print(f"{info['platform']}; {info['cpus']} CPUs, torch {info['torch']} with {info['threads']} threads; "
          f"load average before: {info['loadavg']}; server and clients on 127.0.0.1 in one process.\n")
    if latency:
        med, p90, ratio = latency["median_s"], latency["p90_s"], latency["ratio_to_bare"]
        print(f"### Explore latency (median of {latency['repeats']} interleaved rounds; target HTTP/bare "
              f"<= {TARGET_RATIO}x)\n")
        print("| path | median ms | p90 ms | × bare (median of per-round ratios) |")
        print("|---|---:|---:|---:|")
        rows = (("bare `explain_image` (decoded image in, Explanation out)", "bare", None),
                ("`ui.explore.explore` in-process (decode + forward + maps + plot)", "callback", "callback"),
                ("`gradio_client` `/explore`, outputs left on the server (upload → queue → render → encode)",
                 "http_nodl", "http_nodl"),
                ("`gradio_client` `/explore` as scripts use it (… + download the 4 map files)", "http", "http"))
        for label, key, ratio_key in rows:
            shown = f"{ratio[ratio_key]:.2f}×" if ratio_key else "1.00×"
            print(f"| {label} | {med[key] * 1e3:.1f} | {p90[key] * 1e3:.1f} | {shown} |")
        print()
    if windows:
        print(f"### Explore throughput ({windows[0].clients} concurrent gradio_client clients, "
              f"{windows[0].duration_s:.0f} s windows)\n")
        print("| condition | requests done | req/s | median latency ms | p90 latency ms | errors | "
              "adaptation steps in window |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for w in windows:
            steps = "—" if w.adapt_steps is None else f"{w.adapt_steps} ({w.adapt_note})"
            print(f"| {w.condition} | {w.completed} | {w.rate:.2f} | {statistics.median(w.latencies_s) * 1e3:.0f} | "
                  f"{quantile(w.latencies_s, 0.9) * 1e3:.0f} | {w.errors} | {steps} |"
                  if w.latencies_s else f"| {w.condition} | 0 | 0 | — | — | {w.errors} | {steps} |")
        if len(windows) == 2 and windows[0].rate > 0:
            print(f"\nWith an adaptation training, Explore holds {windows[1].rate / windows[0].rate:.0%} of its "
                  "idle throughput.")
    print(flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    image = Path(args.image)
    scratch = Path(tempfile.mkdtemp(prefix="microclip-bench-app-"))
    try:
        registry, name, note = build_registry(Path(args.ckpt), scratch)
        registry.get(name)  # load before anything is timed
        runner = AdaptationRunner(registry, scratch / "runs", max_waiting=1)
        demo = build_demo(registry, runner)
        demo.launch(**launch_kwargs("127.0.0.1", free_port()), prevent_thread_lock=True, quiet=True)
        downloads = scratch / "downloads"
        info = {"model": note, "platform": platform.platform(terse=True), "cpus": os.cpu_count(),
                "torch": torch.__version__, "threads": torch.get_num_threads(),
                "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()), "image": str(image)}
        try:
            latency = windows = None
            if args.only in (None, "latency"):
                latency = bench_latency(demo.local_url, downloads, registry, name, image, args.repeats, args.warmup)
            if args.only in (None, "throughput"):
                windows = bench_throughput(demo.local_url, name, image, args, downloads)
        finally:
            for job_id in list(runner._jobs):
                runner.stop(job_id)
            demo.close()
        print_report(info, latency, windows)
        if args.json:
            out = Path(args.json)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"info": info, "latency": latency,
                                       "throughput": [asdict(w) | {"rate": w.rate} for w in windows or []]},
                                      indent=2))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
