"""Safe to share: served beyond localhost no server folder is readable (through the endpoints), an optional
login (Gradio's auth), and files written with the mode ``open()`` gives (group-readable), not 0600.

The end-to-end test starts ``python app.py --host 0.0.0.0 --auth ...`` exactly as a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import CLASSES, free_port, tiny_base_registry

from microclip.checkpoint import CheckpointMeta, save_adapted
from microclip.files import atomic_write_json, current_umask, file_mode, shareable_tempdir
from microclip.model import MicroCLIP
from microclip.toyworld.dataset import ensure_split
from studio.jobs import AdaptationRunner
from studio.sharing import ServerPathGuard, decide, is_loopback
from ui.app import build_demo, launch_kwargs, parse_auth
from ui.batch import BatchWorkspace

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError, AuthenticationError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASE = "tiny"
ADAPT = dict(
    per_class=8, class_text="", descriptions=None, allow=False, steps=2, batch_size=4, lr=1e-4, crops=1, probes=0
)


def batch_folder(client: Client, folder: Path, model: str = BASE):
    return client.predict(model, None, str(folder), 5, 0.5, api_name="/batch")


def adapt_folder(client: Client, folder: Path, model: str = BASE):
    return client.predict(model, "folder on the server", None, str(folder), *ADAPT.values(), api_name="/adapt_start")


@contextlib.contextmanager
def launched(demo, host: str, auth: tuple[str, str] | None = None):
    """Launch on ``host`` (e.g. 0.0.0.0) and yield the loopback URL a client on this machine uses."""
    port = free_port()
    demo.launch(**launch_kwargs(host, port, auth=auth), prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def component(demo, elem_id: str) -> dict:
    for item in demo.config["components"]:
        if item.get("props", {}).get("elem_id") == elem_id:
            return item["props"]
    raise AssertionError(f"no component {elem_id}")


# ------------------------------------------------------------------ the rule


def test_only_loopback_without_share_or_an_explicit_flag_allows_server_folders(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.1.1", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org", "", None))
    assert decide(None).allowed and decide("127.0.0.1").allowed and decide("localhost").allowed
    assert not decide("0.0.0.0").allowed and "0.0.0.0" in decide("0.0.0.0").reason
    assert not decide("127.0.0.1", share=True).allowed and "--share" in decide("127.0.0.1", share=True).reason
    assert decide("0.0.0.0", share=True, allow_flag=True).allowed
    assert not decide("127.0.0.1", on_spaces=True).allowed
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # what Spaces and docker images set
    assert not decide(None).allowed
    monkeypatch.delenv("GRADIO_SERVER_NAME")
    monkeypatch.setenv("SPACE_ID", "someone/studio")
    assert not decide(None).allowed and "Space" in decide(None).reason


def test_requests_are_judged_by_the_launched_address_and_an_unknown_one_is_refused(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    guard = ServerPathGuard()  # intended: localhost
    assert guard.now().allowed and guard.now(request=True).allowed  # no app attached yet: the intent
    guard.demo = SimpleNamespace(is_running=True, server_name="0.0.0.0", share=False)
    assert guard.now().allowed and not guard.now(request=True).allowed  # drawn on, refused when served widely
    guard.demo = SimpleNamespace(is_running=True, server_name="127.0.0.1", share=True)
    assert not guard.now(request=True).allowed
    guard.demo = SimpleNamespace(is_running=False)  # mounted in another server: address unknown
    assert "not started by demo.launch" in guard.now(request=True).reason
    assert ServerPathGuard(allow_flag=True).now(request=True).allowed


def test_auth_is_user_colon_password():
    assert parse_auth("student:pa:ss") == ("student", "pa:ss") and parse_auth(None) is None
    for bad in ("student", ":pw", "student:"):
        with pytest.raises(ValueError, match="user:password"):
            parse_auth(bad)


# ------------------------------------------------------------------ through the endpoints, in process


def test_an_app_built_for_localhost_but_launched_on_all_interfaces_reads_no_folder(
    tiny_model_dir, tmp_path, image_dataset_root
):
    """The guard reads the address the app was really launched on, on every request."""
    registry = tiny_base_registry(tiny_model_dir, BASE)
    runner = AdaptationRunner(registry, tmp_path / "runs")
    demo = build_demo(registry, runner)  # built with the default (localhost) guard: the fields are enabled
    assert component(demo, "batch-folder")["interactive"] is True
    folder = image_dataset_root / "shapes" / "train"
    with launched(demo, "0.0.0.0") as url:
        client = Client(url, verbose=False)
        with pytest.raises(AppError, match=r"served on 0\.0\.0\.0"):
            batch_folder(client, folder)
        with pytest.raises(AppError, match=r"served on 0\.0\.0\.0"):
            adapt_folder(client, folder)
        assert not runner._jobs  # nothing was queued, nothing read
    with launched(demo, "127.0.0.1") as url:  # the same app on loopback reads the folder
        _gallery, table, _notes, _bundle = batch_folder(Client(url, verbose=False), folder)
        assert len(table["data"]) == 5


def test_built_for_the_network_the_fields_are_disabled_with_the_reason_and_the_flag_opens_them(
    tiny_model_dir, tmp_path, image_dataset_root
):
    registry = tiny_base_registry(tiny_model_dir, BASE)
    closed = build_demo(registry, AdaptationRunner(registry, tmp_path / "a"), ServerPathGuard("0.0.0.0"))
    for elem_id in ("batch-folder", "adapt-folder"):
        props = component(closed, elem_id)
        assert props["interactive"] is False and "served on 0.0.0.0" in props["info"]
    opened = build_demo(
        registry, AdaptationRunner(registry, tmp_path / "b"), ServerPathGuard("0.0.0.0", allow_flag=True)
    )
    assert component(opened, "batch-folder")["interactive"] is True
    with launched(opened, "0.0.0.0") as url:
        _gallery, table, _notes, _bundle = batch_folder(
            Client(url, verbose=False), image_dataset_root / "shapes" / "train"
        )
        assert len(table["data"]) == 5


# ------------------------------------------------------------------ python app.py, as a user starts it


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    """``python app.py --host 0.0.0.0 --port P --auth student:...`` in its own process (the bundled toy models)."""
    if not (ROOT / "checkpoints" / "toybirds-microclip.safetensors").is_file():
        pytest.skip("the bundled toy-world checkpoint is missing")
    port = free_port()
    log = tmp_path_factory.mktemp("served") / "app.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MICROCLIP_AUTH", None)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "app.py",
                "--host",
                "0.0.0.0",
                "--port",
                str(port),
                "--device",
                "cpu",
                "--auth",
                "student:correct-horse",
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        import httpx

        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code in (200, 401):
                    break
            assert process.poll() is None, f"app.py exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"app.py did not answer in 180 s: {log.read_text()[-2000:]}"
            time.sleep(0.5)
        yield url, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_app_py_on_all_interfaces_with_auth_refuses_strangers_and_server_folders(served_app, image_dataset_root):
    url, log = served_app
    with pytest.raises(AuthenticationError):
        Client(url, verbose=False)
    with pytest.raises(ValueError, match="Could not login"):
        Client(url, auth=("student", "wrong"), verbose=False)
    client = Client(url, auth=("student", "correct-horse"), verbose=False)
    model = "toybirds · microCLIP adapted"
    folder = image_dataset_root / "shapes" / "train"
    with pytest.raises(AppError, match=r"Server folders are off because this app is served on 0\.0\.0\.0"):
        batch_folder(client, folder, model)
    with pytest.raises(AppError, match=r"Server folders are off"):
        adapt_folder(client, folder, model)
    example = ROOT / "assets" / "examples" / "toybird-velmun-finch.png"
    _html, numbers = client.predict(gradio_client.handle_file(str(example)), model, "", api_name="/walkthrough")
    assert numbers["steps"][-1]["id"] == "prediction"
    assert "Server folders are off because this app is served on 0.0.0.0" in log.read_text()


# ------------------------------------------------------------------ file modes


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_every_write_site_gives_the_mode_open_and_mkdir_would(tmp_path, tiny_model_dir, mask):
    """The atomic writes (checkpoint, descriptions JSON) and the app's folders (runs, batch calls, uploads),
    compared with a file made by plain ``open()`` and a folder by ``mkdir()`` under the same umask."""
    with umask(mask):
        assert current_umask() == mask and file_mode() == 0o666 & ~mask
        reference_file = tmp_path / "plain.txt"
        reference_file.write_text("x")
        reference_dir = tmp_path / "plain"
        reference_dir.mkdir()
        model, _, _ = MicroCLIP.build(f"local-dir:{tiny_model_dir}", None, CLASSES)
        meta = CheckpointMeta(model.base, CLASSES, method=model.config.to_dict())
        checkpoint = save_adapted(tmp_path / "adapted.safetensors", model.adapted_state(), meta)
        described = tmp_path / "descriptions.json"
        atomic_write_json(described, {"a": ["b"]})
        folders = [shareable_tempdir("microclip-test-", tmp_path)]
        workspace = BatchWorkspace(tmp_path / "batch")
        folders.append(workspace.new())
        registry = tiny_base_registry(tiny_model_dir, BASE)
        upload = registry.add_upload(checkpoint, "uploaded")
        (stored,) = registry._upload_dir.iterdir()  # the registry's copy of the upload
        folders.append(registry._upload_dir)
        folders.append(ensure_split(tmp_path / "toy", "test", n_per_class=1))  # Adapt's toy-world source
    assert upload == "uploaded"
    for path in (checkpoint, described, stored):
        assert mode(path) == mode(reference_file), path
    for folder in folders:
        assert mode(folder) == mode(reference_dir), folder
    if mask == 0o022:
        assert mode(checkpoint) == 0o644 and mode(folders[0]) == 0o755
    assert json.loads(described.read_text()) == {"a": ["b"]}
