"""dvc.yaml, params.yaml and the stages' main() held together (stages/graph.py reads dvc.yaml for everyone else):
a stage is a module and a params section of its name; what its main() reads from another section is a dep when it
is a path and a dvc.yaml param otherwise; where its own section says it writes is an out; its own input paths that
another stage makes are deps; and dvc.yaml lists every stage after the stages it reads from (the order the flows
and recipes run them in)."""
import ast
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stages import graph  # noqa: E402
from stages.params import Params, load_params  # noqa: E402

STAGES = graph.read(ROOT)
PARAMS = load_params(ROOT / "params.yaml")
OUT_FIELDS = ("out_dir", "out")  # where a section says its stage writes
# Own-section values that name another stage's outputs without reading their files.
NOT_READ = {("register", "lineage_outs"): "register tags the version with these outs' hashes from dvc.lock"}


def overlaps(a: str, b: str) -> bool:
    return graph.inside(a, b) or graph.inside(b, a)


def is_pipeline_path(value) -> bool:
    """A string naming something dvc.yaml knows (a dep or an out of any stage, or a folder holding one)."""
    return isinstance(value, str) and any(overlaps(value, p) for s in STAGES for p in s.deps + [o for o, _ in s.outs])


def main_reads(stage: str) -> list[tuple[str, str | None, object]]:
    """(section, field or None for the whole section, value) of each params read in stages/<stage>.py's main();
    `os.path.join(<section>.<field>, "name")` reads the joined path."""
    tree = ast.parse((ROOT / "stages" / f"{stage}.py").read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    sections = set(Params.model_fields)
    parents = {child: node for node in ast.walk(main) for child in ast.iter_child_nodes(node)}
    reads = []
    for node in ast.walk(main):
        if not (isinstance(node, ast.Attribute) and node.attr in sections):
            continue
        section = getattr(PARAMS, node.attr)
        up = parents.get(node)
        if not (isinstance(up, ast.Attribute) and up.attr in type(section).model_fields):
            reads.append((node.attr, None, section))
            continue
        value = getattr(section, up.attr)
        call = parents.get(up)
        if (isinstance(call, ast.Call) and ast.unparse(call.func) == "os.path.join" and call.args[0] is up
                and all(isinstance(a, ast.Constant) for a in call.args[1:])):
            value = os.path.join(value, *(a.value for a in call.args[1:]))
        reads.append((node.attr, up.attr, value))
    return reads


def own_values(value, prefix: str = ""):
    """(field path, string) of every string in a section's values (nested dicts and lists included)."""
    if isinstance(value, str):
        yield prefix, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from own_values(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list):
        for v in value:
            yield from own_values(v, prefix)


def test_a_stage_is_a_module_and_a_params_section_of_its_name():
    assert [s.name for s in STAGES][:4] == ["synthesize", "ingest", "extract_frames", "build_samples"]
    for s in STAGES:
        assert s.cmd == f"python -m stages.{s.name}", s
        assert (ROOT / "stages" / f"{s.name}.py").is_file() and s.name in Params.model_fields, s.name
        assert ("params.yaml", s.name) in s.params, f"{s.name}: its own section is not a dvc.yaml param"


@pytest.mark.parametrize("s", STAGES, ids=lambda s: s.name)
def test_what_main_reads_from_another_section_is_declared(s):
    keys = {key for f, key in s.params if f == "params.yaml"}
    for section, field, value in main_reads(s.name):
        if section == s.name:
            continue
        where = f"{s.name}: main() reads {section}{'.' + field if field else ''}"
        if field and is_pipeline_path(value):
            assert any(graph.inside(value, d) for d in s.deps), f"{where} = {value!r}: not inside a dep {s.deps}"
        else:
            assert section in keys or f"{section}.{field}" in keys, f"{where}: not a dvc.yaml param {sorted(keys)}"


@pytest.mark.parametrize("s", STAGES, ids=lambda s: s.name)
def test_where_a_section_writes_is_an_out_and_what_it_reads_is_a_dep(s):
    section = getattr(PARAMS, s.name).model_dump()
    outs = [o for o, _ in s.outs]
    others = [o for other in STAGES if other.name != s.name for o, _ in other.outs]
    for field in OUT_FIELDS:
        if section.get(field):
            assert any(graph.inside(o, section[field]) for o in outs), f"{s.name}.{field}: no out under it {outs}"
    for field, value in section.items():
        if field in OUT_FIELDS or (s.name, field) in NOT_READ:
            continue
        for where, path in own_values(value, field):
            if any(overlaps(path, o) for o in others):
                assert any(graph.inside(path, d) for d in s.deps), f"{s.name}.{where} = {path!r}: not a dep"


def test_every_stage_comes_after_the_stages_it_reads_from():
    for i, s in enumerate(STAGES):
        for dep in s.deps:
            makers = [other.name for other in STAGES if any(graph.inside(dep, o) for o, _ in other.outs)]
            assert all(m in [e.name for e in STAGES[:i]] for m in makers), f"{s.name} reads {dep} of {makers}"


def test_the_flows_and_the_recipe_take_their_order_from_dvc_yaml(monkeypatch, tmp_path):
    import importlib

    from recipes import micro_repro

    ran = []
    order = graph.stage_names(ROOT)
    for name in order[:order.index("sft")]:
        monkeypatch.setattr(importlib.import_module(f"stages.{name}"), "main", lambda name=name: ran.append(name))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "samples").mkdir(parents=True)
    for split in ("train", "eval"):
        (tmp_path / "data" / "samples" / f"{split}.jsonl").write_text("")
    micro_repro.data_stages(PARAMS)
    assert ran == ["synthesize", "ingest", "extract_frames", "build_samples", "tiny_model"]
    from flows import workspace

    assert workspace.stage_names(ROOT) == order
