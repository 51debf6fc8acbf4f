"""Both arms of the micro-reproduction at their smallest size (issue 17): GRPO and SFT from the shipped base on the
same 2 samples per task, two seeds each, the SFT arm's lr and epochs chosen on a validation split, the paired
comparison written as a table, a plot and one MLflow run. CI-sized (a few CPU minutes); the full comparison and
its figures: docs/micro-repro.md."""
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.slow


def test_both_arms_at_the_smallest_size(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from recipes.micro_repro import main
    from stages.io import read_json, read_jsonl

    recipe = yaml.safe_load((ROOT / "recipes/micro-repro.yaml").read_text())
    recipe["micro_repro"].update(sizes=[0, 2], seeds=[0, 1], epochs=1.0, eval_per_task=4, arms=["grpo", "sft"],
                                 sft_lrs=[5e-4, 1e-3], sft_epochs=[1, 2], validation_per_task=2)
    recipe["synthesize"].update(num_videos=40, num_tracking_sequences=12)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    work = tmp_path / "work"
    main(["--recipe", str(path), "--workdir", str(work), "-S", f"mlflow.tracking_uri={uri}"])

    out = work / "results"
    grpo, sft, arms = read_json(out / "results.json"), read_json(out / "sft.json"), read_json(out / "arms.json")
    assert [r["n"] for r in sft["sizes"]] == [0, 2] and sft["sizes"][0] == grpo["sizes"][0]  # one start model
    # evaluate.video_swap (params.yaml): every evaluated model also answered with another video's frames
    for row in grpo["sizes"]:
        assert set(row["video_swap"]) == {"tg", "gqa", "tracking", "qa"}
        assert all(set(r["video_swap"]["tg"]) == {"metric", "own", "other", "delta", "lo", "hi"} for r in row["runs"])
    assert "Do the answers use the video?" in (out / "results.md").read_text()
    chosen = sft["sizes"][1]["selection"]
    assert len(chosen["trials"]) == 4 and (chosen["lr"], chosen["epochs"]) in {(5e-4, 1), (5e-4, 2), (1e-3, 1), (1e-3, 2)}
    assert chosen["score"] == max(t["score"] for t in chosen["trials"])
    assert [run["seed"] for run in sft["sizes"][1]["runs"]] == [0, 1]

    # the validation split: training videos no subset and no held-out sample uses
    val = set(sft["validation_ids"])
    train = {r["id"]: r["video_id"] for r in read_jsonl(work / "data/samples/train.jsonl")}
    subset = read_jsonl(work / "data/samples/train-2.jsonl")
    held_out = {r["video_id"] for r in read_jsonl(work / "data/samples/eval.jsonl")}
    assert val and val <= set(train)
    assert not {train[i] for i in val} & ({r["video_id"] for r in subset} | held_out)

    (row,) = arms["sizes"]
    assert row["n"] == 2 and set(row["metrics"]) >= {"tg.mIoU", "tracking.AO", "qa.accuracy"}
    for cell in row["metrics"].values():
        for d in (cell["sft_minus_grpo"], cell["grpo"]["vs_base"], cell["sft"]["vs_base"]):
            assert d["lo"] <= d["delta"] <= d["hi"] and d["runs"][0] in (1, 2)
        assert cell["sft_minus_grpo"]["delta"] == pytest.approx(cell["sft"]["mean"] - cell["grpo"]["mean"], abs=1e-6)
    assert (out / "arms.png").stat().st_size > 10_000 and "SFT - GRPO" in (out / "arms.md").read_text()

    client = MlflowClient(uri)
    run = client.get_run(arms["mlflow_run_id"])
    assert run.data.tags["arm"] == "grpo-vs-sft"
    for arm in ("grpo", "sft"):
        (point,) = client.get_metric_history(run.info.run_id, f"{arm}/tg/mIoU")
        assert point.step == 2 and point.value == pytest.approx(row["metrics"]["tg.mIoU"][arm]["mean"])
