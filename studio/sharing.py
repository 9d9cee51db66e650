"""Who may read folders of the server: only a person at this machine, unless the owner says otherwise.

Batch's folder field and Adapt's folder source read any path the server process can read. That is
what one researcher on their own laptop wants, and what a class on a shared server or a public
link must never get. The rule: server folders are allowed when the app listens on the loopback
interface only and is not shared (``--share``), or when ``--allow-server-paths`` says so; never on
a HuggingFace Space unless that flag is given.

The decision is made twice: when the app is built (to draw the field disabled, with the reason) and
on every request, from the address the app was actually launched on, so an app built for localhost
and then launched on 0.0.0.0 still refuses.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any

ALLOW_FLAG = "--allow-server-paths"


@dataclass(frozen=True)
class ServerPaths:
    """Whether server folders may be read, and the one line the UI shows about it."""

    allowed: bool
    reason: str


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 and "localhost" reach only this machine; anything else (0.0.0.0, a LAN or public
    address, a host name) may be reached from others."""
    if not host:
        return False
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def decide(
    host: str | None, share: bool = False, allow_flag: bool = False, on_spaces: bool | None = None
) -> ServerPaths:
    """The rule above. ``host`` None means Gradio's default: $GRADIO_SERVER_NAME, else 127.0.0.1."""
    if host is None:
        host = os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    if on_spaces is None:
        on_spaces = bool(os.environ.get("SPACE_ID"))
    if allow_flag:
        return ServerPaths(
            True, f"Server folders are on ({ALLOW_FLAG}): anyone who can open this app can read folders of the server."
        )
    if on_spaces:
        return ServerPaths(False, "Server folders are off on a HuggingFace Space: upload a zip of images instead.")
    if share:
        return ServerPaths(
            False,
            f"Server folders are off because this app is shared with --share: upload a zip "
            f"(or restart with {ALLOW_FLAG}).",
        )
    if not is_loopback(host):
        return ServerPaths(
            False,
            f"Server folders are off because this app is served on {host}, beyond this "
            f"machine: upload a zip (or restart with {ALLOW_FLAG}).",
        )
    return ServerPaths(True, f"Server folders are on because this app is served on {host} only.")


class ServerPathGuard:
    """The rule for one app: the intended host/share/flag, and once launched, the real ones."""

    def __init__(self, host: str | None = None, share: bool = False, allow_flag: bool = False) -> None:
        self.host = host
        self.share = share
        self.allow_flag = allow_flag
        self.demo: Any = None  # the gr.Blocks, set by build_demo; read on each request

    def now(self, request: bool = False, turned_off: bool = False) -> ServerPaths:
        """The decision: for drawing the app (``request`` False) from the intended host; for a request from
        the address the app was really launched on. A request reaching an app that ``demo.launch`` did not
        start (mounted in another server) comes from an unknown address: refused unless the flag is given.
        ``turned_off``: the caller's own setting forbids folders where the address would allow them."""
        decision = self._by_address(request)
        if decision.allowed and turned_off:
            return ServerPaths(False, "Server folders are turned off here: upload a zip of images.")
        return decision

    def _by_address(self, request: bool) -> ServerPaths:
        host, share = self.host, self.share
        demo = self.demo
        if request and demo is not None:
            if not getattr(demo, "is_running", False) and not self.allow_flag:
                return ServerPaths(
                    False,
                    "Server folders are off: this app was not started by demo.launch, so "
                    f"where it is served is unknown (start it with {ALLOW_FLAG} to allow).",
                )
            host = getattr(demo, "server_name", None) or host
            share = share or bool(getattr(demo, "share", False))
        return decide(host, share, self.allow_flag)
