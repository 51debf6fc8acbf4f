"""Stage train: multi-task GRPO on the train samples, video reaching generation and the loss forward.

Reads data/samples/train.jsonl and the frame cache; writes models/run/ (safetensors + processor +
train_summary.json) and logs every training metric — per-task reward curves (rewards/<task>_<part>/mean), KL,
completion length, frac_reward_zero_std, filter/, guide/, t_grpo/ and val/ (greedy validation) metrics when those options
are on — to one MLflow
run. A killed run resumes from its last complete checkpoint (stages/rl/checkpoints.py); train.num_processes > 1
re-launches the stage under accelerate/torchrun (stages/rl/launch.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from stages import run_inputs
from stages.io import read_jsonl, write_json
from stages.params import ModelParams, MlflowParams, Params, TrainParams, load_params

# TRL 1.16 settings the run depends on that TrainParams does not expose: pinned here so a TRL upgrade that moves
# a default cannot change the run silently. name -> (our value, TRL 1.16 default, why). docs/training.md lists
# them; tests/model/test_train_config.py checks the recorded TRL defaults against the installed TRL.
TRL_PINNED: dict[str, tuple[object, object, str]] = {
    "num_iterations": (1, 1, "one policy update per rollout batch (paper); the ratio in the clipped loss is 1"),
    "epsilon": (0.2, 0.2, "PPO clip range; inert at num_iterations=1"),
    "epsilon_high": (None, None, "upper clip = epsilon (symmetric)"),
    "importance_sampling_level": ("token", "token", "per-token ratios, as GRPO"),
    "multi_objective_aggregation": ("sum_then_normalize", "sum_then_normalize",
                                    "total reward = sum of the task's reward parts, then group-normalised"),
    "reward_weights": (None, None, "every reward part weighs 1 (reference section 4: unweighted sum)"),
    "mask_truncated_completions": (False, False, "a completion cut at max_completion_length still counts"),
    "use_bias_correction_kl": (False, True, "plain k3 KL (paper); TRL multiplies it by the ratio (1 here anyway)"),
    "top_entropy_quantile": (1.0, 1.0, "every token trains, not only high-entropy ones"),
    "entropy_coef": (0.0, 0.0, "no entropy bonus"),
    "use_adaptive_entropy": (False, False, "no entropy controller"),
    "off_policy_mask_threshold": (None, None, "no off-policy sequence masking"),
    "delta": (None, None, "no two-sided ratio clipping"),
    "sync_ref_model": (False, False, "the reference stays the initial model"),
    "disable_dropout": (False, False, "Qwen-VL configs have zero dropout anyway"),
    "cast_lm_head_to_fp32": (False, False, "lm_head in the training dtype"),
    "repetition_penalty": (1.0, 1.0, "rollouts sample the raw policy distribution"),
    "min_p": (None, None, "no min-p filtering in rollouts"),
    "generation_kwargs": (None, None, "nothing else overrides sampling"),
    "shuffle_dataset": (True, True, "seeded shuffle of prompts (same order on resume)"),
    "use_vllm": (False, False, "rollouts with transformers generate (video reaches it; see video_grpo.py)"),
    "ds3_gather_for_generation": (True, True, "ZeRO-3 gathers weights for generation (fast; needs the memory)"),
    "pad_to_multiple_of": (None, "auto", "no extra padding (TRL's 'auto' resolves per backend)"),
    "log_completions": (False, False, "no completion tables (they would hold every prompt)"),
    "warmup_steps": (0, 0, "constant learning rate from step 1 (paper)"),
    "weight_decay": (0.0, 0.0, "no weight decay"),
    "adam_beta1": (0.9, 0.9, "AdamW"),
    "adam_beta2": (0.999, 0.999, "AdamW"),
    "adam_epsilon": (1e-8, 1e-8, "AdamW"),
    "save_only_model": (False, False, "checkpoints hold optimizer, scheduler and RNG state: exact resume"),
    "save_strategy": ("steps", "steps", "checkpoint every save_steps"),
    "dataloader_num_workers": (0, 0, "frames are memory-mapped; no worker processes"),
    "remove_unused_columns": (False, False, "reward functions read task, solution, id, frames, fps"),
    "report_to": ("none", "none", "our MlflowLogger logs into the stage's own run"),
}


def build_dataset(rows: list[dict], tasks: list[str]):
    """Sample rows -> the columns the trainer and the reward functions read. Per-task sampling weights are
    already in the rows (build_samples repeats/subsamples them); the sampler draws rows uniformly."""
    from datasets import Dataset

    from stages.model.video_inputs import video_message

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
            "frame_times": r.get("frame_times"),  # None: read beside the frames (stages/model/video_inputs.py)
            "solution": json.dumps(r["solution"]),  # one string column: solutions differ in shape per task
        }
        for r in keep
    ])


def grpo_config(p: TrainParams, output_dir: str, use_cpu: bool):
    """Every GRPO knob we depend on, set explicitly (TRL's defaults differ from the paper's)."""
    from trl import GRPOConfig

    pinned = {name: value for name, (value, _default, _why) in TRL_PINNED.items()}
    return GRPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=p.per_device_train_batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps,
        steps_per_generation=p.gradient_accumulation_steps,  # one rollout batch per optimizer step
        num_generations=p.num_generations,
        max_completion_length=p.max_completion_length,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k,
        beta=p.beta,
        loss_type=p.loss_type,
        scale_rewards=p.scale_rewards,
        learning_rate=p.learning_rate,
        lr_scheduler_type=p.lr_scheduler_type,
        optim=p.optim,
        max_grad_norm=p.max_grad_norm,
        max_steps=p.max_steps,
        num_train_epochs=p.num_train_epochs,
        logging_steps=p.logging_steps,
        save_steps=p.save_steps,
        save_total_limit=p.save_total_limit,
        bf16=p.bf16 and not use_cpu,
        activation_checkpointing=p.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if p.gradient_checkpointing else None,
        deepspeed=p.deepspeed,
        use_cpu=use_cpu,
        seed=p.seed,
        data_seed=p.seed,
        **pinned,
    )


class MlflowLogger:
    """A TrainerCallback that logs every training log line to the active MLflow run (rank 0 only)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Logger(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                import mlflow

                from stages.mlflow_log import finite_metrics

                if logs and state.is_world_process_zero and mlflow.active_run() is not None:
                    mlflow.log_metrics(finite_metrics(logs), step=state.global_step)

        return _Logger()


def run_name(p: TrainParams, model_p: ModelParams, fingerprint: str) -> str:
    """What a user scanning MLflow's runs list needs to tell training runs apart: loss, tasks, model family, and
    the start of the checkpoint fingerprint (same params, model and data: same name; a resumed run keeps it)."""
    return f"train-{p.loss_type}-{'+'.join(p.tasks)}-{model_p.family}-{fingerprint[:6]}"


@contextlib.contextmanager
def mlflow_run(is_main: bool, mlflow_p: MlflowParams, run_file: Path, resuming: bool, name: str):
    """The stage's MLflow run on rank 0 (none elsewhere). A resumed training run continues its MLflow run, so
    its curves stay one series: back to RUNNING, owned by this process, FINISHED at the end. Runs that killed
    training processes of this host left RUNNING are marked KILLED (stages/lineage.py)."""
    if not is_main:
        yield None
        return
    import mlflow

    from stages.lineage import kill_orphaned_runs, owner_tags
    from stages.mlflow_log import setup

    setup(mlflow_p)
    if mlflow_p.log_system_metrics:
        from mlflow.system_metrics import set_system_metrics_sampling_interval

        set_system_metrics_sampling_interval(mlflow_p.system_metrics_interval_s)
    system = {"log_system_metrics": mlflow_p.log_system_metrics}
    previous = json.loads(run_file.read_text()).get("run_id") if (resuming and run_file.exists()) else None
    nested = mlflow.active_run() is not None
    try:
        active = (mlflow.start_run(run_id=previous, run_name=name, nested=nested, tags=owner_tags(), **system)
                  if previous else None)
    except Exception as e:  # the tracking store no longer has it (another database): start a new run
        print(f"train: cannot continue MLflow run {previous} ({e}); starting a new one", file=sys.stderr)
        active = None
    if active is None:  # also names and owns the run a flow made (MLFLOW_RUN_ID)
        active = mlflow.start_run(run_name=name, nested=nested, tags=owner_tags(), **system)
    kill_orphaned_runs(mlflow.MlflowClient(), active.info.experiment_id, lambda m: print(f"train: {m}"))
    run_file.parent.mkdir(parents=True, exist_ok=True)
    write_json(run_file, {"run_id": active.info.run_id})
    with active:
        yield active


def init_deepspeed_comm(args) -> None:
    """DeepSpeed's communicator on top of the process group accelerate set up. On GPU accelerate does this itself;
    on CPU (gloo) it does not, and ZeRO-3's zero.Init would then size its batch for a world of one."""
    import deepspeed

    _ = args.device  # accelerate's distributed setup (torch.distributed process group)
    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend="gloo" if args.use_cpu else "nccl")


