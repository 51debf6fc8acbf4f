"""The pipeline's graph as dvc.yaml defines it: the stages in order and, for each, its deps, outs and params.

dvc.yaml is the one definition of the stage order and of the paths between stages; the flows, the recipes and the
command line read it here instead of keeping their own lists (tests/unit/test_pipeline_graph.py holds dvc.yaml,
params.yaml and the stages' main() together).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class Stage:
    name: str
    cmd: str
    deps: list[str] = field(default_factory=list)
    outs: list[tuple[str, bool]] = field(default_factory=list)   # (path, cached): outs, metrics and plots
    params: list[tuple[str, str]] = field(default_factory=list)  # (file, key); a bare key is params.yaml's

    def inputs_from(self, others: list["Stage"]) -> list[str]:
        """The deps of this stage that one of `others` produces (cached outs: what a machine can pull)."""
        produced = [p for s in others if s.name != self.name for p, cached in s.outs if cached]
        return [d for d in self.deps if any(inside(d, p) for p in produced)]


def inside(path: str, root: str) -> bool:
    """`path` is `root` or lies under it (normalised, relative to the workspace)."""
    path, root = os.path.normpath(path), os.path.normpath(root)
    return path == root or path.startswith(root + os.sep)


def _outs(entries) -> list[tuple[str, bool]]:
    """dvc.yaml outs/metrics/plots entries -> (path, cached)."""
    out = []
    for e in entries or []:
        if isinstance(e, str):
            out.append((e, True))
        else:
            for path, opts in e.items():
                out.append((path, (opts or {}).get("cache", True)))
    return out


def _params(entries) -> list[tuple[str, str]]:
    out = []
    for e in entries or []:
        if isinstance(e, str):
            out.append(("params.yaml", e))
        else:  # {file: [keys]}
            out += [(f, k) for f, keys in e.items() for k in (keys or [""])]  # no keys: the whole file
    return out


def read(ws: str | Path = ".") -> list[Stage]:
    """The stages of `ws`/dvc.yaml in the order it lists them (the pipeline's order); none without the file."""
    path = Path(ws) / "dvc.yaml"
    tree = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    return [Stage(name, spec.get("cmd", ""), [d if isinstance(d, str) else next(iter(d)) for d in
                                              spec.get("deps") or []],
                  _outs(spec.get("outs")) + _outs(spec.get("metrics")) + _outs(spec.get("plots")),
                  _params(spec.get("params")))
            for name, spec in (tree.get("stages") or {}).items()]


def stage_names(ws: str | Path = ".") -> list[str]:
    return [s.name for s in read(ws)]


def stage(ws: str | Path, name: str) -> Stage | None:
    return next((s for s in read(ws) if s.name == name), None)
