"""Pinned kernels: the same floating-point results on every x86-64 machine with AVX2.

The same training on two x86-64 machines differs in the last bits wherever a library picks its kernels by the CPU:
PyTorch's vectorised ops (AVX2 vs AVX-512 builds of each kernel), MKL's GEMM and oneDNN's convolutions. Over
thousands of steps those bits grow into different weights (measured on one machine: forcing PyTorch's generic
kernels changes a 30-step training and a 1,500-step probe). Each library reads its choice once, at start-up, from
the environment, so pinned work runs in a child process started with every choice fixed to the AVX2 code path
(present on any x86-64 CPU of the last decade), oneDNN off (its blocking also follows cache sizes) and one thread
unless the work sets its own count. OPENBLAS_CORETYPE holds numpy's BLAS (the renderer's blur) to one kernel too.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

from .errors import ConceptspaceError

PINNED_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "OPENBLAS_CORETYPE": "Haswell",
                  "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
PINNED_MARK = "CONCEPTSPACE_PINNED_KERNELS"  # set in a pinned child, so it knows to switch oneDNN off


def kernels_pinnable() -> bool:
    """Whether this CPU can run the pinned AVX2 kernels (x86-64 with AVX2)."""
    import torch  # here, not at the top: the command line imports this module before it needs torch

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        return bool(torch.cpu._is_avx2_supported())  # the CPU's support, whatever this process was started with
    except AttributeError:  # an older torch: fall back to the capability this process runs
        return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def pinned_env() -> dict[str, str]:
    """The environment of a pinned child process, which imports this very package wherever the parent found it
    (a notebook may have set sys.path)."""
    path = os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, **PINNED_KERNELS, PINNED_MARK: "1", "PYTHONPATH": path.rstrip(os.pathsep)}


def in_pinned_process() -> bool:
    """Whether this process was started as a pinned child (its environment carries the pinned kernels)."""
    return os.environ.get(PINNED_MARK) == "1"


def apply_pinned() -> None:
    """In a pinned child: oneDNN off (the environment has fixed the other libraries' choices at start-up), and a
    check that PyTorch really runs its AVX2 kernels. Elsewhere nothing."""
    if not in_pinned_process():
        return
    import torch

    torch.backends.mkldnn.enabled = False
    if torch.backends.cpu.get_cpu_capability() != "AVX2":
        raise ConceptspaceError(f"a pinned process runs PyTorch's {torch.backends.cpu.get_cpu_capability()} "
                                "kernels, not AVX2: start it through `conceptspace --pin-kernels`")


def configure_torch(threads: int | None) -> None:
    """Set torch's threads for training or evaluation: `threads`, else one in a pinned process (the thread count
    changes reductions, so a pinned run must not take it from the machine), else every core."""
    import torch

    apply_pinned()
    torch.set_num_threads(threads or (1 if in_pinned_process() else os.cpu_count() or 1))


def run_pinned(argv: list[str]) -> int:
    """Run `conceptspace ARGV` in a pinned child process; its exit code (128 + N when signal N ended it).

    The parent forwards SIGTERM and SIGHUP to the child and lets Ctrl-C reach it through the terminal, so a
    pinned training stops cleanly (status `interrupted`) as an unpinned one does."""
    child = subprocess.Popen([sys.executable, "-m", "conceptspace.cli", *argv], env=pinned_env())
    forward = lambda signum, frame: child.send_signal(signum)  # noqa: E731
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGHUP, forward)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child, in the same process group, gets the Ctrl-C
    except ValueError:  # not the main thread (a notebook's worker thread): no handlers, the child still runs
        old = {}
    try:
        rc = child.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return 128 - rc if rc < 0 else rc


def kernel_record() -> dict[str, object]:
    """What decided this process's kernels, for run.json: PyTorch's CPU code path, its threads, oneDNN, and whether
    all of them are the pinned ones."""
    import torch

    capability, onednn = torch.backends.cpu.get_cpu_capability(), bool(torch.backends.mkldnn.enabled)
    pinned = (in_pinned_process() and capability == "AVX2" and not onednn
              and all(os.environ.get(k) == v for k, v in PINNED_KERNELS.items() if not k.endswith("_THREADS")))
    return {"cpu_capability": capability, "threads": torch.get_num_threads(), "onednn": onednn, "pinned": pinned}


__all__ = ["PINNED_KERNELS", "kernels_pinnable", "pinned_env", "in_pinned_process", "apply_pinned", "configure_torch",
           "run_pinned", "kernel_record"]
