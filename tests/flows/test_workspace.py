"""flows/workspace.py on the project's dvc.yaml and on a small DVC repository: what a machine pulls before a
stage, the handoff of lock entries and uncached metrics, the workspace lock, and a real pull/repro/push between two
workspaces through a (folder) DVC remote."""
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from flows import workspace as wsp
from stages import graph

ROOT = Path(__file__).resolve().parents[2]

SMALL = """stages:
  make:
    cmd: python -c "import pathlib; pathlib.Path('data').mkdir(exist_ok=True); pathlib.Path('data/a.txt').write_text('a')"
    outs: [data]
  use:
    cmd: python -c "import pathlib, json; pathlib.Path('out.txt').write_text(pathlib.Path('data/a.txt').read_text() * 2); pathlib.Path('m.json').write_text(json.dumps(dict(n=2)))"
    deps: [data]
    params:
      - knobs.yaml: [n]
    outs: [out.txt]
    metrics:
      - m.json: {cache: false}
  broken:
    cmd: python -c "import sys; print('reading data'); sys.exit('broken - data/a.txt is not a video')"
    deps: [data]
    outs: [never]
"""


def test_inputs_to_pull_are_the_deps_other_stages_make():
    assert wsp.stage_names(ROOT)[:3] == ["synthesize", "ingest", "extract_frames"]
    train = wsp.upstream_inputs(ROOT, "train")
    assert {"data/samples", "data/frames", "models/sft"} <= set(train)
    # code and the shipped base model come with the checkout, not the remote
    assert not [d for d in train if d.startswith(("stages/", "pretrained/"))]
    # a dep inside another stage's output directory counts (ingest reads folders inside data/synthetic)
    assert set(wsp.upstream_inputs(ROOT, "ingest")) >= {"data/synthetic/videos"}
    assert wsp.upstream_inputs(ROOT, "synthesize") == []
    assert wsp.params_files(ROOT, "train") == ["params.yaml"]
    with pytest.raises(wsp.StageError, match="'nope'.*not a stage"):
        wsp.upstream_inputs(ROOT, "nope")


def small_repo(path: Path, remote: Path | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "dvc.yaml").write_text(SMALL)
    (path / "knobs.yaml").write_text("n: 1\n")
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=path, check=True)
    if remote:
        subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(remote)], cwd=path,
                       check=True)
    return path


def test_outputs_params_and_lock_handoff(tmp_path):
    ws = small_repo(tmp_path / "ws")
    assert graph.stage(ws, "use").outs == [("out.txt", True), ("m.json", False)]  # stages/graph.py reads dvc.yaml
    assert wsp.params_files(ws, "use") == ["knobs.yaml"]
    assert wsp.upstream_inputs(ws, "use") == ["data"]
    (ws / "m.json").write_text('{"n": 2}')
    assert wsp.uncached_files(ws, "use") == {"m.json": '{"n": 2}'}
    (ws / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"make": {"cmd": "x"}}}))
    wsp.set_lock_entry(ws, "use", {"cmd": "y", "outs": [{"path": "out.txt", "md5": "0" * 32}]})
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert lock["stages"]["make"] == {"cmd": "x"} and wsp.lock_entry(ws, "use")["cmd"] == "y"
    assert wsp.default_remote(ws) is None


def test_remote_from_environment_goes_to_config_local(tmp_path):
    ws = small_repo(tmp_path / "ws", remote=tmp_path / "shared")
    assert wsp.default_remote(ws) == "store"
    name = wsp.configure_remote_from_env(ws, {**__import__("os").environ, wsp.REMOTE_URL: str(tmp_path / "other")})
    assert name == wsp.REMOTE_NAME
    assert str(tmp_path / "other") in (ws / ".dvc/config.local").read_text()
    assert "other" not in (ws / ".dvc/config").read_text()  # the committed config is untouched


def test_two_workspaces_hand_data_through_the_remote(tmp_path):
    remote = tmp_path / "remote"
    cpu, gpu = small_repo(tmp_path / "cpu", remote), small_repo(tmp_path / "gpu", remote)
    lines: list[str] = []
    made = wsp.run_stage(cpu, "make", remote=True, log=lines.append)
    assert made.ran and made.pushed and "Running stage 'make':" in lines
    # the other machine gets the flow's lock, pulls the inputs it names, runs, pushes
    (gpu / "dvc.lock").write_text((cpu / "dvc.lock").read_text())
    used = wsp.run_stage(gpu, "use", remote=True)
    assert used.pulled == ["data"] and used.ran
    assert (gpu / "out.txt").read_text() == "aa"
    # back on the first machine: its lock entry and uncached metrics, then a pull of what it made
    wsp.set_lock_entry(cpu, "use", wsp.lock_entry(gpu, "use"))
    (cpu / "m.json").write_text(wsp.uncached_files(gpu, "use")["m.json"])
    assert not (cpu / "out.txt").exists()
    rc, out = wsp.dvc(cpu, "pull", "use")
    assert rc == 0 and (cpu / "out.txt").read_text() == "aa"
    again = wsp.run_stage(cpu, "use", remote=True)
    assert not again.ran  # the result came from the other machine: nothing to recompute

    with pytest.raises(wsp.StageError) as err:
        wsp.run_stage(cpu, "broken")
    assert err.value.stage == "broken" and err.value.phase == "repro"
    assert "broken - data/a.txt is not a video" in str(err.value)
    shutil.rmtree(remote)
    shutil.rmtree(gpu / ".dvc" / "cache")
    shutil.rmtree(gpu / "data")
    with pytest.raises(wsp.StageError, match="stage 'use': pull failed"):
        wsp.run_stage(gpu, "use", remote=True, force=True)


def test_workspace_lock_serializes_runs_but_lets_the_holders_own_deployment_in(tmp_path):
    (tmp_path / ".dvc").mkdir()
    order: list[str] = []
    with wsp.workspace_lock(tmp_path, owner="run-a"):
        with wsp.workspace_lock(tmp_path, owner="train-of-a", shared_with="run-a"):  # sent by the holder
            order.append("train-of-a")

        def other():
            with wsp.workspace_lock(tmp_path, owner="run-b", shared_with="run-x", log=order.append):
                order.append("run-b")

        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.5)
        order.append("a-done")
    t.join(10)
    assert order[0] == "train-of-a" and order[-2:] == ["a-done", "run-b"]
    assert any("waiting for flow run run-a" in line for line in order)


def test_plan_sends_consecutive_training_stages_to_the_gpu_together():
    from flows.retrain import plan

    order = ["synthesize", "tiny_model", "sft", "train", "evaluate", "register"]
    assert plan(order, None, on_gpu=True) == [["synthesize"], ["tiny_model"], ["sft", "train"], ["evaluate"],
                                              ["register"]]
    assert plan(order, None, on_gpu=False) == [[s] for s in order]
    assert plan(order, ["register", "train"], on_gpu=True) == [["train"], ["register"]]  # pipeline order
    with pytest.raises(ValueError, match=r"unknown stages \['trian'\]"):
        plan(order, ["trian"], on_gpu=True)
