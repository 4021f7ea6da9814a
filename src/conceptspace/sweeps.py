"""Sweeps: a YAML grid of configs, one run directory per point, run on an existing engine.

Spec (`configs/sweeps/*.yaml`):

    base: ../2x2.yaml            # a config file (relative to the spec) or an inline mapping
    set: {train.steps: 3000}     # fixed overrides for every point (optional)
    grid:                        # cartesian product of these axes
      data.concepts.color.sep: [0.1, 0.2, 0.4, 0.8]
      seed: [0, 1, 2]
    zip:                         # optional: each entry is a group of axes varied together
      - {data.concepts.size.sep: [0.2, 0.4], train.steps: [3000, 4000]}

Every point runs `conceptspace run` (train, evaluate, elicit, report) in `OUT/<name>` with a readable name such as
`color_sep=0.2,seed=1`. Executors: `local` (a process pool, one single-threaded run per core), `slurm` (submitit
job arrays; `slurm-local` runs submitit's local executor), `dask` (dask.distributed: a scheduler address, or a
LocalCluster on 127.0.0.1). A run is skipped when finished, resumed when killed (its checkpoints stay), reported
with its error when it fails, and guarded by a lock so two sweeps on one directory never run it twice at once.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import ExperimentConfig, apply_overrides, config_from_dict, config_to_yaml
from .errors import ConceptspaceError
from .logs import ensure_logging
from .rundir import RunDir, RunDirLocked, locked, read_json, write_json, write_text

logger = logging.getLogger(__name__)

DONE, FAILED, LOCKED = "done", "failed", "locked"
EXECUTORS = ("local", "slurm", "slurm-local", "dask")


class SweepError(ConceptspaceError):
    """A sweep spec or sweep directory that cannot be used."""


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep: its directory name, the overrides that define it and the resolved config."""

    name: str
    overrides: dict[str, Any]
    config: ExperimentConfig


def short_key(key: str) -> str:
    """'data.concepts.color.sep' -> 'color_sep'; 'seed' -> 'seed'; 'data.mask.0.p' -> 'mask_p'."""
    parts = [p for p in key.split(".") if not p.isdigit()]
    return "_".join(parts[-2:])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(_fmt(v) for v in value)
    return str(value)


def point_name(overrides: dict[str, Any]) -> str:
    """Readable, filesystem-safe run name: `color_sep=0.2,seed=1`."""
    name = ",".join(f"{short_key(k)}={_fmt(v)}" for k, v in overrides.items())
    return name.replace("/", "_").replace(" ", "") or "base"


