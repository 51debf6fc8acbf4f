"""The I/O shell of greedy validation during training (the rules are stages/rl/validation.py): a TrainerCallback
that answers the validation rows greedily, logs each task's metrics, keeps the weights of the step the rule picks
so far, and puts them back into the model before it is saved.

Files, in the run's checkpoint directory (so a killed run resumes with its history): validation/history.json and
validation/weights-<step>.safetensors (the trainable parameters of the step picked so far; one file at a time).
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from stages.io import write_json
from stages.rl.validation import selected


class Validator:
    def __init__(self, rows: list[dict], processor, p, max_new_tokens: int, think: bool, run_dir: Path,
                 input_cache=None, headline: dict[str, str] | None = None):
        from stages import tasks as task_registry

        self.rows, self.processor, self.p = rows, processor, p
        self.max_new_tokens, self.think, self.input_cache = max_new_tokens, think, input_cache
        tasks = sorted({r["task"] for r in rows}, key=list(task_registry.TASKS).index)
        self.headline = headline or {t: task_registry.headline()[t] for t in tasks}
        self.dir = Path(run_dir) / "validation"
        self.history: list[dict] = []
        self.saved_step: int | None = None
        self.ema = None  # a WeightEma (stages/rl/weight_ema.py): validate, and keep, the average instead

    # -- state on disk ------------------------------------------------------------------------------------
    def _weights(self, step: int) -> Path:
        return self.dir / f"weights-{step}.safetensors"

    def resume(self, step: int) -> None:
        """Keep the history up to `step` (the step training resumes from; 0 for a new run)."""
        path = self.dir / "history.json"
        if step == 0 or not path.exists():
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)
            self.history, self.saved_step = [], None
            return
        state = json.loads(path.read_text())
        self.history = [h for h in state["history"] if h["step"] <= step]
        saved = state.get("saved_step")
        self.saved_step = saved if saved is not None and saved <= step and self._weights(saved).exists() else None

    def _write(self) -> None:
        write_json(self.dir / "history.json", {"history": self.history, "saved_step": self.saved_step,
                                               "select": self.p.select})

    # -- one validation -----------------------------------------------------------------------------------
    def validate(self, model, step: int) -> dict:
        from stages import tasks as task_registry
        from stages.model.generate import generate

        was_training = model.training
        model.eval()
        try:
            with self.ema.swapped() if self.ema is not None else contextlib.nullcontext():
                outputs = generate(model, self.processor, self.rows, self.max_new_tokens, self.p.batch_size,
                                   input_cache=self.input_cache)
                metrics, _records = task_registry.score_outputs(self.rows, outputs, self.think)
                return self._record(model, {"step": step, "metrics": metrics})
        finally:
            model.train(was_training)

    def _record(self, model, entry: dict) -> dict:
        """Add a validation to the history (replacing a later one a resume left) and save the weights when the
        rule picks this step so far."""
        step = entry["step"]
        self.history = [h for h in self.history if h["step"] < step] + [entry]
        self.dir.mkdir(parents=True, exist_ok=True)
        pick = selected(self.history, self.p.select, self.headline, self.p.parse_drop)
        if self.p.select != "last" and pick is entry:
            self._save(model, step)
        self._write()
        return entry

    def _save(self, model, step: int) -> None:
        from safetensors.torch import save_file

        save_file({n: q.detach().cpu().contiguous() for n, q in model.named_parameters() if q.requires_grad},
                  str(self._weights(step)))
        for old in self.dir.glob("weights-*.safetensors"):
            if old != self._weights(step):
                old.unlink()
        self.saved_step = step

    def line(self, entry: dict) -> str:
        """One readable line: step, each task's headline metric and parse rate, and the step picked so far."""
        fields = [f"validate step {entry['step']}"]
        for task, metric in self.headline.items():
            m = entry["metrics"].get(task, {})
            fields.append(f"{task} {metric} {float(m.get(metric, 0.0)):.3f} parse {float(m.get('parse_rate', 0.0)):.2f}")
        pick = selected(self.history, self.p.select, self.headline, self.p.parse_drop)
        fields.append(f"{self.p.select}: step {pick['step'] if pick else 'none'}")
        return " | ".join(fields)

    # -- the end --------------------------------------------------------------------------------------------
    def finish(self, model, final_step: int) -> dict | None:
        """Load the picked step's weights into `model` when it is not the final step (with an average: the average
        at that step); returns the picked entry."""
        pick = selected(self.history, self.p.select, self.headline, self.p.parse_drop)
        if pick is None or pick["step"] == final_step:
            return pick
        if self.saved_step != pick["step"]:
            raise RuntimeError(f"validation picked step {pick['step']} but holds the weights of step "
                               f"{self.saved_step} ({self.dir}): a resume lost them; rerun with train.resume=false")
        from safetensors.torch import load_file

        saved = load_file(str(self._weights(pick["step"])))
        missing, unexpected = model.load_state_dict(saved, strict=False)
        trainable = {n for n, q in model.named_parameters() if q.requires_grad}
        if unexpected or trainable - set(saved):
            raise RuntimeError(f"validation weights of step {pick['step']} do not match the model "
                               f"(unexpected {unexpected[:3]}, missing {sorted(trainable - set(saved))[:3]})")
        print(f"train: validation ({self.p.select}) keeps step {pick['step']} of {final_step}", flush=True)
        return pick

    def summary(self, pick: dict | None, final_step: int) -> dict:
        return {"select": self.p.select, "rows": len(self.rows), "selected_step": pick["step"] if pick else None,
                "final_step": final_step, "history": self.history}


def callback(validator: Validator):
    """The TrainerCallback (call validator.resume() first): validates before the first step (a resumed run: not
    again), every `steps` steps and at the last step; logs val/<task>/<metric> to MLflow at that step and prints one line."""
    from transformers import TrainerCallback

    def report(entry: dict, state) -> None:
        if not state.is_world_process_zero:
            return
        import mlflow

        from stages.mlflow_log import finite_metrics

        flat = {f"val/{t}/{k}": v for t, m in entry["metrics"].items() for k, v in m.items() if k != "count"}
        if mlflow.active_run() is not None:
            mlflow.log_metrics(finite_metrics(flat), step=entry["step"])
        print(validator.line(entry), file=sys.stdout, flush=True)

    class _Validate(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            # transformers calls this before it loads a resumed run's state: the stage called resume() already
            if not any(h["step"] == 0 for h in validator.history):
                report(validator.validate(model, 0), state)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = state.global_step
            if step % validator.p.steps == 0 or step >= state.max_steps:
                report(validator.validate(model, step), state)

    return _Validate()
