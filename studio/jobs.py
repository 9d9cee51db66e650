"""Background adaptation jobs: one run at a time per server, a bounded waiting line, live state.

The Gradio callbacks only submit, poll, stop and save. Runs go through a one-worker
``ThreadPoolExecutor`` (its queue is the waiting line; a waiting job is cancelled through its
future), so a long run never blocks Explore. The training itself is :func:`microclip.adapt.prepare`
+ :meth:`~microclip.adapt.Adaptation.fit`, as on the command line; Stop is the ``threading.Event``
the engine polls between steps. What the UI reads is an immutable :class:`JobSnapshot` that the
worker replaces as the run progresses.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from microclip.adapt import Adaptation, prepare
from microclip.checkpoint import CheckpointMeta, epoch_file, save_adapted
from microclip.data import DescriptionsError, ImageDataset, build_dataset, load_descriptions
from microclip.data.archives import extract_archive, find_data_root
from microclip.data.descriptions import descriptions_for, refuse_unknown
from microclip.data.transforms import test_transform
from microclip.drift import epoch_signs, per_class_record
from microclip.engine import Callback, FitState
from microclip.errors import USER_ERRORS
from microclip.explain import Explanation, explain_batch
from microclip.files import shareable_tempdir, slug
from microclip.labeling import Debiasing
from microclip.model import MicroCLIP
from microclip.prepare import cap_evenly, parse_class_names, readable
from microclip.recipe import reported_branch
from studio.about import labels_notes
from studio.adapt_request import AdaptLimits, AdaptRequest
from studio.epochs import labels_fact
from studio.inflight import INFERENCE_IN_FLIGHT
from studio.registry import SAVED_AT_KEY, SAVED_NAME_KEY
from viz.runs import NO_PROBES_HTML, NO_RUN_HTML
from viz.runs import probes_html as runs_probes_html
from viz.runs import progress_html as runs_progress_html
from viz.runs import skipped_markdown as runs_skipped_markdown

log = logging.getLogger(__name__)
SHOWN_SHIFTS = 12  # the status box lists the shift's length after at most this many of the latest epochs
MAX_KEPT_EPOCHS = 12  # a run keeps its start and at most this many epochs' tensors for Explore's epoch view
TRAINING_YIELD = 1.0  # while requests run, pause this many step-times after each step
MAX_YIELD_S = 2.0


def running_on_spaces() -> bool:
    """HuggingFace Spaces sets SPACE_ID; there, server paths must not be readable by visitors."""
    return bool(os.environ.get("SPACE_ID"))


SPACE_STORAGE = Path("/data")  # a HuggingFace Space's persistent storage, when the Space has it


def default_runs_dir() -> Path:
    """Where saved adaptations go when ``--runs_dir`` is not given: ``/data/microclip-runs`` on a Space with
    persistent storage (the rest of a Space's disk is wiped on restart), else ``./runs``."""
    if running_on_spaces() and SPACE_STORAGE.is_dir() and os.access(SPACE_STORAGE, os.W_OK):
        return SPACE_STORAGE / "microclip-runs"
    return Path("runs")


def usable_runs_dir(folder: str | Path) -> Path | None:
    """``folder``, created if needed, when this process can write there; None (and one log line) otherwise."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.warning(
            "runs folder %s cannot be created (%s); saved models will not survive a restart",
            folder,
            error.strerror or error,
        )
        return None
    if not os.access(folder, os.W_OK | os.X_OK):
        log.warning("runs folder %s is not writable; saved models will not survive a restart", folder)
        return None
    return folder


class JobStatus(str, Enum):
    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING = "running"
    STOPPING = "stopping"
    DONE = "done"
    STOPPED = "stopped"
    CANCELLED = "cancelled"
    ERROR = "error"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.STOPPED, JobStatus.CANCELLED, JobStatus.ERROR)


@dataclass(frozen=True)
class Probes:
    """SOAP explanations of the pinned probe images at one point of the run."""

    step: int
    explanations: list[Explanation]


@dataclass(frozen=True)
class JobSnapshot:
    """One job's state as the UI sees it. The worker replaces it whole (new lists, never appends), so a
    snapshot a reader holds stays consistent without a copy."""

    job_id: str
    status: JobStatus = JobStatus.QUEUED
    message: str = "waiting for the running adaptation to finish"
    position: int = 0  # 0: running or finished; n: n-th in the waiting line
    step: int = 0
    total_steps: int = 0
    # one dict per step: step, loss, ce, fair, pl_conf, agree_/shared_ cls and fg, pl_acc (labelled data), lr
    metrics: list[dict] = field(default_factory=list)
    # (epoch, length) as each epoch ends: the one shift every image's [FG] has taken on since the start (no labels)
    shifts: list[tuple[int, float]] = field(default_factory=list)
    # (epoch, {class: count}) as the latest epoch ended: how many training images its labels gave each class
    labels: tuple[int, dict[str, int]] | None = None
    # where the data is labelled by folders: how many of those labels were right (self-training does not use them)
    labels_right: dict[str, int] | None = None
    classes: list[str] = field(default_factory=list)
    n_images: int = 0
    labelled: bool = False
    mode: str = "microclip"  # where the run's labels come from (AdaptRequest.mode)
    debiasing: Debiasing = Debiasing()  # how a running class marginal comes off them (strength 0: the reference's)
    probe_images: list[np.ndarray] = field(default_factory=list)  # (S, S, 3) uint8: each probe's input crop
    probe_labels: list[str] = field(default_factory=list)
    probes_before: Probes | None = None
    probes_latest: Probes | None = None  # during the run on request, and at its end
    skipped: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0  # since the job left the waiting line
    train_elapsed_s: float = 0.0  # since its first training step started
    can_save: bool = False
    saved_path: Path | None = None
    saved_name: str | None = None
    error: str | None = None


class QueueFullError(RuntimeError):
    """The waiting line is full; the message says how long it is."""


class _StopRequested(Exception):
    """Raised inside the worker when Stop arrives before training started."""


@dataclass
class _Job:
    """The worker's side of a job: its request, its future, its signals and what saving needs."""

    request: AdaptRequest
    view: JobSnapshot
    future: Future | None = None
    started: float | None = None
    train_started: float | None = None
    ended: float | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    probe_request: threading.Event = field(default_factory=threading.Event)
    # What saving needs, kept after the run instead of the whole model (a few MB for ViT-B/32).
    adapted: dict[str, torch.Tensor] | None = None
    meta: CheckpointMeta | None = None
    epochs: dict[int, KeptEpoch] = field(default_factory=dict)  # the start (0) and kept epochs


class AdaptationRunner:
    """Runs adaptations one at a time in a background thread, with at most ``max_waiting`` queued.

    ``registry`` supplies the base models (the base of the chosen entry is adapted afresh) and
    receives saved checkpoints. ``workdir`` holds per-job temporary folders (removed when the job
    ends) and generated toy data; ``runs_dir`` the saved checkpoints (default: ``workdir/checkpoints``;
    the app passes its persistent runs folder, ``--runs_dir``).
    """

    def __init__(
        self,
        registry,
        workdir: Path,
        max_waiting: int = 2,
        limits: AdaptLimits | None = None,
        device: str | torch.device | None = None,
        allow_local_paths: bool | None = None,
        keep_finished: int = 8,
        runs_dir: str | Path | None = None,
    ) -> None:
        self.registry = registry
        self.workdir = Path(workdir)
        self.runs_dir = Path(runs_dir) if runs_dir is not None else self.workdir / "checkpoints"
        self.max_waiting = int(max_waiting)
        self.limits = limits or AdaptLimits()
        self.device = torch.device(device) if device is not None else getattr(registry, "device", torch.device("cpu"))
        self.allow_local_paths = (not running_on_spaces()) if allow_local_paths is None else allow_local_paths
        self.keep_finished = keep_finished
        self._lock = threading.Lock()  # guards _jobs and every job's view
        self._jobs: dict[str, _Job] = {}  # in submission order
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adaptation")
        self._counter = itertools.count(1)

    @property
    def checkpoint_dir(self) -> Path:
        return self.runs_dir

    # ------------------------------------------------------------------ public API

    def submit(self, request: AdaptRequest) -> str:
        """Queue ``request``; returns its job id. Raises ValueError (bad settings) or QueueFullError."""
        request.check(self.limits)
        if request.source == "folder" and not self.allow_local_paths:
            raise ValueError("reading folders on the server is turned off here; upload a zip of images instead")
        with self._lock:
            waiting = sum(job.view.status == JobStatus.QUEUED for job in self._jobs.values())
            # A job submitted to an idle worker is about to run, so it does not count as waiting.
            allowed = self.max_waiting + (0 if self._busy() else 1)
            if waiting >= allowed:
                raise QueueFullError(
                    f"an adaptation is running and {self.max_waiting} more are waiting "
                    f"(the limit is {self.max_waiting}); try again when one has finished"
                )
            job_id = f"{next(self._counter)}-{uuid.uuid4().hex[:8]}"
            job = _Job(request=request, view=JobSnapshot(job_id=job_id))
            self._jobs[job_id] = job
            self._prune()
            job.future = self._executor.submit(self._run, job)
        log.info("adaptation job %s queued (%s)", job_id, request.source)
        return job_id

    def status(self, job_id: str) -> JobSnapshot:
        """The job's current snapshot; KeyError with a clear message for an unknown id."""
        with self._lock:
            job = self._get(job_id)
            queued = [j for j in self._jobs.values() if j.view.status == JobStatus.QUEUED]
            position = queued.index(job) + (1 if self._busy() else 0) if job in queued else 0
            now = time.monotonic()
            return replace(
                job.view,
                position=position,
                elapsed_s=0.0 if job.started is None else (job.ended or now) - job.started,
                train_elapsed_s=0.0 if job.train_started is None else (job.ended or now) - job.train_started,
                can_save=job.adapted is not None,
            )

    def stop(self, job_id: str) -> JobSnapshot:
        """Cancel a waiting job, or end a running one cleanly after its current step (state kept)."""
        with self._lock:
            job = self._get(job_id)
            if job.view.status == JobStatus.QUEUED and job.future.cancel():
                self._set(job, status=JobStatus.CANCELLED, message="cancelled before it started")
            elif not job.view.status.finished:
                job.stop_event.set()
                self._set(job, status=JobStatus.STOPPING, message="stopping after the current step")
        return self.status(job_id)

    def request_probes(self, job_id: str) -> None:
        """Ask for fresh probe maps at the next step end (they are computed by the training thread)."""
        with self._lock:
            self._get(job_id).probe_request.set()

    def curves_file(self, job_id: str) -> Path:
        """The run's curves so far as a CSV file in a fresh folder: a row per step, a column per logged value (the
        loss and its terms, the labels' confidence and, for data labelled by folders, their accuracy, how often each
        branch alone gives the fused answer, the learning rate), empty where a step did not log it."""
        snapshot = self.status(job_id)
        if not snapshot.metrics:
            raise ValueError("the run has not finished a step yet: there are no curves to download")
        frame = pd.DataFrame(snapshot.metrics)
        frame = frame[["step", *(column for column in frame.columns if column != "step")]]
        (self.workdir / "curves").mkdir(parents=True, exist_ok=True)
        path = shareable_tempdir(f"curves-{job_id}-", self.workdir / "curves") / f"adapt-{job_id}-curves.csv"
        frame.to_csv(path, index=False)
        return path

    def save(self, job_id: str, name: str | None = None) -> Path:
        """Write the job's adapted checkpoint, register it under ``name``, and return its path.

        Saving twice returns the same file. Only a run that has ended (done or stopped) can be saved.
        """
        with self._lock:
            job = self._get(job_id)
            if job.view.saved_path is not None:
                return job.view.saved_path
            if job.adapted is None or job.meta is None:
                if not job.view.status.finished:
                    raise ValueError(
                        "the run is still going: press Stop (the last completed step is kept) "
                        "or wait for it to finish, then save"
                    )
                raise ValueError(
                    f"nothing to save: the job ended as '{job.view.status.value}' without an adapted model"
                )
            adapted, meta = job.adapted, job.meta
            taken = set(self.registry.names())
            base_name = (name or "").strip() or f"adapted · {meta.training.get('dataset', 'data')} · job {job_id}"
            display = base_name
            for suffix in itertools.count(2):
                if display not in taken:
                    break
                display = f"{base_name} ({suffix})"
            path = self.checkpoint_dir / f"{_slug(display)}.safetensors"
            for suffix in itertools.count(2):  # never overwrite a run saved earlier (e.g. before a restart)
                if not path.exists():
                    break
                path = self.checkpoint_dir / f"{_slug(display)}-{suffix}.safetensors"
            # The name and the time go into the file, so the runs folder lists it the same way after a restart.
            saved_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
            meta = replace(meta, training={**meta.training, SAVED_NAME_KEY: display, SAVED_AT_KEY: saved_at})
            # The epochs first: the checkpoint appearing is what makes the runs folder list the run.
            folder = path.with_name(f"{path.stem}-epochs")  # where epochs_beside looks for them
            for epoch, kept in job.epochs.items():
                epoch_meta = replace(meta, metrics={"epoch": epoch, **kept.logged}, drift=kept.drift)
                save_adapted(epoch_file(folder, epoch), kept.state, epoch_meta)
            save_adapted(path, adapted, meta)  # atomic (microclip.files.atomic_write)
            self.registry.add_checkpoint(path, display)
            self._set(job, saved_path=path, saved_name=display, message=f"saved as '{display}'")
        log.info("adaptation job %s saved to %s", job_id, path)
        return path

    def wait(self, job_id: str, timeout: float | None = None) -> JobSnapshot:
        """Block until the job has finished (tests and scripts); returns its final snapshot."""
        with self._lock:
            future = self._get(job_id).future
        done, _ = wait([future], timeout=timeout)
        if not done:
            raise TimeoutError(f"job {job_id} still {self.status(job_id).status.value} after {timeout} s")
        return self.status(job_id)

    # ------------------------------------------------------------------ bookkeeping (under the lock)

    def _get(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id or "")
        if job is None:
            raise KeyError(
                f"no adaptation job {job_id!r} (the server may have restarted, or it was pruned); start a new one"
            )
        return job

    def _busy(self) -> bool:
        return any(job.started is not None and job.ended is None for job in self._jobs.values())

    def _prune(self) -> None:
        """Forget the oldest finished jobs beyond ``keep_finished`` (their saved files stay on disk)."""
        finished = [job_id for job_id, job in self._jobs.items() if job.view.status.finished]
        for job_id in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._jobs[job_id]

    @staticmethod
    def _set(job: _Job, **values) -> None:
        job.view = replace(job.view, **values)

    def _update(self, job: _Job, **values) -> None:
        with self._lock:
            self._set(job, **values)

    # ------------------------------------------------------------------ the worker

    def _run(self, job: _Job) -> None:
        """The executor's task: run the job in a temporary folder that is gone before it is reported finished."""
        with self._lock:
            job.started = time.monotonic()
            self._set(job, status=JobStatus.PREPARING, message="preparing the data")
        (self.workdir / "jobs").mkdir(parents=True, exist_ok=True)
        tmp = shareable_tempdir(f"job-{job.view.job_id}-", self.workdir / "jobs")
        try:
            final = self._train(job, tmp)
        except _StopRequested:
            final = {"status": JobStatus.STOPPED, "message": "stopped before training started; nothing to save"}
        except Exception as error:  # noqa: BLE001 - a job's failure is reported, never raised into the pool
            final = self._failure(job, error)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        with self._lock:
            job.adapted, job.meta = final.pop("adapted", None), final.pop("meta", None)
            job.epochs = final.pop("epochs", {})
            job.ended = time.monotonic()
            self._set(job, **final)

    def _failure(self, job: _Job, error: Exception) -> dict:
        if isinstance(error, (*USER_ERRORS, KeyError)):
            text = str(error).strip("'\"")  # user errors: their message says what to do, in one line
            log.warning("adaptation job %s: %s", job.view.job_id, text)
        else:
            log.exception("adaptation job %s failed", job.view.job_id)
            text = f"{type(error).__name__}: {error}"
        return {"status": JobStatus.ERROR, "error": text, "message": text}

    def _check_stop(self, job: _Job) -> None:
        if job.stop_event.is_set():
            raise _StopRequested

    def _train(self, job: _Job, tmp: Path) -> dict:
        """Prepare, train and explain; returns the job's final fields."""
        request = job.request
        dataset, data_name, skipped = self._prepare_data(job, tmp)
        recipe = request.recipe(data_name, len(dataset))
        self._update(
            job,
            classes=list(dataset.classes),
            n_images=len(dataset),
            labelled=dataset.has_labels,
            mode=request.mode or "microclip",
            debiasing=recipe.debiasing,
            skipped=list(skipped),
            message=f"{len(dataset)} images, {len(dataset.classes)} classes; building the model",
        )
        self._check_stop(job)
        loaded = self.registry.get(request.model_name)
        spec = loaded.model.base
        self._update(job, message=f"building the model from {spec.describe()}")
        run = prepare(
            dataset,
            recipe,
            (spec.clip_model, spec.pretrained or None),
            loaded.templates,
            self._descriptions(request, list(dataset.classes), loaded.descriptions),
            request.method(loaded.model.config),
            base_seed=spec.seed or 0,
            device=self.device,
            provenance={
                "dataset": data_name,
                "source": request.source,
                "n_images": len(dataset),
                "labelled": dataset.has_labels,
                "app": "microCLIP Studio adapt",
                "base_entry": request.model_name,
            },
        )
        self._check_stop(job)
        probe_tensors = self._pin_probes(job, run.model, dataset)
        with self._lock:  # Stop may arrive at any moment: check and switch state atomically
            self._check_stop(job)
            job.train_started = time.monotonic()
            self._set(job, status=JobStatus.RUNNING, message="training")
        epochs = _EpochStates(run)
        # every epoch's shift: the kept epochs carry their own, for Explore's epoch view
        result = run.fit([_LiveCallback(self, job, probe_tensors), epochs], stop=job.stop_event, shift_each_epoch=True)
        if run.model.fg_shift is None:  # the last epoch's end measured it, unless the run was stopped mid-epoch
            self._update(job, message="measuring the shift self-training gave every image's [FG] (no labels)")
        drift = run.measure_drift()  # before the probes: their explanations then show [FG] with and without it
        if result.stopped:  # Stop ends the run mid-epoch: the model saved is that partial epoch's
            epochs.kept[len(result.history) + 1] = KeptEpoch(run.model.adapted_state(), {}, drift)
        final = _explain_probes(run.model, probe_tensors, result.global_step)
        last = job.view.metrics[-1] if job.view.metrics else {}
        meta = run.checkpoint_meta(
            result, metrics={f"final_{k}": last[k] for k in ("loss", "pl_conf", "pl_acc") if k in last}, drift=drift
        )
        done = "stopped" if result.stopped else "finished"
        return {
            "adapted": run.model.adapted_state(),
            "meta": meta,
            "epochs": epochs.kept,
            "probes_latest": final or job.view.probes_latest,
            "status": JobStatus.STOPPED if result.stopped else JobStatus.DONE,
            "message": f"{done} after {result.global_step} of {job.view.total_steps} steps "
            f"({result.seconds:.0f} s){_shift_note(run.model)}; save the checkpoint to use it in Explore",
        }

    # ------------------------------------------------------------------ job phases

    def _prepare_data(self, job: _Job, tmp: Path) -> tuple[ImageDataset, str, list[tuple[str, str]]]:
        """The data set (capped, undecodable images dropped), its name, and what was skipped."""
        request = job.request
        skipped: list[tuple[str, str]] = []
        if request.source == "toybirds":
            self._update(job, message="generating the toy birds (first time only)")
            dataset = build_dataset(
                "toybirds",
                "train",
                root=self.workdir / "toydata",
                classnames=request.classnames,
                n_per_class=request.toy_per_class,
                seed=request.seed,
            )
            name = "toybirds"
        elif request.source == "zip":
            self._update(job, message="extracting the zip")
            extracted = extract_archive(request.path, tmp / "data", max_files=self.limits.max_images)
            skipped += extracted.skipped
            root = find_data_root(tmp / "data")
            dataset = build_dataset(str(root), "train", classnames=request.classnames)
            name = Path(request.path).stem
        else:
            folder = Path(request.path).expanduser()
            if not folder.is_dir():
                raise FileNotFoundError(f"no folder {folder} on the server")
            dataset = build_dataset(str(folder), "train", classnames=request.classnames)
            name = folder.name
        if len(dataset.classes) < 2:
            raise ValueError(
                f"adaptation needs at least two classes; the data has {len(dataset.classes)} "
                f"({', '.join(dataset.classes)}); use class folders or type the class names"
            )
        samples, note = cap_evenly(dataset.samples, self.limits.max_images)
        if note:
            skipped.append(("(image cap)", note))

        def every(index: int) -> None:
            if index % 20 == 0:
                self._check_stop(job)
                self._update(job, message=f"checking images {index}/{len(samples)}")

        good, unreadable = readable(samples, dataset.max_pixels, dataset.root, every)
        skipped += unreadable
        if not good:
            raise ValueError(f"none of the {len(samples)} images could be read; e.g. {skipped[-1][1]}")
        return ImageDataset(good, list(dataset.classes), name=dataset.name, root=dataset.root), name, skipped

    @staticmethod
    def _descriptions(
        request: AdaptRequest, classes: list[str], known: dict[str, list[str]]
    ) -> dict[str, list[str]] | None:
        """The uploaded or typed descriptions, else the chosen model's own for these classes, else templates."""
        if request.descriptions:
            refuse_unknown(request.descriptions, classes, "the run's classes")
        if request.descriptions_path or request.descriptions:
            try:
                if request.descriptions:
                    return descriptions_for(
                        request.descriptions, classes, "the typed text", request.allow_missing_descriptions
                    )
                return load_descriptions(
                    request.descriptions_path, classes, allow_missing=request.allow_missing_descriptions
                )
            except DescriptionsError as error:
                text = str(error).replace("pass --allow_missing_descriptions", "tick 'allow missing descriptions'")
                raise DescriptionsError(text) from None
        own = {c: known[c] for c in classes if known.get(c)}
        return own or None  # classes without an entry use templates (build_head_weights)

    def _pin_probes(self, job: _Job, model: MicroCLIP, dataset: ImageDataset) -> torch.Tensor | None:
        """Evenly spaced probe images (so several classes show), explained before any training."""
        n = min(job.request.n_probes, len(dataset))
        if n == 0:
            return None
        indices = np.linspace(0, len(dataset) - 1, n).round().astype(int)
        transform = test_transform(model.backbone.image_size)
        tensors = torch.stack([transform(dataset[int(i)][0]) for i in indices])  # (P, 3, S, S)
        labels = [
            dataset.classes[dataset.samples[i][1]] if dataset.samples[i][1] >= 0 else Path(dataset.samples[i][0]).name
            for i in indices
        ]
        images = [(t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for t in tensors]
        before = _explain_probes(model, tensors, 0)
        self._update(job, probe_images=list(images), probe_labels=list(labels), probes_before=before)
        return tensors


class _LiveCallback(Callback):
    """Feeds the job's live state from the engine's events; explains the probes when asked."""

    def __init__(self, runner: AdaptationRunner, job: _Job, probes: torch.Tensor | None) -> None:
        self.runner, self.job, self.probes = runner, job, probes
        self.step_started = time.monotonic()

    def on_fit_start(self, state: FitState) -> None:
        self.runner._update(self.job, total_steps=state.total_steps)
        self.step_started = time.monotonic()

    def on_step_end(self, state: FitState, metrics: dict) -> None:
        self._yield_to_requests(time.monotonic() - self.step_started)
        self.step_started = time.monotonic()
        self._record(state, metrics)

    def on_epoch_end(self, state: FitState, metrics: dict) -> None:
        if "train_labels_per_class" in metrics:
            right = metrics.get("train_labels_right_per_class")
            self.runner._update(
                self.job,
                labels=(int(metrics["epoch"]), dict(metrics["train_labels_per_class"])),
                labels_right=dict(right) if right is not None else None,
            )
        if "train_shift_fg" in metrics:
            with self.runner._lock:
                shifts = [*self.job.view.shifts, (int(metrics["epoch"]), float(metrics["train_shift_fg"]))]
                self.runner._set(self.job, shifts=shifts)

    def _yield_to_requests(self, step_seconds: float) -> None:
        """While Explore or Compare requests run, pause after each step for a share of its time, so a run
        takes at most 1 / (1 + TRAINING_YIELD) of a core from them (bench/app.py: without it Explore kept
        ~0.6 of its throughput beside a run on 2 cores). Stop still ends the pause at once."""
        if INFERENCE_IN_FLIGHT.busy:
            self.job.stop_event.wait(min(TRAINING_YIELD * step_seconds, MAX_YIELD_S))

    def _record(self, state: FitState, metrics: dict) -> None:
        row = {"step": state.global_step, **{k: float(v) for k, v in metrics.items()}}
        with self.runner._lock:
            view = self.job.view
            message = (
                f"training: step {state.global_step} of {state.total_steps}"
                if view.status == JobStatus.RUNNING
                else view.message
            )
            self.runner._set(self.job, metrics=[*view.metrics, row], step=state.global_step, message=message)
        if (
            self.job.probe_request.is_set()
            and not self.job.stop_event.is_set()
            and state.global_step < state.total_steps
        ):
            self.job.probe_request.clear()
            self.runner._update(self.job, probes_latest=_explain_probes(state.model, self.probes, state.global_step))


@dataclass(frozen=True)
class KeptEpoch:
    """One epoch a run keeps for Explore's epoch view: its adapted tensors, what it logged for the epoch file's metrics
    (the label-free signs, the labels each class got) and its checkpoint ``drift`` (`[FG]`'s shift then; none at the
    start)."""

    state: dict[str, torch.Tensor]
    logged: dict
    drift: dict


class _EpochStates(Callback):
    """The adapted tensors as the run starts and as its epochs end, for Explore's epoch view once the run is saved:
    every epoch when there are at most ``MAX_KEPT_EPOCHS``, else every k-th and the last (a small data set can
    make an epoch of every step, and each kept epoch of a ViT-B/32 is a few MB)."""

    def __init__(self, run: Adaptation) -> None:
        self.run = run
        self.kept: dict[int, KeptEpoch] = {}
        self.stride, self.last = 1, 0

    def on_fit_start(self, state: FitState) -> None:
        self.last = math.ceil(state.total_steps / max(1, state.steps_per_epoch))
        self.stride = max(1, math.ceil(self.last / MAX_KEPT_EPOCHS))
        self.kept[0] = KeptEpoch(state.model.adapted_state(), {}, {})

    def on_epoch_end(self, state: FitState, metrics: dict) -> None:
        epoch = int(metrics["epoch"])
        if epoch % self.stride == 0 or epoch == self.last:
            logged = epoch_signs(metrics) | per_class_record(metrics)
            self.kept[epoch] = KeptEpoch(state.model.adapted_state(), logged, self.run.current_drift())


def _shift_note(model: MicroCLIP) -> str:
    """The run's `[FG]` shift in the final message (Explore shows `[FG]` with and without it)."""
    if model.fg_shift is None:
        return ""
    return f"; every image's [FG] moved by one shared shift of length {float(model.fg_shift.norm()):.2f}"


def _explain_probes(model: MicroCLIP, tensors: torch.Tensor | None, step: int) -> Probes | None:
    if tensors is None:
        return None
    return Probes(step=step, explanations=explain_batch(model, tensors))


def _slug(text: str) -> str:
    return slug(text, "adapted")


def parse_classnames(text: str | Sequence[str] | None) -> list[str] | None:
    """Typed class names (:func:`microclip.prepare.parse_class_names`); None when empty (use the folder names)."""
    return parse_class_names(text) or None


def snapshot_summary(snapshot: JobSnapshot) -> str:
    """One line for the status box."""
    if snapshot.status == JobStatus.QUEUED and snapshot.position == 0:
        return "starting"
    if snapshot.status == JobStatus.QUEUED:
        return f"queued: position {snapshot.position} in the waiting line"
    if snapshot.status in (JobStatus.RUNNING, JobStatus.STOPPING) and snapshot.total_steps:
        rate = snapshot.train_elapsed_s / max(snapshot.step, 1)
        left = rate * (snapshot.total_steps - snapshot.step) if snapshot.step else math.nan
        eta = f", about {left:.0f} s left" if math.isfinite(left) else ""
        return f"{snapshot.status.value}: step {snapshot.step}/{snapshot.total_steps}{eta}"
    if snapshot.message.startswith(snapshot.status.value):
        return snapshot.message
    return f"{snapshot.status.value}: {snapshot.message}"


# ------------------------------------------------------------------ a snapshot as the Adapt tab shows it


def status_markdown(snapshot: JobSnapshot | None) -> str:
    """The status box: the summary line, the data, and where a saved checkpoint went."""
    if snapshot is None:
        return "No run yet: choose the data and press **Start**."
    text = f"**{snapshot_summary(snapshot)}**"
    if snapshot.classes:
        kind = "labelled by folders" if snapshot.labelled else "unlabelled"
        text += f"  \n{snapshot.n_images} images, {len(snapshot.classes)} classes ({kind})"
    if snapshot.shifts:
        shown = snapshot.shifts[-SHOWN_SHIFTS:]
        lengths, first = ", ".join(f"{length:.2f}" for _, length in shown), shown[0][0]
        text += (
            f"  \n`[FG]`'s shared shift (each image's `[FG]` has length 1; no labels), after epoch {first} on: "
            f"{lengths}"
        )
    text += "".join(f"  \n{note}" for note in labels_notes(snapshot.mode, snapshot.debiasing))
    if snapshot.labels is not None and snapshot.mode != "fully_supervised":  # the truth's counts teach nothing
        text += "  \n" + labels_fact(snapshot.labels[1], snapshot.labels[0])[0]
        if snapshot.labels_right is not None:
            right, total = sum(snapshot.labels_right.values()), sum(snapshot.labels[1].values())
            text += (
                f" Checked against the folders' classes (self-training does not use them): {right} of {total} right."
            )
    if snapshot.saved_name:
        text += (
            f"  \nsaved as **{snapshot.saved_name}** (in the runs folder, listed again after a restart). "
            "Explore and the Walkthrough keep the model they show until you press **Use it in Explore** "
            "or pick it in their Model list."
        )
    return text


def progress_html(snapshot: JobSnapshot | None) -> str:
    """The progress bar of the run (``viz.runs``)."""
    if snapshot is None:
        return NO_RUN_HTML
    return runs_progress_html(snapshot.step, snapshot.total_steps, snapshot.elapsed_s)


def probes_html(snapshot: JobSnapshot | None) -> str:
    """The probe cards: each probe's SOAP map before training and at the latest point (``viz.runs``)."""
    if snapshot is None or snapshot.probes_before is None:
        return NO_PROBES_HTML
    latest = snapshot.probes_latest
    pending = "no maps" if snapshot.status.finished else "latest: at the end of the run, or press Refresh maps"
    moments = [
        ("before", snapshot.probes_before.explanations),
        (f"step {probes_step(latest)}", latest.explanations if latest else None),
    ]
    branch = reported_branch(snapshot.mode)  # the answer the run trains and reports
    return runs_probes_html(snapshot.probe_images, snapshot.probe_labels, moments, pending, branch)


def probes_step(probes: Probes | None) -> int | None:
    return None if probes is None else probes.step


def probes_key(snapshot: JobSnapshot) -> tuple:
    """What the probe cards show: they are drawn again only when it changes."""
    finished = snapshot.status.finished
    return snapshot.job_id, probes_step(snapshot.probes_before), probes_step(snapshot.probes_latest), finished


def skipped_markdown(snapshot: JobSnapshot | None) -> str:
    return runs_skipped_markdown(snapshot.skipped) if snapshot else ""


__all__ = [
    "AdaptLimits",
    "AdaptRequest",
    "AdaptationRunner",
    "JobSnapshot",
    "JobStatus",
    "Probes",
    "QueueFullError",
    "default_runs_dir",
    "parse_classnames",
    "probes_html",
    "probes_key",
    "progress_html",
    "skipped_markdown",
    "snapshot_summary",
    "status_markdown",
    "usable_runs_dir",
]