def load_spec(path: str | Path) -> dict:
    """The raw sweep spec; errors name the file."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SweepError(f"{path}: cannot read sweep spec ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(spec, dict) or "grid" not in spec and "zip" not in spec:
        raise SweepError(f"{path}: a sweep spec needs a 'grid' (and/or 'zip') mapping of config keys to lists")
    unknown = set(spec) - {"base", "set", "grid", "zip", "executor", "slurm", "description", "retries",
                           "gpus_per_point"}
    if unknown:
        raise SweepError(f"{path}: unknown key {sorted(unknown)[0]!r} (known: base, set, grid, zip, executor)")
    return spec


def expand(spec: dict, spec_path: str | Path = "<sweep>") -> list[SweepPoint]:
    """All points of a sweep: the grid's cartesian product times the zipped groups, validated configs."""
    spec_path = Path(spec_path)
    base = spec.get("base", {})
    if isinstance(base, str):
        base_path = (spec_path.parent / base).resolve()
        try:
            base = yaml.safe_load(base_path.read_text()) or {}
        except OSError:
            raise SweepError(f"{spec_path}: base config {base_path} not found") from None
    if not isinstance(base, dict):
        raise SweepError(f"{spec_path}: base must be a config file path or a mapping")
    axes: list[list[dict[str, Any]]] = []
    for key, values in (spec.get("grid") or {}).items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{spec_path}: grid.{key} must be a non-empty list")
        axes.append([{key: v} for v in values])
    for k, group in enumerate(spec.get("zip") or []):
        lengths = {len(v) if isinstance(v, list) else -1 for v in group.values()}
        if len(lengths) != 1 or -1 in lengths or 0 in lengths:
            raise SweepError(f"{spec_path}: zip.{k}: every axis must be a list, all of the same length")
        n = lengths.pop()
        axes.append([{key: vals[i] for key, vals in group.items()} for i in range(n)])
    fixed = [f"{k}={json.dumps(v)}" for k, v in (spec.get("set") or {}).items()]
    points, names = [], set()
    for combo in itertools.product(*axes):
        overrides = {k: v for d in combo for k, v in d.items()}
        tree = apply_overrides(json.loads(json.dumps(base)), fixed + [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
        name = point_name(overrides)
        cfg = config_from_dict(tree, f"{spec_path} [{name}]")
        if name in names:
            raise SweepError(f"{spec_path}: two points share the name {name!r}")
        names.add(name)
        points.append(SweepPoint(name, overrides, cfg))
    return points


# ------------------------------------------------------------------------------------------ one run


def run_status(run_dir: Path) -> str | None:
    """'done', 'failed' or None (not started / interrupted) from the run's sweep marker."""
    marker = RunDir(run_dir).sweep_status
    return read_json(marker)["status"] if marker.is_file() else None


def run_point(run_dir: str, config_yaml: str, threads: int = 1, gpu: int | None = None) -> dict:
    """Run (or resume) one sweep point under a per-run lock. Never raises: failures come back as a result.
    `gpu`: this process's current CUDA device, where a config asking for `auto` or `cuda` runs (its config keeps
    saying so, so the run reads back on any machine)."""
    from .config import load_config
    from .pipeline import run_pipeline

    ensure_logging()
    if gpu is not None:
        import torch

        torch.cuda.set_device(gpu)
    run_dir_p = Path(run_dir)
    rd = RunDir(run_dir_p)
    run_dir_p.mkdir(parents=True, exist_ok=True)
    if run_status(run_dir_p) == DONE:
        from .train import check_same_run

        try:  # a point finished under another spec (an older recipe) is not this point's result
            check_same_run(run_dir_p, config_from_dict(yaml.safe_load(config_yaml), str(rd.sweep_config)))
        except ConceptspaceError as exc:
            return {"run": run_dir, "status": FAILED, "error": f"{exc}; give the sweep a new --out"}
        return {"run": run_dir, "status": DONE, "skipped": True}
    t0 = time.time()
    try:
        with locked(run_dir_p):
            try:
                write_text(rd.sweep_config, config_yaml)
                cfg = load_config(rd.sweep_config, [f"train.threads={threads}"])
                run_pipeline(run_dir_p, cfg, resume=rd.config.is_file())
                result = {"run": run_dir, "status": DONE, "seconds": round(time.time() - t0, 1)}
            except BaseException as exc:  # a failed run is reported, it must not stop the others
                result = {"run": run_dir, "status": FAILED, "error": f"{type(exc).__name__}: {exc}",
                          "traceback": traceback.format_exc(limit=5), "seconds": round(time.time() - t0, 1)}
                if isinstance(exc, KeyboardInterrupt):
                    raise
            write_json(rd.sweep_status, result)
    except RunDirLocked:
        return {"run": run_dir, "status": LOCKED}
    return result


# ------------------------------------------------------------------------------------------ executors


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="sweep runs", unit="run", disable=not sys.stderr.isatty())


def _summary(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items())


def local_gpu_count() -> int:
    """CUDA GPUs on this machine; 0 for a CPU build of torch, asked without touching CUDA."""
    import torch

    if torch.version.cuda is None:
        return 0
    return torch.cuda.device_count()


def gpu_slots(n_jobs: int, n_gpus: int) -> list[int | None]:
    """The GPU each job runs on: job i on GPU i mod n_gpus, so `--workers` larger than the GPU count puts several
    runs (processes) on each GPU; None everywhere without GPUs."""
    return [i % n_gpus if n_gpus else None for i in range(n_jobs)]


def execute(jobs: list[tuple[str, str]], executor: str, workers: int | None = None, address: str | None = None,
            slurm_params: dict | None = None, log_dir: Path | None = None, gpus: int = 0) -> list[dict]:
    """Run (run_dir, config_yaml) jobs on the chosen engine; results in job order. `gpus` per point: a SLURM
    gpus_per_node request, or a Dask worker resource "GPU"."""
    if executor not in EXECUTORS:
        raise SweepError(f"unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    workers = workers or os.cpu_count() or 1
    results: dict[int, dict] = {}
    counts = {"done": 0, "running": 0, "failed": 0, "locked": 0}
    bar = _progress(len(jobs))

    def record(i: int, res: dict) -> None:
        results[i] = res
        counts["running"] = max(0, counts["running"] - 1)
        counts[res["status"]] += 1
        bar.update(1)
        bar.set_postfix_str(_summary(counts))
        if not sys.stderr.isatty():
            logger.info("[%d/%d] %s: %s%s", len(results), len(jobs), res["status"], res["run"],
                        f" ({res['error']})" if res.get("error") else "")

    if executor == "local":
        from concurrent.futures import ProcessPoolExecutor, as_completed

        import multiprocessing

        n_gpus = local_gpu_count()
        pending = [i for i, (d, _) in enumerate(jobs) if run_status(Path(d)) != DONE]
        slots = dict(zip(pending, gpu_slots(len(pending), n_gpus)))
        # A process that has asked CUDA anything cannot fork workers that use it: spawn them on GPU machines.
        context = multiprocessing.get_context("spawn") if n_gpus else None
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(run_point, d, y, 1, slots.get(i)): i for i, (d, y) in enumerate(jobs)}
            counts["running"] = min(workers, len(jobs))
            for fut in as_completed(futures):
                record(futures[fut], fut.result())
    elif executor in ("slurm", "slurm-local"):
        import submitit

        if executor == "slurm" and shutil.which("sbatch") is None:
            # submitit would quietly run the jobs on this machine instead: refuse, so a sweep never claims a cluster
            raise SweepError("--executor slurm: SLURM is not available here (no sbatch on PATH); run on a SLURM "
                             "login node, or use --executor local (this machine) or slurm-local (submitit's local "
                             "executor)")
        folder = log_dir or Path(jobs[0][0]).parent / ".submitit"
        ex = submitit.AutoExecutor(folder=str(folder), cluster="local" if executor == "slurm-local" else "slurm")
        params = {"timeout_min": 24 * 60, "cpus_per_task": 1, **({"gpus_per_node": gpus} if gpus else {}),
                  **(slurm_params or {})}
        if executor == "slurm-local":
            params = {k: v for k, v in params.items() if k in ("timeout_min", "cpus_per_task")}
        ex.update_parameters(**params)
        submitted = ex.map_array(run_point, [d for d, _ in jobs], [y for _, y in jobs], [1] * len(jobs))
        counts["running"] = len(jobs)
        for i, job in enumerate(submitted):
            try:
                res = job.result()
            except Exception as exc:  # the job itself died (node failure, timeout)
                res = {"run": jobs[i][0], "status": FAILED, "error": f"{type(exc).__name__}: {exc}"}
            record(i, res)
    else:
        from distributed import Client, LocalCluster, as_completed

        cluster = None
        if address is None:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1",
                                   dashboard_address=None, processes=True)
        client = Client(address or cluster)
        try:
            extra = {"resources": {"GPU": gpus}} if gpus else {}
            futures = [client.submit(run_point, d, y, 1, pure=False, **extra) for d, y in jobs]
            index = {f.key: i for i, f in enumerate(futures)}
            counts["running"] = min(workers, len(jobs))
            for fut in as_completed(futures):
                i = index[fut.key]
                try:
                    res = fut.result()
                except Exception as exc:  # a lost worker fails its point, not the whole collection
                    res = {"run": jobs[i][0], "status": FAILED, "error": f"{type(exc).__name__}: {exc}"}
                record(i, res)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    bar.close()
    return [results[i] for i in range(len(jobs))]


