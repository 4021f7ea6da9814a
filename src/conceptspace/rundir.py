"""The run directory: every path in it, and the only code that reads or writes its files.

```
config.yaml                               resolved config
run.json                                  seed, versions, command, device, status
metrics.jsonl                             training log, one row per logged step
metrics.json                              analysis of the default evaluation (merged by every stage that adds to it)
checkpoints/step=000001234.safetensors    weights at each checkpoint
resume.safetensors, resume.prev.safetensors
eval/<tag>/concept_probs.npz (+ .settings.json), eval/<tag>/elicitation.npz (+ .settings.json)
eval/<tag>/representation.npz (+ .settings.json)   every class prompt's internal representation per checkpoint
figures/, report.html                     figures and report of the default evaluation
eval/<tag>/metrics.json, eval/<tag>/figures/, eval/<tag>/report.html   the same for another evaluation (--tag)
sweep_status.json, sweep_config.yaml      written when the run is a point of a sweep
```

Every write is atomic (a temporary file in the same folder, flushed to disk, renamed over the target, the folder
flushed): a crash leaves the old file or the new one, never half of one. Arrays are npz without pickles, metadata
is JSON; nothing here imports torch.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import ConceptspaceError


class RunDirError(ConceptspaceError):
    """A run directory that is missing, incomplete or in the wrong state for the command."""


class RunDirLocked(RunDirError):
    """Another process is writing into the run directory."""


# ------------------------------------------------------------------------------------------ atomic writes


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write `path` through `write(file)` into a temporary file, fsync it, rename it over `path`, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut only once the folder is on disk
    finally:
        os.close(fd)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomic text write (UTF-8)."""
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomic JSON write, indented."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    """A JSON file; a missing or damaged one is a one-line RunDirError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: damaged JSON ({exc})") from None


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSON-lines log ([] when absent). A half-written last line (a kill or a full disk mid-write) is
    skipped with a warning (resuming rewrites that checkpoint's row); a damaged line elsewhere is an error."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    rows = []
    for i, ln in enumerate(lines):
        try:
            rows.append(json.loads(ln))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                logging.getLogger(__name__).warning("%s: skipping a damaged last line (a write was cut off)", path)
                break
            raise RunDirError(f"{path}: damaged line {i + 1} of {len(lines)}") from None
    return rows


# Arrays written or read in this process, by path, with the file's (mtime, size) when they were: the main job's
# stages hand their arrays forward through this instead of decompressing the file again; any change of the file on
# disk (another process, a damaged copy) invalidates the entry. Cached arrays are read-only.
_NPZ_MEMO: dict[str, tuple[tuple[int, int], dict[str, np.ndarray]]] = {}


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _remember(path: Path, arrays: dict[str, np.ndarray], copy: bool) -> dict[str, np.ndarray]:
    # The caller's arrays are copied (it may change them later); arrays just read from the file are not.
    frozen = {}
    for k, v in arrays.items():
        v = np.array(v, copy=True) if copy else v
        v.flags.writeable = False
        frozen[k] = v
    _NPZ_MEMO[str(path.resolve())] = (_stamp(path), frozen)
    return dict(frozen)


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Atomic compressed npz write (no pickled objects); the arrays stay at hand for the next stage."""
    path = atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))
    _remember(path, arrays, copy=True)
    return path


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an npz file, never unpickling; a missing or damaged file is a one-line RunDirError."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: not found")
    memo = _NPZ_MEMO.get(str(path.resolve()))
    if memo is not None and memo[0] == _stamp(path):
        return dict(memo[1])
    try:
        with np.load(path, allow_pickle=False) as z:
            return _remember(path, {k: z[k] for k in z.files}, copy=False)
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise RunDirError(f"{path}: damaged array file ({type(exc).__name__}: {exc}); rerun the command that wrote "
                          "it with --force") from None


# ------------------------------------------------------------------------------------------ one writer at a time

_HELD: dict[str, list] = {}  # run directories this process holds: [open lock file, depth]


@contextmanager
def locked(root: str | Path) -> Iterator[None]:
    """Hold the run directory's lock for the block: a second writer (another process) gets a one-line error naming
    the holder. The lock is the kernel's (flock), so a killed holder never leaves a stale lock behind; nested use in
    one process is allowed (a sweep point locks the run, then trains and evaluates it)."""
    root = Path(root)
    key = str(root.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    fh = open(root / ".lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise RunDirLocked(f"{root} is in use by {holder}; wait for it to finish (or stop it) before writing "
                           "here") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    fh.flush()
    _HELD[key] = [fh, 1]
    try:
        yield
    finally:
        del _HELD[key]
        if created and [p.name for p in root.iterdir()] == [".lock"]:
            (root / ".lock").unlink()  # a refused command leaves no folder it made behind
            root.rmdir()
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def writes_run(func: Callable) -> Callable:
    """Decorator: the function writes into the run directory given as its `run_dir` argument; hold its lock."""
    import functools
    import inspect

    sig = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with locked(sig.bind(*args, **kwargs).arguments["run_dir"]):
            return func(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------------------ paths


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory; `tag` names the evaluation (other sampler or probe settings)."""

    root: Path
    tag: str = "default"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def with_tag(self, tag: str) -> "RunDir":
        """The same run directory, another evaluation."""
        return RunDir(self.root, tag)

    config = property(lambda self: self.root / "config.yaml")
    info = property(lambda self: self.root / "run.json")
    log = property(lambda self: self.root / "metrics.jsonl")

    checkpoints = property(lambda self: self.root / "checkpoints")
    resume = property(lambda self: self.root / "resume.safetensors")
    resume_prev = property(lambda self: self.root / "resume.prev.safetensors")

    sweep_status = property(lambda self: self.root / "sweep_status.json")
    sweep_config = property(lambda self: self.root / "sweep_config.yaml")
    lock = property(lambda self: self.root / ".lock")

    def checkpoint(self, step: int) -> Path:
        """Path of the weights at a training step."""
        return self.checkpoints / f"step={step:09d}.safetensors"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval" / self.tag

    @property
    def _analysis_dir(self) -> Path:
        # The default evaluation's analysis sits at the top of the run; another tag's beside its arrays, so an
        # evaluation with other settings never replaces the default one's numbers.
        return self.root if self.tag == "default" else self.eval_dir

    @property
    def metrics(self) -> Path:
        return self._analysis_dir / "metrics.json"

    @property
    def figures(self) -> Path:
        return self._analysis_dir / "figures"

    @property
    def report(self) -> Path:
        return self._analysis_dir / "report.html"

    @property
    def concept_probs(self) -> Path:
        """The evaluation arrays of this tag."""
        return self.eval_dir / "concept_probs.npz"

    @property
    def trajectory_source(self) -> Path:
        """The evaluation arrays to read trajectories from: this tag's, or the default evaluation's for a tag that
        only holds an elicitation."""
        default = self.with_tag("default").concept_probs
        return self.concept_probs if self.concept_probs.is_file() or not default.is_file() else default

    @property
    def elicitation(self) -> Path:
        return self.eval_dir / "elicitation.npz"

    @property
    def representation(self) -> Path:
        return self.eval_dir / "representation.npz"

    @staticmethod
    def settings_of(arrays_path: Path) -> Path:
        """The settings file stored beside an arrays file (what the arrays depend on)."""
        return arrays_path.with_name(arrays_path.stem + ".settings.json")

    # ---------------------------------------------------------------------------------- reading and writing

    def rotate_resume(self) -> None:
        """Keep the latest resume state as the previous one before a new one is written (a rename: atomic)."""
        if self.resume.exists():
            os.replace(self.resume, self.resume_prev)

    def written_by_us(self) -> list[Path]:
        """Every file in the run directory that the tool wrote (any tag); nothing a user put there."""
        root = self.root
        top = [self.config, self.info, self.log, self.resume, self.resume_prev, self.sweep_status,
               self.sweep_config, root / "metrics.json", root / "report.html"]
        found = [p for p in top if p.is_file()]
        if self.checkpoints.is_dir():
            found += sorted(p for p in self.checkpoints.iterdir() if re.fullmatch(r"step=\d+\.safetensors", p.name))
        for folder in [root, *sorted((root / "eval").glob("*"))] if (root / "eval").is_dir() else [root]:
            if folder != root:
                found += [p for p in folder.iterdir() if p.is_file() and (
                    p.name in ("metrics.json", "report.html") or p.name.endswith((".npz", ".settings.json")))]
            figures = folder / "figures"
            if figures.is_dir():
                found += [p for p in figures.iterdir() if p.suffix in (".png", ".gif")]
        if (root / "tensorboard").is_dir():
            found += [p for p in (root / "tensorboard").iterdir() if p.name.startswith("events.out.tfevents")]
        return found + self.stale_temp_files()

    def stale_temp_files(self) -> list[Path]:
        """Temporary files of killed atomic writes (never read by anything)."""
        return [p for p in self.root.rglob(".*.tmp*") if p.is_file()]

    def clear(self) -> list[Path]:
        """Remove every file the tool wrote (and folders left empty by that); returns what was removed."""
        removed = self.written_by_us()
        for p in removed:
            p.unlink()
        for folder in sorted({p.parent for p in removed}, key=lambda p: -len(p.parts)):
            while folder != self.root and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent
        return removed

    def is_run(self) -> bool:
        """Whether the directory holds a run (config.yaml and run.json)."""
        return self.config.is_file() and self.info.is_file()

    def read_info(self) -> dict:
        """run.json (RunDirError when the directory is not a run)."""
        if not self.is_run():
            raise RunDirError(f"{self.root}: not a run directory (no config.yaml / run.json)")
        return read_json(self.info)

    def read_metrics(self) -> dict:
        """metrics.json, or {} before any analysis."""
        return read_json(self.metrics) if self.metrics.is_file() else {}

    def update_metrics(self, new: dict) -> dict:
        """Merge `new` into metrics.json (top-level keys replaced) and write it atomically; returns the whole."""
        merged = {**self.read_metrics(), **new}
        write_json(self.metrics, merged)
        return merged

    def read_log(self) -> list[dict]:
        """Rows of metrics.jsonl (the training log)."""
        return read_jsonl(self.log)


# ------------------------------------------------------------------------------------------ archives

# Files of a sweep or `paper run` folder (beside its run directories) that an archive keeps.
ARCHIVED_SWEEP_FILES = ("sweep.json", "sweep_results.json", "sweep_metrics.json", "paper_run.json", "reading.txt")


def archive_run(src: str | Path, dest: str | Path) -> list[Path]:
    """Copy a run's readings to `dest` (a new folder): config, run.json, training log, metrics, sweep marker and
    every evaluation's arrays and settings; no checkpoints, resume state, figures or report pages. Generated samples
    are kept for the last checkpoint only (`samples` (1, classes, n, 3, H, W), `samples_steps` (1,)). A few
    hundred kB at most: small enough for version control, and a sweep's analysis (`conceptspace analyze`) reads it
    like the run; the run's own report and any re-evaluation need the run directory. Returns the files written."""
    run, dest = RunDir(Path(src)), Path(dest)
    if not run.is_run():
        raise RunDirError(f"{run.root}: not a run directory (no config.yaml / run.json)")
    if dest.exists() and any(dest.iterdir()):
        raise RunDirError(f"{dest} exists and is not empty; archive into a new folder")
    keep = [run.config, run.info, run.log, run.sweep_status, run.sweep_config, run.root / "metrics.json"]
    if (run.root / "eval").is_dir():
        keep += sorted(p for p in (run.root / "eval").glob("*/*")
                       if p.is_file() and (p.suffix == ".npz" or p.name.endswith(".settings.json")
                                           or p.name == "metrics.json"))
    written = []
    for p in keep:
        if not p.is_file():
            continue
        target = dest / p.relative_to(run.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".npz":
            arrays = load_npz(p)
            if p.name == "concept_probs.npz" and "samples" in arrays and "samples_steps" not in arrays:
                arrays = {**arrays, "samples": arrays["samples"][-1:], "samples_steps": arrays["steps"][-1:]}
            save_npz(target, arrays)
        else:
            write_text(target, p.read_text())
        written.append(target)
    return written


def archive(src: str | Path, dest: str | Path) -> list[Path]:
    """Archive a run directory, or every finished run under a sweep / `paper run` folder (keeping the folder
    layout and the sweep files beside the runs), into `dest` (a new folder). Unfinished runs are left out: their
    readings are partial. Returns the run directories archived (their paths under `dest`)."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise RunDirError(f"{src}: not a directory")
    if dest.exists() and any(dest.iterdir()):
        raise RunDirError(f"{dest} exists and is not empty; archive into a new folder")
    if RunDir(src).is_run():
        archive_run(src, dest)
        return [dest]
    runs, folders = [], set()
    for info in sorted(src.rglob("run.json")):
        run = RunDir(info.parent)
        status = read_json(run.sweep_status)["status"] if run.sweep_status.is_file() else read_json(info)["status"]
        if not run.is_run() or status != "done":
            continue
        rel = run.root.relative_to(src)
        archive_run(run.root, dest / rel)
        runs.append(dest / rel)
        folders.update(rel.parents)
    for folder in sorted(folders):
        for name in ARCHIVED_SWEEP_FILES:
            if (src / folder / name).is_file():
                write_text(dest / folder / name, (src / folder / name).read_text())
    if not runs:
        raise RunDirError(f"{src}: no finished run to archive")
    return runs
