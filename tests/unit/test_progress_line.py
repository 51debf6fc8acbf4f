"""The training terminal line: step, reward, each task's reward parts, KL, step time; nothing for empty logs."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stages.rl.progress import log_line  # noqa: E402


def test_one_line_per_log_with_each_task_parts():
    logs = {"loss": 0.004, "reward": 1.2544, "kl": 0.0412, "step_time": 0.886, "grad_norm": 0.7,
            "rewards/tg_format/mean": 1.0, "rewards/tg_iou/mean": 0.3127, "rewards/tg_iou/std": 0.1,
            "rewards/gqa_format/mean": 0.97, "rewards/gqa_accuracy/mean": 0.25, "rewards/gqa_evidence_iou/mean": 0.4,
            "rewards/qa_format/mean": 1.0, "rewards/qa_accuracy/mean": 0.5,
            "rewards/tracking_format/mean": None, "rewards/tracking_iou/mean": None}
    line = log_line(logs, 10, 150, ["tg", "gqa", "tracking", "qa"])
    assert line == ("step 10/150 | reward 1.254 | tg format 1.00 iou 0.31 | gqa format 0.97 accuracy 0.25 "
                    "evidence_iou 0.40 | qa format 1.00 accuracy 0.50 | kl 0.041 | 0.89 s/step")
    assert "\n" not in line and "grad_norm" not in line  # the full dict goes to MLflow, not the terminal


def test_end_of_training_totals_and_empty_logs_print_nothing():
    assert log_line({"train_runtime": 139.1, "train_loss": 0.0042}, 150, 150, ["tg"]) is None  # the stage says it
    assert log_line({"learning_rate": 3e-4}, 3, 150, ["tg"]) is None


def test_guided_groups_show_only_when_gold_answers_entered():
    logs = {"reward": 1.0, "kl": 0.01, "rewards/gqa_format/mean": 0.61}
    assert "guided" not in log_line({**logs, "guide/guided_frac": 0.0}, 60, 150, ["gqa"])
    assert log_line({**logs, "guide/guided_frac": 0.025}, 60, 150, ["gqa"]) == (
        "step 60/150 | reward 1.000 | gqa format 0.61 | kl 0.010 | guided 0.03")
