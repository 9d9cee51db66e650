"""The layers' one rule that imports can check: ``microclip``, ``studio`` and ``viz`` never import Gradio
(ARCHITECTURE.md), so the library, the app's services and the rendering run where Gradio is not installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules(package: str) -> list[str]:
    """Every module of a package, found on disk (a new module is checked without being listed here);
    ``__main__`` runs a command line when imported, so it is left out."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


SCRIPT = """
import importlib, sys
sys.modules["gradio"] = None  # `import gradio` now raises ImportError, as if it were not installed
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError as error:
        print(f"{name}: {error}")
"""


def test_the_library_the_services_and_the_rendering_import_without_gradio():
    names = [name for package in ("microclip", "studio", "viz") for name in modules(package)]
    assert {"microclip.explain", "studio.explore", "viz.explore"} <= set(names)
    # One interpreter for all (torch and open_clip are imported once).
    done = subprocess.run([sys.executable, "-c", SCRIPT, *names], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "", f"these modules do not import without Gradio:\n{done.stdout}"


def test_the_check_would_see_a_gradio_import(tmp_path):
    (tmp_path / "uses_gradio.py").write_text("import gradio\n")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, "json", "uses_gradio"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.startswith("uses_gradio: ") and "gradio" in done.stdout
