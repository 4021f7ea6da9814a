"""Hook points: named identity modules where activations can be read or replaced.

Mechanism only (as TransformerLens' ``hook_points.py``); what to do at a hook lives elsewhere.

A model subclasses ``HookedModule`` and declares ``self.hook_x = HookPoint()  # [B, ...]`` at every
site of interest. Hook names are the dotted paths of those modules from the module that installs
the hooks (``model.named_modules()``), e.g. ``"down.0.blocks.0.hook_cond"``.

    with model.hooks([("*.hook_cond", lambda x, name: torch.zeros_like(x))]):
        eps_hat = model(x, t, prompt)
    eps_hat, cache = model.run_with_cache(x, t, prompt, names="*.hook_cond")
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, Any], torch.Tensor | None]
"""Called as ``fn(value, hook_name)``, or as ``fn(value, hook)`` with a ``hook.name`` when its second parameter is
called ``hook`` (TransformerLens' signature); returns a replacement tensor, or None to leave the value alone."""


@dataclass(frozen=True)
class HookInfo:
    """What a TransformerLens-style hook function receives as ``hook``: the hook point's name and module."""

    name: str
    point: "HookPoint"


def _takes_hook(fn: Callable) -> bool:
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return len(params) >= 2 and params[1] == "hook"


class HookPoint(nn.Module):
    """Identity module that passes its input through the installed hook functions in order."""

    def __init__(self) -> None:
        super().__init__()
        # (name, fn) pairs: the name is given per installation because it is relative to the
        # module whose ``hooks()`` installed it, which need not be the root model.
        self._fns: list[tuple[str, HookFn]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x``, or the last replacement a hook function returned."""
        for name, fn in self._fns:
            out = fn(x, name)
            if out is not None:
                x = out
        return x  # the very same tensor object when no fn replaced it: bit-identical outputs

    def add(self, name: str, fn: HookFn) -> tuple[str, HookFn]:
        """Append ``fn`` (called with ``name``); return the entry that ``remove`` takes."""
        entry = (name, fn)
        self._fns.append(entry)
        return entry

    def remove(self, entry: tuple[str, HookFn]) -> None:
        """Remove one entry returned by ``add`` (by identity, so equal entries added twice stay apart)."""
        for i in range(len(self._fns) - 1, -1, -1):
            if self._fns[i] is entry:
                del self._fns[i]
                return

    def extra_repr(self) -> str:
        return f"n_fns={len(self._fns)}"


class HookedModule(nn.Module):
    """Base class for models with ``HookPoint``s: lookup, scoped hook installation, caching."""

    def hook_points(self) -> dict[str, HookPoint]:
        """All hook points of this module, keyed by dotted name, in registration order."""
        return {name: m for name, m in self.named_modules() if isinstance(m, HookPoint)}

    def resolve_hook_names(self, patterns: str | Sequence[str]) -> list[str]:
        """Expand exact names or fnmatch patterns into hook names; KeyError if one matches nothing."""
        if isinstance(patterns, str):
            patterns = [patterns]
        available = list(self.hook_points())
        names: list[str] = []
        for pattern in patterns:
            matched = [pattern] if pattern in available else fnmatch.filter(available, pattern)
            if not matched:
                raise KeyError(f"no hook point matches {pattern!r}; available: {available}")
            names.extend(n for n in matched if n not in names)
        return names

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[HookedModule]:
        """Install ``(name_or_pattern, fn)`` hooks for the duration of the block; always removed on exit."""
        points = self.hook_points()
        # Resolve everything before installing anything so a bad name leaves the model untouched.
        resolved = [(name, fn) for pattern, fn in fwd_hooks for name in self.resolve_hook_names(pattern)]
        installed: list[tuple[HookPoint, tuple[str, HookFn]]] = []
        try:
            for name, fn in resolved:
                if _takes_hook(fn):  # TransformerLens style: fn(tensor, hook) with hook.name
                    fn = (lambda f, info: lambda x, _name: f(x, hook=info))(fn, HookInfo(name, points[name]))
                installed.append((points[name], points[name].add(name, fn)))
            yield self
        finally:
            # Remove only our own entries, so hooks of an enclosing context stay installed.
            for point, entry in reversed(installed):
                point.remove(entry)

    def run_with_hooks(self, *args: Any, fwd_hooks: Sequence[tuple[str, HookFn]] = (), **kwargs: Any) -> Any:
        """Run ``forward`` once with the given hooks installed."""
        with self.hooks(fwd_hooks):
            return self(*args, **kwargs)

    def run_with_cache(
        self, *args: Any, names: str | Sequence[str] | None = None, **kwargs: Any
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        """Run ``forward``; return its output and detached copies of the values at the named hooks."""
        selected = list(self.hook_points()) if names is None else self.resolve_hook_names(names)
        cache: dict[str, torch.Tensor] = {}

        def save(value: torch.Tensor, name: str) -> None:
            cache[name] = value.detach().clone()  # a hook firing twice keeps its last value

        with self.hooks([(name, save) for name in selected]):
            out = self(*args, **kwargs)
        return out, cache
