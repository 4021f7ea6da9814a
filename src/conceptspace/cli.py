"""`conceptspace` command line. Each subcommand is a thin wrapper around library functions."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

from . import kernels
from .config import ExperimentConfig, load_config
from .errors import ConceptspaceError
from .logs import configure_logging
from .rundir import RunDir, write_json


def _add_common(p: argparse.ArgumentParser, config_required: bool = False) -> None:
    p.add_argument("config", nargs=None if config_required else "?", default=None,
                   help="YAML config (default: the built-in defaults, equal to configs/2x2.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set data.concepts.color.sep=0.2 (repeatable)")


def _signal_table(cfg: ExperimentConfig) -> tuple[dict[str, float], dict[str, float]]:
    from .data.signal import normalized_signal, space_signal

    sig = space_signal(cfg.data)
    return sig, normalized_signal(sig)


def cmd_signal(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    sig, norm = _signal_table(cfg)
    if args.json:
        print(json.dumps(sig))
        return 0
    print(f"{'concept':<10} {'sigma':>10} {'normalised':>11}")
    for k in sig:
        print(f"{k:<10} {sig[k]:>10.5f} {norm[k]:>11.3f}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data.preview import write_preview

    cfg = load_config(args.config, args.overrides)
    space, sig, norm, written = write_preview(cfg, args.out, args.n_per_class, args.overwrite,
                                              title=f"{args.config or 'defaults'}: held-out classes framed in red")
    print(f"classes: {', '.join(space.class_names)}  (held out: {', '.join(space.held_out) or 'none'})")
    print(f"{'concept':<10} {'sigma':>10} {'normalised':>11}")
    for k in sig:
        print(f"{k:<10} {sig[k]:>10.5f} {norm[k]:>11.3f}")
    print("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    run_dir = Path(args.run_dir)
    if args.resume and args.config is None:
        cfg = _saved_cfg(args)  # resume with the saved config, checked against the checkpoints
    else:
        cfg = load_config(args.config, args.overrides)
    train(run_dir, cfg, resume=args.resume, overwrite=args.overwrite)
    rd = RunDir(run_dir)
    print(f"run finished: {run_dir} (checkpoints in {rd.checkpoints}, metrics in {rd.log})")
    return 0


def _saved_cfg(args: argparse.Namespace):
    """The run's saved config (checked against its checkpoints; --rebuild-config restores it), with --set overrides."""
    from .train import load_run_config

    return load_run_config(args.run_dir, args.overrides, rebuild=args.rebuild_config)