def save_final(trainer, processor, p: TrainParams, model_p: ModelParams, out: Path, is_main: bool) -> None:
    """Final weights in safetensors: the full model, or with LoRA the base with the adapter merged (loadable
    without peft by evaluate/register) plus the adapter alone in out/adapter."""
    if p.lora.enabled:
        trainer.save_model(str(out / "adapter"))
        if is_main:
            from stages.model.load import merge_lora

            merge_lora(model_p.name_or_path, str(out / "adapter"), str(out))
    else:
        trainer.save_model(str(out))
    if is_main:
        processor.save_pretrained(str(out))


def run(p: TrainParams, model_p: ModelParams, mlflow_p: MlflowParams, samples_path: str, think: bool = True,
        params: Params | None = None, lock_path: str = "dvc.lock") -> dict:
    """GRPO training of model_p on the samples. `params` (the whole parameter set) adds the upstream sections'
    params to the MLflow run (stages/run_inputs.py); the samples file is logged as its training dataset."""
    import mlflow
    import torch

    from stages import tasks as task_registry
    from stages.model.input_cache import input_cache
    from stages.model.load import load_for_training
    from stages.rl import checkpoints, policy, weight_ema
    from stages.rl.launch import world_rank
    from stages.rl.validation import split_validation
    from stages.rl.video_grpo import VideoGRPOTrainer

    is_main = world_rank() == 0
    rows = [r for r in read_jsonl(samples_path) if r["task"] in p.tasks]
    rows, val_rows = split_validation(rows, p.tasks, p.validation.per_task, p.validation.seed)
    dataset = build_dataset(rows, p.tasks)
    out = Path(p.out_dir)
    use_cpu = not torch.cuda.is_available()

    fp = checkpoints.fingerprint(p.model_dump(), model_p.model_dump(), samples_path, think)
    run_dir = Path(p.checkpoint_dir) / fp
    if is_main:
        checkpoints.remove_stale(p.checkpoint_dir, keep=fp)
        if not p.resume:
            shutil.rmtree(run_dir, ignore_errors=True)
    # with a weight average, a checkpoint is complete once its ema.safetensors is written (after trainer_state.json)
    needs = (weight_ema.FILE,) if p.weight_ema else ()
    resume_from = checkpoints.last_complete(run_dir, needs) if p.resume else None

    # the config first: with ZeRO-3 it makes from_pretrained partition the weights as they load (zero.Init)
    args = grpo_config(p, str(run_dir), use_cpu)
    if args.deepspeed:
        init_deepspeed_comm(args)
    model, processor = load_for_training(model_p, p.bf16, use_cpu)
    frozen = policy.freeze_vision_tower(model) if p.freeze_vision_tower else 0
    t0 = time.time()
    with mlflow_run(is_main, mlflow_p, run_dir / "mlflow_run.json", resume_from is not None,
                    run_name(p, model_p, fp)) as active:
        if active is not None:
            mlflow.set_tags({"stage": "train", "model": model_p.name_or_path, "fingerprint": fp})
            if resume_from is None:
                mlflow.log_params({f"train.{k}": v for k, v in p.model_dump().items()})
                mlflow.log_params({"model.name_or_path": model_p.name_or_path, "train.samples": len(dataset),
                                   "train.validation_rows": len(val_rows)})
                mlflow.log_params({f"trl.{k}": v for k, (v, _d, _w) in TRL_PINNED.items()})
                run_inputs.log_run_inputs(mlflow.MlflowClient(), active.info.run_id, "training", samples_path,
                                          params, lock_path)
        cache = input_cache(p.input_cache_dir)
        trainer = VideoGRPOTrainer(
            model=model,
            processing_class=processor,
            reward_funcs=task_registry.reward_functions(p.tasks, think=think),
            args=args,
            train_dataset=dataset,
            callbacks=[MlflowLogger()],
            peft_config=policy.lora_config(p.lora),
            drop_zero_std_groups=p.drop_zero_std_groups,
            guide_lost_groups=p.guide_lost_groups,
            box_credit=p.box_credit,
            task_groups=p.task_groups,
            t_grpo=p.t_grpo,
            think=think,
            input_cache=cache,
            rollout_engine=p.rollout_engine,
        )
        ema = None
        if p.weight_ema:  # the saved model is the average of the trajectory (stages/rl/weight_ema.py)
            ema = weight_ema.WeightEma(trainer.model, p.weight_ema)
            if resume_from is not None:
                ema.load(resume_from)
            trainer.add_callback(weight_ema.callback(ema))  # before validation's: it validates the updated average
        validator = None
        if val_rows:  # greedy validation and the choice of the saved step (stages/rl/validation.py)
            from stages.rl.validator import Validator, callback

            validator = Validator(val_rows, processor, p.validation, p.max_completion_length, think, run_dir,
                                  input_cache=cache)
            validator.ema = ema
            validator.resume(int(resume_from.name.split("-")[-1]) if resume_from else 0)
            trainer.add_callback(callback(validator))
        from transformers.trainer_callback import ProgressCallback

        from stages.rl.progress import compact_progress

        if trainer.pop_callback(ProgressCallback) is not None:  # a tqdm bar was on: keep it, readable lines
            trainer.add_callback(compact_progress(p.tasks))
        if resume_from is not None and is_main:
            print(f"train: resuming from {resume_from}", flush=True)
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        final_step = trainer.state.global_step
        validation = pick = None
        if validator is not None:
            pick = validator.finish(trainer.model, final_step)
            validation = validator.summary(pick, final_step)
        if ema is not None and (pick is None or pick["step"] == final_step):
            ema.copy_to_model()
        save_final(trainer, processor, p, model_p, out, is_main)
        history = [h for h in trainer.state.log_history if "loss" in h]
        summary = {
            "mlflow_run_id": active.info.run_id if active else None,
            "mlflow_experiment_id": active.info.experiment_id if active else None,
            "base_model": model_p.name_or_path,
            "family": model_p.family,
            "fingerprint": fp,
            "resumed_from_step": int(resume_from.name.split("-")[-1]) if resume_from else None,
            "samples": len(dataset),
            "samples_per_task": {t: sum(1 for r in dataset["task"] if r == t) for t in p.tasks},
            "world_size": trainer.accelerator.num_processes,
            "trainable_parameters": sum(getattr(q, "ds_numel", q.numel())  # ZeRO-3 partitions: full size
                                        for q in trainer.model.parameters() if q.requires_grad),
            "frozen_vision_parameters": frozen,
            "steps": final_step,
            "selected_step": validation["selected_step"] if validation else final_step,
            "train_loss": result.training_loss,
            "seconds": round(time.time() - t0, 2),
            "last_log": history[-1] if history else {},
            "validation": validation,
        }
        if active is not None:
            mlflow.log_metrics({"train_seconds": summary["seconds"], "selected_step": summary["selected_step"]})
    if is_main:
        write_json(out / "train_summary.json", summary)
        write_json("metrics/train.json", {k: summary[k] for k in ("steps", "selected_step", "samples", "train_loss", "seconds")})
        if not p.keep_checkpoints:
            shutil.rmtree(run_dir, ignore_errors=True)
    return summary


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    params = load_params()
    from stages.rl import launch

    if params.train.num_processes > 1 and not launch.in_worker():
        sys.exit(launch.relaunch(params.train))
    from stages.sft import start_model

    model_p = params.model.model_copy(update={"name_or_path": start_model(params)})
    s = run(params.train, model_p, params.mlflow, os.path.join(params.build_samples.out_dir, "train.jsonl"),
            think=params.build_samples.think, params=params)
    if launch.world_rank() == 0:
        print(f"train: {s['steps']} steps on {s['samples']} samples ({s['world_size']} processes) in "
              f"{s['seconds']} s; MLflow run {s['mlflow_run_id']}")
    launch.finish()


if __name__ == "__main__":
    main()
