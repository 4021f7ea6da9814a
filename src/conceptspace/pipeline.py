"""The main job: train, evaluate, analyse, elicit and report one run (`conceptspace run`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .config import ExperimentConfig
from .data.concepts import ConceptSpace
from .kernels import configure_torch
from .rundir import RunDir, read_json, write_json, writes_run

logger = logging.getLogger(__name__)


def elicit_and_score(run_dir: Path, cfg: ExperimentConfig, tag: str = "default", force: bool = False,
                     probe=None) -> dict:
    """Elicit every (new) checkpoint and merge the onsets into metrics.json (returned)."""
    from .analysis.run_metrics import add_onsets_to_metrics
    from .readout.elicit import elicit_run

    if len(cfg.elicit.methods) == 0:
        return RunDir(run_dir, tag).read_metrics()
    if not ConceptSpace.from_config(cfg.data).held_out:
        logger.info("%s: no held-out class, nothing to elicit", run_dir)
        return RunDir(run_dir, tag).read_metrics()
    elicit_run(run_dir, cfg, tag=tag, force=force, probe=probe)
    return add_onsets_to_metrics(run_dir, cfg, tag=tag)


def represent_and_score(run_dir: Path, cfg: ExperimentConfig, tag: str = "default", n: int = 16) -> dict:
    """Read every (new) checkpoint's representation of every class prompt, decode the held-out classes, and merge
    the representation onsets (with their leads over naive and intervention onsets) into metrics.json."""
    from .analysis.representation import compare_onsets, representation_readings
    from .readout.representation import represent_run
    from .rundir import load_npz

    rd = RunDir(run_dir, tag)
    t0 = time.time()
    arrays = load_npz(represent_run(run_dir, cfg, tag=tag, n=n))
    e = cfg.elicit
    readings = representation_readings(arrays, e.threshold, e.run_length, e.allowed_dip)
    metrics = rd.read_metrics() if rd.metrics.is_file() else {}
    leads = compare_onsets(readings, metrics.get("elicitation", {}), int(arrays["steps"][-1]))
    merged = {h: {site: {**r, **leads[h][site]} for site, r in sites.items()} for h, sites in readings.items()}
    return rd.update_metrics({"representation": merged, "representation_seconds": round(time.time() - t0, 1)})


def record_stages(rd: RunDir, seconds: dict[str, float]) -> None:
    """run.json: `stage_seconds` of this invocation, appended to `stage_history` (a resumed or repeated run keeps
    the times of the earlier invocations)."""
    if not seconds or not rd.info.is_file():
        return
    info = read_json(rd.info)
    info["stage_seconds"] = seconds
    info["stage_history"] = [*info.get("stage_history", []), {"finished": time.time(), "seconds": seconds}]
    write_json(rd.info, info)
    logger.info("stages (s): %s", ", ".join(f"{k} {v}" for k, v in seconds.items()))


@contextmanager
def timed_stage(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the block to `seconds[name]` (where a run's minutes go: run.json `stage_seconds`)."""
    t = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - t, 1)


@writes_run
def run_pipeline(run_dir: Path, cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False,
                 tag: str = "default") -> Path:
    """The main job: train, evaluate, analyse, elicit, plot and report; returns the report's path."""
    from .analysis.run_metrics import analyze_run
    from .readout.evaluate import check_run_probe, evaluate_run
    from .report.run_page import reading, write_report
    from .train import check_same_run, train

    # Evaluation runs in this process too: keep it to the run's thread budget (sweeps run one thread per core).
    configure_torch(cfg.train.threads)
    from .readout.probe import check_probe_space, get_probe

    rd = RunDir(run_dir)
    seconds: dict[str, float] = {}
    trained = False  # a refused command (another run there, a changed config) leaves run.json alone
    try:
        # The probe is trained (or loaded) and held to its accuracy gate once, before minutes of training, and
        # passed to the stages that read with it; arrays and metrics go through the run directory.
        with timed_stage(seconds, "probe"):
            probe = get_probe(cfg)
            check_probe_space(probe, ConceptSpace.from_config(cfg.data))
            check_run_probe(run_dir, tag, probe.checksum)  # a resumed run's readings, before hours of training
        with timed_stage(seconds, "train"):
            if resume and rd.info.is_file() and read_json(rd.info).get("status") == "done":
                check_same_run(run_dir, cfg, training_only=True)  # never another recipe's run under this config
                logger.info("%s: training already done; evaluating what is new", run_dir)
            else:
                # `run --resume` on a fresh directory simply starts: it makes `make demo` safe to repeat.
                train(run_dir, cfg, resume=resume and rd.config.is_file(), overwrite=overwrite)
        trained = True
        with timed_stage(seconds, "evaluate"):
            evaluate_run(run_dir, cfg, tag=tag, force=overwrite, probe=probe)
        with timed_stage(seconds, "analyze"):
            analyze_run(run_dir, cfg, tag=tag)
        with timed_stage(seconds, "elicit"):
            metrics = elicit_and_score(run_dir, cfg, tag=tag, force=overwrite, probe=probe)
        with timed_stage(seconds, "report"):
            report = write_report(run_dir, cfg, tag=tag)
    finally:
        if trained:
            record_stages(rd, seconds)
    for line in reading(metrics):
        print(line)
    return report
