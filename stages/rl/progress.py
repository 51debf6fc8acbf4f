"""One readable terminal line per logging step instead of transformers' 40-key dict: step, reward, each task's
reward parts, KL and step time. Everything still goes to MLflow in full (stages/train.py MlflowLogger)."""
from __future__ import annotations


def log_line(logs: dict, step: int, max_steps: int, tasks: list[str]) -> str | None:
    """The line for one log event; None for events with nothing to say (a bare learning-rate log, or the
    end-of-training totals: the stage prints its own summary line)."""
    if "reward" not in logs:
        return None
    fields = [f"step {step}/{max_steps}", f"reward {float(logs['reward']):.3f}"]
    for task in tasks:
        head = f"rewards/{task}_"
        parts = [(k[len(head):-len("/mean")], v) for k, v in logs.items()
                 if k.startswith(head) and k.endswith("/mean") and v is not None]
        if parts:
            fields.append(f"{task} " + " ".join(f"{name} {float(v):.2f}" for name, v in parts))
    if logs.get("kl") is not None:
        fields.append(f"kl {float(logs['kl']):.3f}")
    if logs.get("guide/guided_frac"):  # shown only when gold answers entered the groups (stages/rl/guidance.py)
        fields.append(f"guided {float(logs['guide/guided_frac']):.2f}")
    if logs.get("step_time") is not None:
        fields.append(f"{float(logs['step_time']):.2f} s/step")
    return " | ".join(fields)


def compact_progress(tasks: list[str]):
    """transformers' ProgressCallback (the tqdm bar) with log_line() in place of the raw dict."""
    from transformers.trainer_callback import ProgressCallback

    class CompactProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not (state.is_world_process_zero and logs):
                return
            line = log_line(logs, state.global_step, state.max_steps, tasks)
            if line is None:
                return
            if self.training_bar is not None:
                self.training_bar.write(line)
            else:
                print(line, flush=True)

    return CompactProgress()
