"""Stage train: multi-task GRPO on the train samples, video reaching generation and the loss forward.

Reads data/samples/train.jsonl and the frame cache; writes models/run/ (safetensors + processor +
train_summary.json) and logs every training metric — per-task reward curves (rewards/<task>_<part>/mean), KL,
completion length, frac_reward_zero_std — to one MLflow run.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from stages.io import read_jsonl, write_json
from stages.params import ModelParams, MlflowParams, TrainParams, load_params


def build_dataset(rows: list[dict], tasks: list[str]):
    """Sample rows -> the columns the trainer and the reward functions read."""
    from datasets import Dataset

    from stages.rl.video_inputs import video_message

    keep = [r for r in rows if r["task"] in tasks]
    if not keep:
        raise ValueError(f"no training samples for tasks {tasks}")
    return Dataset.from_list([
        {
            "id": r["id"],
            "task": r["task"],
            "prompt": video_message(r["prompt"]),
            "frames": r["frames"],
            "fps": float(r["fps"]),
            "solution": json.dumps(r["solution"]),  # one string column: solutions differ in shape per task
        }
        for r in keep
    ])


def grpo_config(p: TrainParams, output_dir: str, use_cpu: bool):
    """Every GRPO knob we depend on, set explicitly (TRL's defaults differ from the paper's)."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=p.per_device_train_batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps,
        num_generations=p.num_generations,
        max_completion_length=p.max_completion_length,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k,
        beta=p.beta,
        loss_type=p.loss_type,
        scale_rewards=p.scale_rewards,
        num_iterations=1,  # one update per rollout (paper)
        epsilon=0.2,
        learning_rate=p.learning_rate,
        lr_scheduler_type=p.lr_scheduler_type,
        warmup_steps=0,
        max_steps=p.max_steps,
        num_train_epochs=p.num_train_epochs,
        logging_steps=p.logging_steps,
        save_strategy="steps",
        save_steps=p.save_steps,
        save_total_limit=1,
        bf16=p.bf16 and not use_cpu,
        gradient_checkpointing=p.gradient_checkpointing,
        use_cpu=use_cpu,
        seed=p.seed,
        data_seed=p.seed,
        report_to="none",  # our MlflowLogger below logs into the stage's own run
        remove_unused_columns=False,
        log_completions=False,
    )


class MlflowLogger:
    """A TrainerCallback that logs every training log line to the active MLflow run."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Logger(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                import mlflow

                from stages.tracking import finite_metrics

                if logs and state.is_world_process_zero:
                    mlflow.log_metrics(finite_metrics(logs), step=state.global_step)

        return _Logger()


def run(p: TrainParams, model_p: ModelParams, mlflow_p: MlflowParams, samples_path: str, think: bool = True) -> dict:
    import mlflow
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from stages import tasks as task_registry
    from stages.rl.video_grpo import VideoGRPOTrainer
    from stages.tracking import setup

    rows = read_jsonl(samples_path)
    dataset = build_dataset(rows, p.tasks)
    out = Path(p.out_dir)
    use_cpu = not torch.cuda.is_available()
    processor = AutoProcessor.from_pretrained(model_p.name_or_path)
    model = AutoModelForImageTextToText.from_pretrained(
        model_p.name_or_path, dtype=torch.bfloat16 if (p.bf16 and not use_cpu) else torch.float32
    )
    setup(mlflow_p)
    t0 = time.time()
    with mlflow.start_run(run_name=f"train-{model_p.family}", nested=mlflow.active_run() is not None) as active:
        mlflow.set_tags({"stage": "train", "model": model_p.name_or_path})
        mlflow.log_params({f"train.{k}": v for k, v in p.model_dump().items()})
        mlflow.log_params({"model.name_or_path": model_p.name_or_path, "train.samples": len(dataset)})
        trainer = VideoGRPOTrainer(
            model=model,
            processing_class=processor,
            reward_funcs=task_registry.reward_functions(p.tasks, think=think),
            args=grpo_config(p, str(out / "checkpoints"), use_cpu),
            train_dataset=dataset,
            callbacks=[MlflowLogger()],
        )
        result = trainer.train()
        trainer.save_model(str(out))
        processor.save_pretrained(str(out))
        history = [h for h in trainer.state.log_history if "loss" in h]
        summary = {
            "mlflow_run_id": active.info.run_id,
            "mlflow_experiment_id": active.info.experiment_id,
            "base_model": model_p.name_or_path,
            "samples": len(dataset),
            "samples_per_task": {t: sum(1 for r in dataset["task"] if r == t) for t in p.tasks},
            "steps": trainer.state.global_step,
            "train_loss": result.training_loss,
            "seconds": round(time.time() - t0, 2),
            "last_log": history[-1] if history else {},
        }
        mlflow.log_metric("train_seconds", summary["seconds"])
    write_json(out / "train_summary.json", summary)
    write_json("metrics/train.json", {k: summary[k] for k in ("steps", "samples", "train_loss", "seconds")})
    return summary


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    params = load_params()
    s = run(params.train, params.model, params.mlflow, os.path.join(params.build_samples.out_dir, "train.jsonl"),
            think=params.build_samples.think)
    print(f"train: {s['steps']} steps on {s['samples']} samples in {s['seconds']} s; MLflow run {s['mlflow_run_id']}")


if __name__ == "__main__":
    main()