def _run_cfg(args: argparse.Namespace):
    """The saved config of an existing run, with --set overrides (evaluation, sampler and probe settings)."""
    if not RunDir(args.run_dir).info.is_file():
        raise ConceptspaceError(f"{args.run_dir}: not a run directory (no run.json)")
    return _saved_cfg(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .analysis.run_metrics import analyze_run
    from .readout.evaluate import evaluate_run

    cfg = _run_cfg(args)
    path = evaluate_run(args.run_dir, cfg, tag=args.tag, force=args.force)
    analyze_run(args.run_dir, cfg, tag=args.tag)
    print(f"wrote {path} and {RunDir(args.run_dir, args.tag).metrics}")
    return 0


def _is_sweep(args: argparse.Namespace) -> bool:
    if (Path(args.run_dir) / "sweep.json").is_file():
        return True
    if args.pool or args.out:
        raise ConceptspaceError(f"{args.run_dir}: --pool and --out apply to sweep directories (no sweep.json here)")
    return False


def cmd_analyze(args: argparse.Namespace) -> int:
    if _is_sweep(args):
        from .analysis.sweep import analyze_sweep

        print(f"wrote {analyze_sweep(args.run_dir, pool=args.pool, out=args.out) / 'sweep_metrics.json'}")
        return 0
    from .analysis.run_metrics import analyze_run_dir

    analyze_run_dir(args.run_dir, _run_cfg(args), tag=args.tag)
    print(f"wrote {RunDir(args.run_dir, args.tag).metrics}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if _is_sweep(args):
        from .analysis.sweep import analyze_sweep
        from .report.sweep_page import sweep_report

        out = Path(args.out) if args.out else Path(args.run_dir)
        if args.pool or not (out / "sweep_metrics.json").is_file():
            analyze_sweep(args.run_dir, pool=args.pool, out=args.out)
        print(f"wrote {sweep_report(out)}")
        return 0
    from .report.run_page import write_report

    cfg = _run_cfg(args)
    if not RunDir(args.run_dir, args.tag).metrics.is_file():
        from .analysis.run_metrics import analyze_run_dir

        analyze_run_dir(args.run_dir, cfg, tag=args.tag)
    print(f"wrote {write_report(args.run_dir, cfg, tag=args.tag)}")
    return 0


def cmd_elicit(args: argparse.Namespace) -> int:
    from .analysis.run_metrics import analyze_run
    from .pipeline import elicit_and_score
    from .report.run_page import write_report

    overrides = list(args.overrides)
    if args.methods:
        overrides.append(f"elicit.methods=[{args.methods}]")
    args.overrides = overrides
    cfg = _run_cfg(args)
    run_dir = Path(args.run_dir)
    if not RunDir(run_dir, args.tag).metrics.is_file():
        analyze_run(run_dir, cfg, tag=args.tag)
    metrics = elicit_and_score(run_dir, cfg, tag=args.tag, force=args.force)
    for held, e in metrics["elicitation"].items():
        on = ", ".join(f"{m} {s if s is not None else 'never'}" for m, s in e["onset_step"].items())
        print(f"{held}: held onset steps: {on}; gap to best-of-{e['naive_tries']} naive "
              f"{e['gap_steps'] if e['gap_steps'] is not None else 'n/a'}"
              + (" (naive prompting never holds the threshold)" if e["naive_never_reached"] else ""))
    print(f"report: {write_report(run_dir, cfg, tag=args.tag)}")
    return 0


def cmd_represent(args: argparse.Namespace) -> int:
    from .pipeline import represent_and_score

    if args.n < 2:  # a read-out is fitted on the training classes' prompts: one per class fits nothing
        raise ConceptspaceError(f"--n {args.n}: at least 2 prompts per class")
    cfg = _run_cfg(args)
    metrics = represent_and_score(Path(args.run_dir), cfg, tag=args.tag, n=args.n)
    for held, sites in metrics["representation"].items():
        for site, r in sites.items():
            def step(s):
                return "never" if s is None else s
            print(f"{held} {site:>6}: decoded (held) from {step(r['onset_step'])} (first checkpoint "
                  f"{r['first']:.2f}, last {r['final']:.2f}); lead over best-of-k naive {step(r['lead_vs_naive'])}, "
                  "over the earliest intervention " + ("(none run)" if r["lead_vs_intervention"] is None and
                                                       r["onset_step"] is not None else
                                                       str(step(r["lead_vs_intervention"]))))
    print(f"{metrics['representation_seconds']} s; merged into {RunDir(args.run_dir, args.tag).metrics}")
    return 0


def cmd_evaluate_external(args: argparse.Namespace) -> int:
    from .data.concepts import ConceptSpace
    from .readout.external import diffusers_checkpoints, evaluate_external, load_diffusers

    cfg = load_config(args.space, args.overrides)
    space = ConceptSpace.from_config(cfg.data)
    found = diffusers_checkpoints(args.checkpoint_dir)
    loaders = [(step, lambda path=path: load_diffusers(path, space, args.n_steps)) for step, path in found]
    metrics = evaluate_external(loaders, cfg, args.out, source=str(args.checkpoint_dir))
    print(f"{len(found)} checkpoints (steps {found[0][0]}-{found[-1][0]}) read into {args.out}")
    from .report.run_page import reading

    for line in reading(metrics):
        print(f"  {line}")
    print(f"report: {RunDir(args.out).report}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline

    run_dir = Path(args.run_dir)
    if args.resume and args.config is None:
        cfg = _saved_cfg(args)
    else:
        cfg = load_config(args.config, args.overrides)
    report = run_pipeline(run_dir, cfg, resume=args.resume, overwrite=args.overwrite, tag=args.tag)
    print(f"report: {report}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweeps import run_sweep

    results = run_sweep(args.spec, args.out, args.executor, args.workers, args.address, args.dry_run, args.retries)
    if args.dry_run:
        for r in results:
            print(f"{r['status']:>7}  {r['run']}")
        print(f"{len(results)} runs")
        return 0
    failed = [r for r in results if r["status"] == "failed"]
    counts = {s: sum(r["status"] == s for r in results) for s in ("done", "failed", "locked")}
    print(f"sweep {args.out}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for r in failed:
        print(f"  failed: {r['run']}: {r['error']}")
    if counts["done"]:
        from .analysis.sweep import analyze_sweep
        from .report.sweep_page import sweep_report

        print(f"report: {sweep_report(analyze_sweep(args.out))}")
    return 1 if failed else 0


def cmd_toy_model(args: argparse.Namespace) -> int:
    from .report.sweep_figures import write_toy_model

    a_values = [float(a) for a in args.a.split(",")] if args.a else list(np.linspace(1, 5, 9))
    out = Path(args.out)
    runs = None
    if args.sweep:
        from .analysis.sweep import collect_runs

        runs = collect_runs(args.sweep)
    fits = write_toy_model(out, a_values, runs)
    for label, fit in fits.items():
        print(f"masking {label}: fitted a = {fit['a']:.2f}, time scale {fit['time_scale']:.2f} "
              f"(mean squared error {fit['mse']:.4f}, {fit['n_runs']} seeds)")
    print(f"wrote {out / 'toy_model.png'}" + (f" and {out / 'toy_fit.json'}" if fits else ""))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from .report.run_page import seeds_figure, summary_table

    print(summary_table(args.run_dirs, args.tag))
    if args.figure:
        seeds_figure(args.run_dirs, args.tag).savefig(args.figure, dpi=110)
        print(f"wrote {args.figure}")
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    from .rundir import archive

    runs = archive(args.src, args.dest)
    size = sum(f.stat().st_size for f in Path(args.dest).rglob("*") if f.is_file())
    print(f"archived {len(runs)} finished run(s) into {args.dest} ({size / 1e6:.1f} MB)")
    return 0


def cmd_paper(args: argparse.Namespace) -> int:
    from . import paper

    entries = paper.load_catalogue(args.catalogue)
    if args.action == "list":
        if args.name:
            raise ConceptspaceError("`paper list` takes no entry name; `paper report NAME` shows one entry")
        if args.json:
            print(json.dumps([e.model_dump() | {"command": paper.command(e)} for e in entries], indent=1))
        else:
            print(paper.catalogue_table(entries, args.out))
        return 0
    if not args.name:
        raise ConceptspaceError(f"`paper {args.action}` needs an entry name; `conceptspace paper list` shows them")
    e = paper.find_entry(entries, args.name)
    # advice repeats the options that locate the results
    hint = (f" --out {args.out}" if args.out != "runs/paper" else "") + (
        f" --catalogue {args.catalogue}" if args.catalogue else "")
    if args.action == "run":
        d = paper.run_entry(e, args.out, args.executor, args.workers, args.overrides)
        print(f"{e.name}: results in {d}; `conceptspace paper report {e.name}{hint}` draws its figures")
        return 0
    print("\n".join(paper.report_entry(e, args.out, hint)))
    return 0


REBUILD_HELP = "write config.yaml anew from the config embedded in the last checkpoint (when it is lost or damaged)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conceptspace", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (debug)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="only warnings and errors")
    parser.add_argument("--pin-kernels", action="store_true",
                        help="(before the command) run it in a child process with every library's kernels fixed to the "
                             "AVX2 code path, oneDNN off and one thread unless train.threads says otherwise: meant "
                             "to give the same numbers on any x86-64 machine with AVX2 (slower)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="render a preview grid of every class and compute the concept signal")
    _add_common(p)
    p.add_argument("--out", default="runs/data", help="output directory (default: runs/data)")
    p.add_argument("--n-per-class", type=int, default=8, help="preview images per class")
    p.add_argument("--overwrite", action="store_true", help="replace an existing preview in --out")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train a conditional diffusion model on the training classes")
    _add_common(p)
    p.add_argument("--run-dir", required=True, help="run directory (checkpoints, metrics, resolved config)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --run-dir")
    p.add_argument("--rebuild-config", action="store_true", help=REBUILD_HELP)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="the main job: train, evaluate, analyse and write report.html")
    _add_common(p)
    p.add_argument("--run-dir", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue a killed run (training or evaluation)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --run-dir")
    p.add_argument("--tag", default="default", help="name of the evaluation (eval/<tag>/)")
    p.add_argument("--rebuild-config", action="store_true", help=REBUILD_HELP)
    p.set_defaults(func=cmd_run)

    for name, func, text in [("evaluate", cmd_evaluate, "read every checkpoint's generations into concept space"),
                             ("analyze", cmd_analyze, "recompute metrics.json of a run (or sweep_metrics.json of a "
                                                      "sweep) from its arrays"),
                             ("report", cmd_report, "draw report.html of a run, or sweep_report.html of a sweep "
                                                    "(computing the numbers only when they are missing)")]:
        p = sub.add_parser(name, help=text)
        p.add_argument("run_dir", help="a run directory made by `conceptspace train` or `run`")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override eval / sampler / probe settings, e.g. --set sampler.n_steps=100")
        p.add_argument("--tag", default="default", help="name of this evaluation (eval/<tag>/)")
        p.add_argument("--rebuild-config", action="store_true", help=REBUILD_HELP)
        if name == "evaluate":
            p.add_argument("--force", action="store_true", help="replace an evaluation made with other settings")
        else:
            p.add_argument("--pool", action="append", default=[], metavar="SWEEP_DIR",
                           help="pool another sweep directory's runs into the report (e.g. more seeds); repeatable")
            p.add_argument("--out", default=None, help="where a pooled sweep report goes (a new directory)")
        p.set_defaults(func=func)

    p = sub.add_parser("elicit", help="hidden capabilities: naive prompting vs interventions at every checkpoint")
    p.add_argument("run_dir", help="a run directory")
    p.add_argument("--methods", default=None,
                   help="comma-separated subset of naive,overprompt,latent,patch,cfg (default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override elicit / sampler / probe settings, e.g. --set elicit.latent_alphas=[1,2,4]")
    p.add_argument("--tag", default="default", help="name of this evaluation (eval/<tag>/)")
    p.add_argument("--force", action="store_true", help="replace an elicitation made with other settings")
    p.add_argument("--rebuild-config", action="store_true", help=REBUILD_HELP)
    p.set_defaults(func=cmd_elicit)

    p = sub.add_parser("evaluate-external", help="concept-space readings of another model's checkpoints "
                                                 "(diffusers U-Nets)")
    p.add_argument("checkpoint_dir", help="folder of checkpoint folders named with their step (checkpoint-500/, "
                                          "each a diffusers model or holding unet/)")
    p.add_argument("--space", required=True, help="config whose data section is the model's concept space (e.g. "
                                                  "configs/2x2.yaml); its probe, eval and elicit settings apply")
    p.add_argument("--out", required=True, help="run directory to write (a new folder, or an earlier reading)")
    p.add_argument("--adapter", choices=["diffusers"], default="diffusers",
                   help="how checkpoints are loaded (other models: the Python API, readout.external)")
    p.add_argument("--n-steps", type=int, default=25, help="DDIM steps per sample")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the space config, e.g. --set eval.n_samples=16")
    p.set_defaults(func=cmd_evaluate_external)

    p = sub.add_parser("represent", help="when the held-out class is decoded from the model's representation, "
                                         "beside the naive and intervention onsets (no sampling)")
    p.add_argument("run_dir", help="a run directory")
    p.add_argument("--n", type=int, default=16, help="prompts per class (train-mode concept values)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override elicit thresholds, e.g. --set elicit.threshold=0.9")
    p.add_argument("--tag", default="default", help="which evaluation (eval/<tag>/)")
    p.add_argument("--rebuild-config", action="store_true", help=REBUILD_HELP)
    p.set_defaults(func=cmd_represent)

    p = sub.add_parser("sweep", help="run a grid of experiments (local pool, SLURM via submitit, or Dask)")
    p.add_argument("spec", help="sweep YAML (configs/sweeps/*.yaml)")
    p.add_argument("--out", required=True, help="sweep directory: one run directory per point")
    p.add_argument("--executor", choices=["local", "slurm", "slurm-local", "dask"], default=None,
                   help="where runs go (default: the spec's `executor`, else local)")
    p.add_argument("--workers", type=int, default=None, help="parallel runs (local / dask LocalCluster; default: cores)")
    p.add_argument("--address", default=None, help="dask scheduler address (default: a LocalCluster on 127.0.0.1)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state, run nothing")
    p.add_argument("--retries", type=int, default=None,
                   help="try a failed point again up to this many times (default: the spec's `retries`, else 0)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("toy-model", help="the simplified dynamical model of underspecification, fitted to a sweep")
    p.add_argument("--a", default=None, help="comma-separated asymmetries to plot (default: 1 to 5)")
    p.add_argument("--sweep", default=None, help="a masking sweep directory: fit a per masking probability")
    p.add_argument("--out", default="runs/toy-model", help="output directory")
    p.set_defaults(func=cmd_toy_model)

    p = sub.add_parser("summary", help="a Markdown table of the key numbers of several runs (e.g. seeds)")
    p.add_argument("run_dirs", nargs="+", help="run directories with metrics.json")
    p.add_argument("--figure", default=None, help="also write the elicitation figure across these runs (PNG)")
    p.add_argument("--tag", default="default", help="which evaluation of each run (eval/<tag>/)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("archive", help="keep a run's or a sweep's readings without checkpoints (small enough for "
                                        "version control; `analyze` and sweep reports read them)")
    p.add_argument("src", help="a run directory, or a sweep / `paper run` folder (its finished runs are archived)")
    p.add_argument("dest", help="a new folder")
    p.set_defaults(func=cmd_archive)

    p = sub.add_parser("paper", help="the paper's results: list them, run one, or report it")
    p.add_argument("action", choices=["list", "run", "report"],
                   help="list: the catalogue; run NAME: run an entry (resumable); report NAME: its figures and reading")
    p.add_argument("name", nargs="?", default=None, help="entry name (see `conceptspace paper list`)")
    p.add_argument("--out", default="runs/paper", help="results root: each entry under <out>/<name>")
    p.add_argument("--catalogue", default=None, help="catalogue YAML (default: configs/paper.yaml)")
    p.add_argument("--executor", choices=["local", "slurm", "slurm-local", "dask"], default=None,
                   help="where a sweep entry's runs go (default: the spec's, else local)")
    p.add_argument("--workers", type=int, default=None, help="parallel runs of a sweep entry (default: cores)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run entry's config, e.g. --set data.real.path=/data/celeba (repeatable)")
    p.add_argument("--json", action="store_true", help="list: print the catalogue as JSON")
    p.set_defaults(func=cmd_paper)

    p = sub.add_parser("signal", help="print the concept signal of each concept")
    _add_common(p)
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.set_defaults(func=cmd_signal)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose - args.quiet)
    if args.pin_kernels and not kernels.in_pinned_process():
        if not kernels.kernels_pinnable():
            print(f"error: --pin-kernels needs an x86-64 CPU with AVX2 ({platform.machine()})", file=sys.stderr)
            return 2
        return kernels.run_pinned(argv)
    try:
        kernels.apply_pinned()
        return args.func(args)
    except ConceptspaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as exc:  # disk full, permissions, a file that is a folder, out of memory
        if args.verbose:
            raise
        what = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.filename else \
            (exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__)
        print(f"error: {what} (run with -v for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
