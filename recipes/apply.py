"""Turn a recipe (a params overlay, e.g. recipes/videochat-r1-7b.yaml) into `dvc exp run -S` arguments.

    python recipes/apply.py recipes/videochat-r1-7b.yaml | xargs -d '\\n' dvc exp run
    python recipes/apply.py --check recipes/videochat-r1-7b.yaml      # validate against params.yaml only

Prints `-S` and `section.key=value` on alternate lines (values as compact JSON, so YAML reads them back and
no shell splitting is involved; `++section.key=value` for a key params.yaml does not list). The overlay is
validated first: applied to params.yaml it must give valid Params (stages/params.py), so a typo fails here, not on
the GPU node.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.params import load_params  # noqa: E402


def leaves(tree: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Dotted keys of the overlay's leaves; lists and empty dicts are values, not branches."""
    out = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += leaves(value, dotted + ".")
        else:
            out.append((dotted, value))
    return out


def overrides(recipe: str | Path, skip: tuple[str, ...] = ()) -> list[str]:
    """The overlay's leaves as `a.b=value` items; `skip` names top-level sections that are not params.yaml's
    (e.g. the micro-reproduction's own `micro_repro:`)."""
    tree = yaml.safe_load(Path(recipe).read_text()) or {}
    if not isinstance(tree, dict):
        raise ValueError(f"{recipe}: a recipe is a mapping of params.yaml sections")
    tree = {k: v for k, v in tree.items() if k not in skip}
    return [f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in leaves(tree)]


def for_dvc(items: list[str], params: str | Path) -> list[str]:
    """The items as `dvc exp run -S` values: a key the params file lacks (a param left at its default there, such
    as extract_frames.budget) gets Hydra's `++` (add or override); DVC refuses a plain override of a missing key."""
    tree = yaml.safe_load(Path(params).read_text()) if Path(params).exists() else {}
    missing = object()
    out = []
    for item in items:
        node = tree or {}
        for key in item.partition("=")[0].split("."):
            node = node[key] if isinstance(node, dict) and key in node else missing
        out.append(f"++{item}" if node is missing else item)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("--params", default="params.yaml", help="params file the overlay applies to")
    ap.add_argument("--check", action="store_true", help="only validate")
    args = ap.parse_args(argv)
    items = overrides(args.recipe)
    load_params(args.params, items)  # raises with the offending key on a typo or a bad value
    if not args.check:
        for item in for_dvc(items, args.params):
            print("-S")
            print(item)
    return 0


if __name__ == "__main__":
    sys.exit(main())
