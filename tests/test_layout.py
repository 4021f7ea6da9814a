"""The package's shape: stages in subpackages, numpy-only analysis, one owner of the run directory."""

import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "conceptspace"


def test_analysis_never_imports_torch_or_matplotlib():
    code = ("import importlib, pkgutil, sys, conceptspace.analysis as a\n"
            "for m in pkgutil.iter_modules(a.__path__): importlib.import_module('conceptspace.analysis.' + m.name)\n"
            "print(sorted(k for k in ('torch', 'matplotlib') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_run_directory_file_names_live_in_one_module():
    names = r'"(metrics\.json|metrics\.jsonl|run\.json|config\.yaml|concept_probs\.npz|elicitation\.npz|report\.html|' \
            r'resume\.safetensors|sweep_status\.json)"'
    # data/preview.py writes a preview folder (not a run directory) with its own config.yaml
    offenders = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") if p.name not in ("rundir.py", "preview.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(names, line)]
    assert offenders == [], offenders


def test_every_write_in_the_package_is_atomic():
    plain = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") if p.name != "rundir.py"
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\.write_(text|bytes)\(|np\.savez|os\.replace\(", line)]
    assert plain == [], plain


def test_public_api_is_lazy_and_complete():
    code = ("import sys, conceptspace as cs\nassert 'torch' not in sys.modules\n"
            "assert set(cs.__all__) - {'__version__'} == set(cs._EXPORTS)\n"
            "for n in cs.__all__: getattr(cs, n)\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_no_import_cycles_between_modules():
    """Module-level relative imports form no cycle (imports inside functions are how a stage reaches a later one)."""
    import ast

    graph = {}
    for path in SRC.rglob("*.py"):
        mod = ".".join(path.relative_to(SRC).with_suffix("").parts)
        pkg = mod.rsplit(".", 1)[0] if "." in mod and path.name != "__init__.py" else ("" if "." not in mod else mod)
        if path.name == "__init__.py":
            mod = pkg = mod.removesuffix(".__init__").removesuffix("__init__")
        deps = set()
        for node in ast.parse(path.read_text()).body:  # top level only
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".") if pkg else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, node.module] if node.module else base)
                deps.add(target)
        graph[mod] = {d for d in deps if d in graph or (SRC / (d.replace(".", "/") + ".py")).is_file()}

    def visit(node, stack, done):
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(node):], node]))
        if node in done:
            return
        for dep in graph.get(node, ()):
            visit(dep, [*stack, node], done)
        done.add(node)

    done: set = set()
    for node in graph:
        visit(node, [], done)
    assert "cli" in graph and graph["analysis.onsets"] == set()