def run_sweep(spec_path: str | Path, out: str | Path, executor: str | None = None, workers: int | None = None,
              address: str | None = None, dry_run: bool = False, retries: int | None = None) -> list[dict]:
    """Expand a sweep, write its manifest, run every unfinished point; returns one result per point. A failed point
    is tried again up to `retries` times (spec key `retries`, default 0); killed training resumes on each try."""
    spec = load_spec(spec_path)
    points = expand(spec, spec_path)
    out = Path(out)
    if dry_run:
        return [{"run": str(out / p.name), "status": run_status(out / p.name) or "todo", "overrides": p.overrides}
                for p in points]
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"spec": str(spec_path), "points": [{"name": p.name, "overrides": p.overrides} for p in points]}
    write_json(out / "sweep.json", manifest)
    executor = executor or spec.get("executor", "local")
    jobs = [(str(out / p.name), config_to_yaml(p.config)) for p in points]
    t0 = time.time()
    gpus = int(spec.get("gpus_per_point", 0))
    results = execute(jobs, executor, workers, address, spec.get("slurm"), out / ".submitit", gpus)
    retries = int(spec.get("retries", 0)) if retries is None else retries
    for attempt in range(retries):
        again = [i for i, r in enumerate(results) if r["status"] == FAILED]
        if not again:
            break
        logger.info("retrying %d failed point(s) (try %d of %d)", len(again), attempt + 2, retries + 1)
        for i, r in zip(again, execute([jobs[i] for i in again], executor, workers, address, spec.get("slurm"),
                                       out / ".submitit", gpus)):
            results[i] = {**r, "tries": attempt + 2}
    summary = {"seconds": round(time.time() - t0, 1), "executor": executor, "results": results}
    write_json(out / "sweep_results.json", summary)
    return results
