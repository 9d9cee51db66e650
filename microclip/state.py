"""Resumable run state without pickle: tensors, optimiser state and RNGs in safetensors, the rest as JSON.

Used by the self-training loop (``engine.fit``) and the toy world's pretraining, so a killed run of
either resumes to the weights an uninterrupted run ends with.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from microclip.files import atomic_write

_META_KEY = "run_state"
_RESERVED = ("optim.", "rng.")


def save_run_state(
    path: str | Path, tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, meta: dict
) -> None:
    """``tensors`` (e.g. the trainable weights), the optimiser's state, the RNGs and ``meta``, atomically."""
    reserved = [k for k in tensors if k.startswith(_RESERVED)]
    if reserved:
        raise ValueError(f"tensor names {reserved} use the prefixes {_RESERVED} the run state keeps for itself")
    out = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    saved = optimizer.state_dict()
    for index, values in saved["state"].items():
        for key, value in values.items():
            out[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    out["rng.torch"] = torch.get_rng_state()
    np_state = np.random.get_state()
    text = json.dumps(
        {
            "meta": meta,
            "optimizer_param_groups": saved["param_groups"],
            "python_rng": random.getstate(),
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }
    )
    atomic_write(path, lambda tmp: save_file(out, str(tmp), metadata={_META_KEY: text}))


def load_run_state(path: str | Path, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Restore the optimiser and the RNGs from ``path``; return the saved tensors and ``meta``."""
    with safe_open(str(path), framework="pt") as reader:
        text = (reader.metadata() or {}).get(_META_KEY)
    if text is None:
        raise ValueError(f"{path} is not a resumable run state (written by another version?); start a new run")
    state = json.loads(text)
    stored = load_file(str(path))
    optim: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in stored.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": optim, "param_groups": state["optimizer_param_groups"]})
    torch.set_rng_state(stored["rng.torch"])
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy_rng"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    tensors = {k: v for k, v in stored.items() if not k.startswith(_RESERVED)}
    return tensors, state["meta"]
