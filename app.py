"""microCLIP Studio: ``python app.py`` serves the app (bundled toy-world models, no network needed).

HuggingFace Spaces imports this file and serves the module-level ``demo``; flags are read from
``sys.argv`` with ``parse_known_args`` so foreign arguments never stop the import.

    python app.py                                          # bundled toy-world models
    python app.py --ckpt-path output/run/checkpoint.safetensors
    python app.py --clip_model ViT-B-32-quickgelu --pretrained openai --host 0.0.0.0 --share
    python app.py --host 0.0.0.0 --auth student:correct-horse   # a class on one server, behind a login
    python app.py --runs_dir ~/microclip-runs               # where Adapt saves models (default ./runs)

Models saved in Adapt go to the runs folder (``--runs_dir``; default ``./runs``, or the persistent
``/data/microclip-runs`` on a HuggingFace Space with storage) and are listed again, with their date, on
the next start.

Served beyond localhost (--host 0.0.0.0, --share, a Space), Batch and Adapt do not read folders of the
server unless --allow-server-paths is given.

A link can open one view: ``http://127.0.0.1:7860/?example=lumbrel-tit&step=soap`` (the Walkthrough of that
example at its SOAP step), ``?tab=explore&example=sarnith-finch&model=zero-shot`` (``studio/links.py``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys

try:  # HuggingFace ZeroGPU: `spaces` must be imported before torch touches CUDA
    import spaces  # type: ignore[import-not-found]  # noqa: F401
except ImportError:
    pass

from microclip.engine import select_device
from studio.jobs import default_runs_dir, usable_runs_dir
from studio.registry import default_registry
from studio.sharing import ServerPathGuard
from ui.app import build_demo, launch_kwargs, parse_auth

log = logging.getLogger("microclip.app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="microCLIP Studio (Gradio app)")
    parser.add_argument(
        "--clip_model",
        "--clip-model",
        default=None,
        help="open_clip name or local-dir:<folder> to show zero-shot (default: bundled toy world)",
    )
    parser.add_argument("--pretrained", default=None, help="open_clip tag or weight file for --clip_model")
    parser.add_argument(
        "--ckpt-path",
        "--ckpt_path",
        dest="ckpt_path",
        default=None,
        help="an adapted .safetensors checkpoint to open first",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument(
        "--host", default=None, help="default 127.0.0.1 (or $GRADIO_SERVER_NAME); 0.0.0.0 serves on the network"
    )
    parser.add_argument("--port", type=int, default=None, help="default 7860 (or $GRADIO_SERVER_PORT)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument(
        "--allow-server-paths",
        "--allow_server_paths",
        dest="allow_server_paths",
        action="store_true",
        help="let Batch and Adapt read folders of this machine even when served beyond localhost "
        "or with --share (off by default there: anyone who opens the app could read them)",
    )
    parser.add_argument(
        "--auth",
        default=None,
        metavar="USER:PASSWORD",
        help="ask for this login before the page or any endpoint answers (Gradio's auth); "
        "$MICROCLIP_AUTH is read when the flag is absent, which keeps the password off `ps`",
    )
    parser.add_argument(
        "--runs_dir",
        "--runs-dir",
        dest="runs_dir",
        default=None,
        metavar="FOLDER",
        help="where models saved in Adapt are written and listed from on start (default ./runs; "
        "on a HuggingFace Space with persistent storage, /data/microclip-runs)",
    )
    args, _unknown = parser.parse_known_args(argv)
    if args.auth is None:
        args.auth = os.environ.get("MICROCLIP_AUTH") or None
    try:
        args.auth = parse_auth(args.auth)
    except ValueError as error:
        parser.error(str(error))
    return args


def create_demo(argv: list[str] | None = None):
    """Build the registry from the flags and the app over it; load the first model now, not on a click."""
    args = parse_args(argv)
    registry = default_registry(select_device(args.device), args.ckpt_path, args.clip_model, args.pretrained)
    if registry.default_name is None:
        log.warning(
            "no model found: the bundled toy-world checkpoints are missing; pass --ckpt-path or "
            "--clip_model, or upload a checkpoint in the Models tab"
        )
    else:
        try:
            registry.get()
        except Exception as error:  # noqa: BLE001 - the app still starts; the tab shows the error on use
            log.error("could not load %s: %s", registry.default_name, error)
    runs_dir = usable_runs_dir(args.runs_dir or default_runs_dir())
    if runs_dir is not None:
        registry.add_saved_runs(runs_dir)
    guard = ServerPathGuard(args.host, args.share, args.allow_server_paths)
    log.info("%s", guard.now().reason)
    return build_demo(registry, server_paths=guard, runs_dir=runs_dir, warm=True), args


logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
demo, _args = create_demo(sys.argv[1:])

if __name__ == "__main__":
    # Everything so far (torch, Gradio, the model, the app) lives as long as the server: out of the cyclic
    # collector's sight, a full collection in the middle of a class takes 0.1-0.4 s instead of 0.5-0.7 s.
    gc.freeze()
    demo.launch(**launch_kwargs(_args.host, _args.port, _args.share, _args.auth))
