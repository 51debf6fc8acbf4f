"""The command line's usage errors: one line, exit 2, before anything starts; --version."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from videorft.cli import main  # noqa: E402


def run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.startswith("videorft ") and len(out.split()) >= 2


@pytest.mark.parametrize("cmd", [["summary"], ["promote"], ["rollback"]])
def test_a_params_file_that_is_not_there_is_one_clear_line(cmd, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(cmd + ["--params", "nope.yaml"], capsys)
    assert code == 2 and err == "videorft: params file nope.yaml not found\n"


@pytest.mark.parametrize("cmd", ["flow", "retrain"])
def test_an_unknown_stage_is_refused_before_a_flow_starts(cmd, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages:\n  synthesize: {cmd: x}\n  train: {cmd: y}\n")
    monkeypatch.setitem(sys.modules, "flows.pipeline", None)  # importing a flow would fail the test
    monkeypatch.setitem(sys.modules, "flows.retrain", None)
    code, _, err = run([cmd, "train", "nosuchstage"], capsys)
    assert code == 2 and err == "videorft: unknown stage nosuchstage; dvc.yaml here has: synthesize train\n"
