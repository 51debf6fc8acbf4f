"""Typed configuration: one pydantic model per params.yaml section. The classes document every knob.

Stage name = module name = params.yaml section = dvc.yaml stage. Load with `load_params()`; dotted overrides
(`train.beta=0.02`) work the way `dvc exp run -S` writes them into params.yaml.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stages.tasks import TASKS

TASK_NAMES = tuple(TASKS)  # the registry's task list (stages/tasks/__init__.py), never a second one
# The default run: the paper's four tasks on the synthetic data's files (a registered task is used once it has an
# annotation file here; stvg has none by default, docs/tasks.md).
DEFAULT_ANNOTATIONS = {
    "tg": "data/synthetic/annotations/charades_sta.json",
    "gqa": "data/synthetic/annotations/nextgqa.json",
    "tracking": "data/synthetic/annotations/got10k.json",
    "qa": "data/synthetic/annotations/mcq.json",
}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in params.yaml is an error, not a silent default


class SynthesizeParams(Section):
    """Synthetic spatio-temporal benchmark: real H.264 videos + annotations in the upstream formats."""

    out_dir: str = Field("data/synthetic", description="Where videos/, got10k/ and annotations/ are written.")
    seed: int = Field(0, description="Everything generated is a deterministic function of this seed.")
    num_videos: int = Field(24, description="Number of .mp4 videos (used by tg, gqa and qa samples).")
    num_tracking_sequences: int = Field(12, description="Number of GOT-10k style JPEG frame folders.")
    width: int = Field(224, description="Frame width in pixels.")
    height: int = Field(168, description="Frame height in pixels.")
    fps: float = Field(8.0, description="Frame rate of generated videos.")
    min_duration: float = Field(6.0, description="Shortest video, seconds.")
    max_duration: float = Field(12.0, description="Longest video, seconds.")
    event_fraction: tuple[float, float] = Field(
        (0.3, 1.0), description="Shortest and longest time an object is visible, as fractions of its video "
        "(difficulty: the shorter the events, the less a blind guess of one interval scores; Charades-STA's "
        "events are ~0.25 of their videos).")
    objects_per_video: tuple[int, int] = Field(
        (2, 4), description="Fewest and most objects in a video (difficulty: with one, a query needs no colour "
        "binding; with several, the model must find the named one). At most 4 (lanes).")
    tracking_distractor: bool = Field(True, description="Draw a second, untracked shape in tracking sequences.")
    tracking_length: int = Field(24, description="Frames per tracking sequence.")
    tracking_motion: float = Field(
        1.0, ge=0.0, description="Difficulty knob: how far the tracked object travels, as a fraction of a path "
        "between two random points of the frame (its wobble scales alike). 1.0 = the whole path; 0 = it stays.")
    num_boxes: int = Field(8, description="Boxes per tracking annotation (VideoChat-R1 uses 8).")
    workers: int = Field(0, ge=0, description="Processes that render and encode (0 = one per CPU). Every video and "
                         "sequence draws from its own seed stream, so the bytes are the same at any count.")
    tasks: dict[str, dict] = Field(
        default_factory=dict, description="Options of the tasks whose module generates its own synthetic data "
        "(a `synthesize` hook, called after the shared videos): task name -> that hook's options. The four built-in "
        "tasks have none (their data is the shared videos, GOT-10k folders and annotations above).")


class IngestParams(Section):
    """Bring videos into data/raw with a manifest; unusable inputs go to quarantine with a reason.

    Fetched bytes live in a persistent content-addressed cache (cache_dir) that DVC does not delete before it
    re-runs the stage; data/raw is re-made from it by hardlinks, so a re-run fetches only new or changed files.
    Credentials are never parameters: S3 uses the environment or the AWS profile chain (see docs/data.md).
    """

    source: str = Field("data/synthetic/videos", description="Local folder or s3://bucket/prefix of video files.")
    frame_folders: str | None = Field(
        "data/synthetic/got10k",
        description="Local folder or s3://bucket/prefix whose sub-folders are JPEG frame sequences (GOT-10k), or null.",
    )
    frame_folder_fps: float = Field(10.0, description="Frame rate assumed for JPEG frame folders (GOT-10k: 10).")
    frame_folder_sidecars: list[str] = Field(
        ["groundtruth.txt", "meta_info.ini", "absence.label", "cover.label", "cut_by_image.label"],
        description="Files of a frame folder ingested next to its frames (GOT-10k annotations), if present.",
    )
    extensions: list[str] = Field([".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".ogv", ".mpg", ".mpeg"],
                                  description="Video file suffixes (all decoded and checked on the real-video "
                                  "corpus, docs/data.md).")
    out_dir: str = Field("data/raw", description="Where links to the files, manifest.jsonl and quarantine.jsonl go.")
    cache_dir: str = Field(
        ".cache/videorft", description="Persistent cache of fetched files and probe results (env VIDEORFT_CACHE_DIR wins)."
    )
    workers: int = Field(8, description="Parallel fetches (threads; S3 downloads are I/O bound).")
    verify_cached: bool = Field(
        True, description="Re-hash cached files on every run (catches corruption and in-place edits); false trusts "
        "size + ETag/mtime."
    )
    link_local: bool = Field(
        True, description="Hardlink local files into the cache when on the same filesystem (no second copy)."
    )
    progress: bool = Field(True, description="Show progress bars (stderr).")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint; None = AWS / AWS_ENDPOINT_URL.")
    s3_profile: str | None = Field(None, description="AWS profile name (credentials stay in the profile chain).")
    s3_max_attempts: int = Field(10, description="botocore standard retry mode: attempts per request.")
    s3_page_size: int = Field(1000, description="Keys per ListObjectsV2 page.")


class ExtractFramesParams(Section):
    """Frame sampling under the model's visual budget (Qwen2.5-VL conventions, all configurable)."""

    backend: Literal["decord", "pyav"] = Field(
        "pyav", description="Video decoder; PyAV is the faster one here for the same frames (bench/bench_frames.py)."
    )
    budget: Literal["per_video", "qwen_vl_utils"] = Field(
        "per_video", description="How frame count and size follow from the bounds below (stages/video/budget.py, "
        "docs/data.md). per_video: frames x height x width <= total_pixels for the whole video, frame count "
        "round(duration x fps). qwen_vl_utils: qwen-vl-utils' fetch_video arithmetic (what VideoChat-R1 used): frame "
        "count floor(frames / source fps x fps) to frame_factor; each frame's pixel cap is min(max_pixels, "
        "max(total_pixels / frames x frame_factor, int(1.05 x min_pixels))), so total_pixels bounds pixels per "
        "temporal patch (the visual token count x 28 x 28), about twice per_video's pixels, and min_pixels wins over "
        "it; smart_resize as Qwen's. Applies to video files; JPEG frame folders always use per_video."
    )
    fps: float = Field(2.0, description="Sampling rate, frames per second of video.")
    min_frames: int = Field(4, description="At least this many frames per video.")
    max_frames: int = Field(768, description="At most this many frames per video.")
    frame_factor: int = Field(2, description="Frame count is a multiple of this (temporal patch size).")
    size_factor: int = Field(28, description="Frame height and width are multiples of this (patch 14 x merge 2).")
    min_pixels: int = Field(16 * 28 * 28, description="Lower bound of height*width per frame.")
    max_pixels: int = Field(768 * 28 * 28, description="Upper bound of height*width per frame.")
    total_pixels: int = Field(3584 * 28 * 28, description="Upper bound of frames*height*width per video.")
    tracking_frames: int = Field(8, description="Frames for a JPEG-folder sequence: one per annotated box.")
    workers: int = Field(1, description="Worker processes (one video per task); 0 = one per CPU core.")
    decode_threads: int = Field(1, description="Decoder threads per worker (0 = FFmpeg's choice); processes scale better.")
    raw_dir: str = Field("data/raw", description="Ingest output to read (manifest.jsonl and the files it lists).")
    out_dir: str = Field("data/frames", description="Frames per video: <video_id>.npy + <video_id>.json.")
    cache_dir: str = Field(
        ".cache/videorft", description="Persistent frame cache keyed by (video sha256, frame plan); survives DVC's "
        "deletion of out_dir (env VIDEORFT_CACHE_DIR wins)."
    )
    progress: bool = Field(True, description="Show a progress bar (stderr).")


class BuildSamplesParams(Section):
    """Turn annotations + extracted frames into train/eval rows of every task."""

    annotations: dict[str, str | None] = Field(
        default_factory=lambda: dict(DEFAULT_ANNOTATIONS),
        description="Annotation file per task (null or missing = task not used).",
    )
    eval_fraction: float = Field(0.25, description="Fraction of VIDEOS held out for evaluation (split by video).")
    max_per_task: dict[str, int | None] = Field(default_factory=dict, description="Cap on train rows per task.")
    weights: dict[str, float] = Field(default_factory=dict, description="Per-task sampling weight (default 1).")
    think: bool = Field(True, description="Use the <think> prompt variant.")
    prompt_dir: str | None = Field(None, description="Folder of replacement prompt templates (<task>.txt).")
    interval_policy: Literal["clip", "reject"] = Field(
        "clip", description="Intervals that end after the video: clip the end to the duration, or reject. A "
        "negative start is rejected under either policy."
    )
    duration_tolerance: float = Field(
        0.05, ge=0, description="An annotation whose video duration differs from the video's measured one "
        "(ingest, from presentation timestamps) by more than max(duration_tolerance x measured, "
        "duration_tolerance_s) is quarantined: its times would point elsewhere in the video (a re-encoded or "
        "trimmed download, another video under the same id). Fraction of the measured duration.")
    duration_tolerance_s: float = Field(
        1.0, ge=0, description="Floor of that tolerance in seconds (annotations round durations; short clips).")
    max_prompt_chars: int = Field(
        8192, gt=0, description="Longest rendered prompt (characters of the task template with the annotation's "
        "text filled in); a longer one is quarantined with its length. Bounds what one annotation can put in "
        "front of the model (the demo's longest prompt is 516).")
    seed: int = Field(0, description="Seed of the split and of sampling.")
    out_dir: str = Field("data/samples", description="train.jsonl, eval.jsonl, quarantine.jsonl.")


class ModelParams(Section):
    """The policy model: a local path or a hub id. The demo builds a tiny one offline (stage tiny_model)."""

    name_or_path: str = Field("models/tiny-qwen2_5_vl", description="Local folder or hub id.")
    family: Literal["qwen2_5_vl", "qwen3_vl"] = Field(
        "qwen2_5_vl", description="Model family; checked against the checkpoint's config (model_type).")
    attn_implementation: str = Field(
        "sdpa", description="Attention kernel for training: sdpa, eager, or flash_attention_2 (needs flash-attn).")


class TinyModelParams(Section):
    """A tiny Qwen2.5-VL or Qwen3-VL with random weights, built from a config (no download)."""

    family: Literal["qwen2_5_vl", "qwen3_vl"] = Field(
        "qwen2_5_vl", description="Architecture: qwen2_5_vl (patch 14, second_per_grid_ts) or qwen3_vl (patch 16, "
        "timestamps in the text, deepstack). Set model.family to the same value.")
    out_dir: str = Field("models/tiny-qwen2_5_vl", description="Where save_pretrained writes.")
    seed: int = Field(0, description="Weight init seed.")
    hidden_size: int = Field(64, description="Language model width.")
    num_hidden_layers: int = Field(2, description="Language model depth.")
    num_attention_heads: int = Field(4, description="Attention heads.")
    num_key_value_heads: int = Field(2, description="KV heads.")
    intermediate_size: int = Field(128, description="MLP width.")
    vision_hidden_size: int = Field(32, description="Vision tower width.")
    vision_depth: int = Field(2, description="Vision tower depth.")
    vocab_size: int = Field(1024, description="Tokenizer vocabulary (BPE trained on a small corpus; decimals are single tokens).")
    rope_theta: float | None = Field(
        None, description="Language-model RoPE base; null = the family's (Qwen2.5-VL 1e6, Qwen3-VL 5e6). Qwen2.5-VL "
        "gives the height and width sections of M-RoPE the lowest frequencies: at a tiny head_dim and base 1e6 they "
        "turn by under 0.002 rad per grid step, so the language model cannot tell where in a frame a video token "
        "is (docs/base-model.md).")


class LoraParams(Section):
    """LoRA adapters (peft) instead of full fine-tuning. The reference model is then the base with the adapter
    disabled (no second copy of the weights). The saved model is the base with the adapter merged (safetensors);
    the adapter alone is kept in <out_dir>/adapter."""

    enabled: bool = Field(False, description="Train LoRA adapters only (base weights frozen).")
    r: int = Field(64, description="Adapter rank.")
    alpha: int = Field(128, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Linear layers (by name suffix) that get adapters.")
    exclude_modules: str | None = Field(
        r".*visual.*", description="Regex of modules never adapted (default: the whole vision tower, whose MLP "
        "shares the names gate/up/down_proj); null adapts matching vision layers too.")


class TGrpoParams(Section):
    """T-GRPO (Video-R1; reference section 7): G/2 extra rollouts per prompt on the same frames in a shuffled
    order (from the frame cache) score the task's accuracy part. When a group's ordered accuracy >= ratio x its
    shuffled accuracy, every ordered completion with accuracy > min_accuracy gets `bonus` added to its reward
    (logged as rewards/t_grpo_bonus). Shuffled rollouts only score; they never enter the loss."""

    enabled: bool = Field(False, description="Add the temporal-contrast bonus (paper: off; Video-R1: on).")
    ratio: float = Field(0.8, description="mu: bonus when ordered accuracy >= mu x shuffled accuracy.")
    bonus: float = Field(0.3, description="alpha: reward added to correct ordered completions.")
    min_accuracy: float = Field(0.1, description="A completion counts as correct above this accuracy.")


class ValidationParams(Section):
    """Greedy validation during GRPO (stages/rl/validation.py): rows set aside from training, answered with the
    evaluation's greedy decoding before the first step, every `steps` steps and at the last; each task's headline
    metric and parse rate logged (MLflow val/<task>/<metric>); `select` says which validated step is saved."""

    per_task: int = Field(0, ge=0, description="Training rows per task set aside for validation (whole videos, "
                          "drawn by `seed`; never all of a task's). 0 = no validation (paper).")
    steps: int = Field(50, ge=1, description="Validate every N optimizer steps (also before the first and at the "
                       "last step).")
    select: Literal["last", "guard", "best"] = Field(
        "guard", description="Which validated step becomes the model: last = the final weights; guard = the last "
        "step at which no task's greedy parse rate fell more than parse_drop below its start (a collapse of the "
        "answer layout rolls back, noise does not); best = highest mean headline metric (chases noise when "
        "per_task is small).")
    parse_drop: float = Field(0.1, ge=0.0, le=1.0, description="guard: largest tolerated fall of a task's greedy "
                              "parse rate below its value before training.")
    batch_size: int = Field(8, ge=1, description="Samples per greedy generate call.")
    seed: int = Field(0, description="Which rows are set aside.")


class SftParams(Section):
    """Optional supervised warm start before GRPO; off in the real recipe (which starts from a pretrained model).
    With `format` targets it teaches the answer layout; with `gold` it stands in for a pretrained model's partial
    perception (the CPU micro-reproduction, recipes/micro-repro.yaml)."""

    enabled: bool = Field(False, description="Run the warm start; when off, train starts from model.name_or_path.")
    out_dir: str = Field("models/sft", description="Warm-started checkpoint (or sft.json saying it is off).")
    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_ANNOTATIONS),
                            description="Tasks whose answers are imitated.")
    targets: Literal["gold", "format"] = Field(
        "format", description="gold: imitate the true answers; format: well-formed answers drawn from each "
        "task's prior (random interval/letter, static box), which teaches the layout but not the perception.")
    max_samples_per_task: int | None = Field(16, description="Examples per task (None = all); few teach the format.")
    epochs: int = Field(3, description="Passes over the selected examples.")
    batch_size: int = Field(4, description="Examples per optimizer step.")
    learning_rate: float = Field(1e-3, description="AdamW learning rate. For the tiny model, gold targets need "
                                 "<= 5e-4: at 2e-3 the loss stays at the answers' entropy and the video is never used "
                                 "(docs/micro-repro.md).")
    seed: int = Field(0, description="Example selection, order and init seed.")


class TrainParams(Section):
    """GRPO (TRL 1.16) with video reaching generation and the loss forward. Defaults are the paper's settings;
    every TRL setting the run depends on but does not expose here is pinned in stages/train.py (TRL_PINNED) and
    listed with TRL's own default in docs/training.md."""

    out_dir: str = Field("models/run", description="Final model (safetensors) + processor + train_summary.json.")
    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_ANNOTATIONS),
                             description="Tasks trained jointly; per-task sampling weights are "
                             "build_samples.weights (rows repeated/subsampled; the sampler draws rows uniformly).")
    num_generations: int = Field(8, description="G: completions per prompt (paper: 8). TRL default 8.")
    per_device_train_batch_size: int = Field(
        8, description="Completions per device per micro-step, a multiple of G for whole groups per device "
                       "(paper: 8 GPUs x 1 prompt x G = 8). TRL default 8.")
    gradient_accumulation_steps: int = Field(1, description="Micro-batches per optimizer step (paper: 1).")
    max_steps: int = Field(-1, description="Optimizer steps (-1 = num_train_epochs over the data).")
    num_train_epochs: float = Field(1.0, description="Epochs when max_steps = -1 (paper: 1). TRL default 3.")
    learning_rate: float = Field(1e-6, description="Learning rate (paper: 1e-6). TRL default 1e-6.")
    lr_scheduler_type: str = Field("constant", description="transformers scheduler name (paper: constant). "
                                   "TRL default linear.")
    optim: str = Field("adamw_torch", description="transformers optimizer name. TRL default adamw_torch_fused.")
    max_grad_norm: float = Field(1.0, description="Gradient clipping norm. TRL default 1.0.")
    beta: float = Field(0.04, description="KL coefficient, k3 estimator (paper: 0.04). TRL default 0.0.")
    temperature: float = Field(1.0, description="Rollout sampling temperature (paper: 1.0). TRL default 1.0.")
    top_p: float = Field(1.0, description="Rollout nucleus sampling (1 = off). TRL default 1.0.")
    top_k: int = Field(0, description="Rollout top-k (0 = off; keeps checkpoint defaults from leaking in).")
    loss_type: str = Field("grpo", description="Per-sequence mean then batch mean (paper). TRL default dapo.")
    scale_rewards: str = Field("group", description="Advantage divided by the group std + 1e-4 (paper). "
                               "TRL default group.")
    max_completion_length: int = Field(1024, description="Max new tokens per rollout (paper: 1024). TRL default "
                                       "512. Prompts are never truncated (it would cut video tokens): the frame "
                                       "budget bounds them (paper's max_prompt_length 8192 has no TRL 1.16 knob).")
    logging_steps: int = Field(1, description="Log every N steps. TRL default 10.")
    save_steps: int = Field(100, description="Checkpoint every N steps (resume point of a killed run).")
    save_total_limit: int = Field(1, description="Checkpoints kept; an older one is deleted only after a newer "
                                  "one is complete.")
    checkpoint_dir: str = Field(
        ".cache/checkpoints/train",
        description="Root of resumable checkpoints, outside DVC outs (DVC deletes outs before a re-run). A run "
                    "writes to <checkpoint_dir>/<fingerprint of params, model and data>/ and resumes from the "
                    "last complete checkpoint there; a different fingerprint never resumes.")
    resume: bool = Field(True, description="Resume from the last complete checkpoint of the same fingerprint.")
    input_cache_dir: str | None = Field(
        ".cache/videorft/inputs",
        description="Processed model inputs (pixel patches, grid, input_ids) per sample and processor, so the "
                    "processor runs once per sample, not on every rollout (stages/model/input_cache.py); outside "
                    "DVC outs, float32 (~8x the frames). None = no cache. $VIDEORFT_CACHE_DIR/inputs wins when "
                    "that variable is set.")
    keep_checkpoints: bool = Field(False, description="Keep the checkpoints after a successful run.")
    rollout_engine: Literal["hf", "shared_prefill"] = Field(
        "shared_prefill", description="What samples the rollouts (stages/rl/rollout.py, the seam another engine fills): hf = "
        "transformers' generate as TRL calls it; shared_prefill = the G completions of a prompt share one prompt "
        "prefill (same samples; docs/training.md has the measured gain).")
    bf16: bool = Field(True, description="bf16 weights and autocast on GPU (paper); ignored on CPU.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward: less memory, "
                                         "~1/3 more compute (paper: on, see the recipe). TRL default on.")
    freeze_vision_tower: bool = Field(False, description="No gradient to the vision tower (incl. its merger); "
                                      "saves memory (VLM-R1's option). Paper: trained.")
    lora: LoraParams = Field(default_factory=LoraParams, description="LoRA adapters (single-GPU recipes).")
    drop_zero_std_groups: bool = Field(
        False, description="Drop groups whose G rewards are all equal from the loss (zero advantage = no learning "
        "signal; their KL term would still pull and they dilute the batch mean). The fraction dropped is logged "
        "as filter/dropped_frac. Paper: off.")
    guide_lost_groups: bool = Field(
        False, description="Off-policy guidance (LUFFY-style, stages/rl/guidance.py): in a group whose G answers "
        "all score a total reward of exactly 0 (the layout lost by every one), the last completion is replaced by "
        "the sample's gold answer in the prompt's layout, scored by the same rewards, so that the group has a "
        "signal again instead of an absorbing zero-advantage state. Healthy groups are never touched; the "
        "fraction guided is logged as guide/guided_frac. Needs whole groups per device. Paper: off.")
    box_credit: bool = Field(
        False, description="Per-box credit for tracking answers (stages/rl/box_credit.py): the tokens of each box "
        "carry that box's own IoU deviation within the group instead of the 8 boxes' average; every other token "
        "keeps GRPO's advantage, and the reward is unchanged. The fraction of rows credited is logged as "
        "credit/rows_frac. Needs whole groups per device. Paper: off.")
    task_groups: list[list[str]] = Field(
        default_factory=list, description="Which tasks may share a generation batch (stages/rl/task_batches.py): [] "
        "= any (TRL's shuffled order; paper); else groups of train.tasks, each task in one group, and every batch's "
        "prompts come from one group, e.g. [[tracking], [tg, gqa, qa]] keeps the long tracking answers apart (a "
        "batch decodes until its longest answer ends) and [[tg], [gqa], [tracking], [qa]] makes every batch one "
        "task's. Same seeded order, regrouped; tasks keep their mixing weights over the run.")
    t_grpo: TGrpoParams = Field(default_factory=TGrpoParams, description="Temporal-contrast bonus (Video-R1).")
    weight_ema: float = Field(
        0.0, ge=0.0, lt=1.0, description="Save an exponential moving average of the trained weights instead of the "
        "last step's (stages/rl/weight_ema.py): ema <- decay*ema + (1-decay)*weights after each optimizer step, from "
        "the initial weights; rollouts still sample the current policy. 0 = off (paper). With train.validation the "
        "average is what is validated and kept.")
    validation: ValidationParams = Field(default_factory=ValidationParams, description="Greedy validation during training and which validated step is saved (a guard against a greedy collapse).")
    num_processes: int = Field(1, description="Processes (GPUs) on this machine; > 1 re-launches the stage "
                               "under `accelerate launch` (paper: 8).")
    launcher: Literal["auto", "accelerate", "torchrun"] = Field(
        "auto", description="How num_processes > 1 is launched: accelerate (GPU; honours accelerate_config), "
        "torchrun (also on CPU with gloo), auto = accelerate with CUDA, torchrun without.")
    accelerate_config: str | None = Field(
        None, description="accelerate config file for the launch (infra/accelerate/*.yaml); None = plain DDP.")
    deepspeed: str | None = Field(
        None, description="DeepSpeed config (infra/deepspeed/zero2.json, zero3.json, zero3_offload.json) given to "
                          "GRPOConfig(deepspeed=...); needs the `gpu` extra (paper: ZeRO-3 + CPU offload).")
    seed: int = Field(0, description="Data order and sampling seed. TRL default 42.")


class IntervalParams(Section):
    """Bootstrap confidence intervals of candidate minus reference (stages/bootstrap.py, docs/registry.md)."""

    interval_level: float = Field(
        0.95, gt=0.0, lt=1.0, description="Confidence level of the percentile interval of each metric difference.")
    bootstrap_resamples: int = Field(
        2000, ge=100, description="Bootstrap resamples per task (fewer than ~1000 make the interval's ends noisy).")
    bootstrap_seed: int = Field(0, description="Seed of the resampling: the same inputs give the same interval.")
    shuffle_rounds: int = Field(
        50, ge=0, description="Do a model's answers follow their samples? Each model's own answers are scored against the other "
        "samples of their task, permuted this many times (seeded by bootstrap_seed; stages/blind.shuffled_line); "
        "eval.json `shuffled` and the report give the permuted scores' mean and central interval_level range. "
        "0 = off.")


class EvaluateParams(IntervalParams):
    """Greedy decoding on held-out samples; per-task metrics for candidate and base with a paired bootstrap
    interval of their difference; plots."""

    max_new_tokens: int = Field(1024, description="Max tokens generated per sample.")
    max_samples_per_task: int | None = Field(None, description="Cap for quick runs (None = all).")
    batch_size: int = Field(4, description="Samples per generate call (part of the base-cache key: padding).")
    out_dir: str = Field("metrics", description="eval.json + predictions.jsonl + plots/.")
    baseline_cache_dir: str | None = Field(
        ".cache/videorft/eval-baseline",
        description="Base-model generations cached per (model content, eval inputs, decoding params, generation "
                    "code); outside DVC outs so a new candidate never re-runs the base. None = no cache. "
                    "$VIDEORFT_CACHE_DIR/eval-baseline wins when that variable is set.",
    )
    input_cache_dir: str | None = Field(
        ".cache/videorft/inputs",
        description="Processed model inputs per sample and processor, shared with training "
                    "(train.input_cache_dir; stages/model/input_cache.py). None = no cache.")
    protocol: Literal["ours", "upstream"] = Field(
        "ours",
        description="Scoring protocol of the metrics (docs/tasks.md, 'Two scoring protocols'): 'ours' reads answers "
                    "with this project's documented fixes; 'upstream' reads them as VideoChat-R1's evaluation "
                    "scripts do (whole-output tg pairs, first <glue>/<answer> blocks, their letter and list "
                    "parsing). Both score NExT-GQA's IoP/IoU the official way (best gold segment). Recorded in "
                    "eval.json and eval_samples.json; training rewards always use 'ours'.")
    video_swap: int = Field(
        0, ge=0, description="Do the answers use the video? The first this many held-out samples per task are "
        "answered again by both models with another video's frames (same prompt, same frame layout; "
        "stages/video_swap.py) and scored against their own gold: eval.json `video_swap` and the report give own - "
        "other with a paired interval. The shuffled line cannot tell a prompt-driven answer from a video-driven "
        "one. 0 = off.")
    reward_probe: dict[str, int] = Field(
        default_factory=dict,
        description="Did the training reward rise? Training prompts per task that the base and the candidate both "
                    "sample as GRPO does (train's temperature, top_p, top_k, max_completion_length), scored with "
                    "the training reward; eval.json `reward_probe` and the report give candidate - base with a "
                    "paired bootstrap interval over the prompts (stages/reward_probe.py). {} = off.")
    reward_probe_generations: int = Field(
        4, ge=1, description="Completions per probed prompt and model (GRPO's G is train.num_generations).")
    general_task: str = Field("qa", description="General-ability regression check: task (multiple-choice QA).")
    general_metric: str = Field("accuracy", description="General-ability regression check: metric of that task.")
    general_tolerance: float = Field(
        0.02, ge=0.0, description="General ability is 'kept' when a drop larger than this is excluded at "
        "interval_level (lower bound of candidate - base >= -tolerance). Keep it above the interval's half-width "
        "for the number of general samples, or a model that changes nothing but its noise can never keep it.")


class RegisterParams(Section):
    """MLflow logged model, registered version and alias."""

    model_name: str = Field("videorft-tiny", description="Registered model name.")
    alias: str = Field("staging", description="Alias given to the new version.")
    out: str = Field("metrics/register.json", description="What was registered (version, run id, uri).")
    lineage_outs: list[str] = Field(
        ["data/samples", "data/frames"], description="DVC outs whose hashes (from dvc.lock) tag the version.")


class PromoteParams(IntervalParams):
    """Gate for moving the `production` alias (videorft promote); decisions are tagged on the version.

    The gate decides on bootstrap intervals of candidate - reference (interval_level, bootstrap_resamples,
    bootstrap_seed): every `improve` metric's lower bound is strictly above its threshold (the gain is
    significant), and every `keep` metric's lower bound is >= -tolerance (a larger drop is excluded). The candidate
    is judged against the base model of its own evaluation (paired on the same samples) and, when a version holds
    `to_alias`, against it too (paired when both evaluations saw the same inputs, else unpaired); both must hold.
    """

    from_alias: str = Field("staging", description="Version promoted when none is given.")
    to_alias: str = Field("production", description="Alias the gate guards.")
    improve: dict[str, float] = Field(
        default_factory=lambda: {"tg.mIoU": 0.0, "gqa.evidence_mIoU": 0.0, "tracking.AO": 0.0},
        description="'<task>.<metric>': the interval's lower bound of candidate - reference must exceed this "
                    "(0: an improvement significant at interval_level).")
    keep: dict[str, float] = Field(
        default_factory=dict,
        description="'<task>.<metric>': a drop larger than this must be excluded at interval_level (lower bound of "
                    "candidate - reference >= -tolerance). The general-ability metric (evaluate.general_task/"
                    "general_metric) is added on load with evaluate.general_tolerance; naming it here with another "
                    "tolerance is refused.")
    lock_timeout_s: float = Field(60.0, description="How long promote/rollback waits for another one to finish.")
    lock_stale_s: float = Field(60.0, description="A promotion lock whose holder has not beaten its heartbeat (every "
                                "lock_stale_s/4 s) for this long is from a dead process; a holder whose pid is gone "
                                "on the same host is detected at once.")


class MlflowParams(Section):
    tracking_uri: str = Field("sqlite:///mlflow.db", description="Overridden by MLFLOW_TRACKING_URI if set.")
    experiment: str = Field("videorft", description="Experiment name.")
    log_system_metrics: bool = Field(
        True, description="MLflow system metrics on the training run (CPU, memory, disk, network; GPU with pynvml): "
                          "system/* series sampled by a background thread.")
    system_metrics_interval_s: float = Field(
        10.0, gt=0, description="Seconds between system-metric samples (MLflow's default: 10).")


# `register` is a stage name; pydantic warns that it shadows ABCMeta.register (harmless on instances)
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    synthesize: SynthesizeParams = SynthesizeParams()
    ingest: IngestParams = IngestParams()
    extract_frames: ExtractFramesParams = ExtractFramesParams()
    build_samples: BuildSamplesParams = BuildSamplesParams()
    model: ModelParams = ModelParams()
    tiny_model: TinyModelParams = TinyModelParams()
    sft: SftParams = SftParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    register: RegisterParams = RegisterParams()
    promote: PromoteParams = PromoteParams()
    mlflow: MlflowParams = MlflowParams()

    @model_validator(mode="after")
    def _cross_checks(self) -> "Params":
        """Rules between sections, checked when the params load (as TRL's GRPOConfig.__post_init__ does), so a
        wrong combination fails at once with the knobs named instead of as empty or quarantined data later."""
        problems = cross_section_problems(self)
        if problems:
            raise ValueError("params do not agree across sections:\n  - " + "\n  - ".join(problems))
        # The general-ability tolerance has one home, evaluate.general_tolerance: the promotion gate keeps the same
        # metric with the same tolerance (a version evaluate calls 'kept' must not be refused for it, nor the reverse)
        self.promote.keep.setdefault(general_key(self.evaluate), self.evaluate.general_tolerance)
        return self


def general_key(e: "EvaluateParams") -> str:
    """'<task>.<metric>' of the general-ability check, as promote.keep names metrics."""
    return f"{e.general_task}.{e.general_metric}"


def cross_section_problems(p: "Params") -> list[str]:
    """Every rule between sections that `p` breaks, one line each (empty: they all hold)."""
    from stages import tasks as task_registry
    from stages.tasks import tracking
    from stages.video.budget import check_params

    out = []
    annotated = {t for t, path in p.build_samples.annotations.items() if path}
    unknown = sorted(set(p.build_samples.annotations) - set(TASK_NAMES))
    if unknown:
        out.append(f"build_samples.annotations names unknown tasks {unknown} (tasks: {', '.join(TASK_NAMES)})")
    unknown = sorted(set(p.synthesize.tasks) - set(TASK_NAMES))
    if unknown:
        out.append(f"synthesize.tasks names unknown tasks {unknown} (tasks: {', '.join(TASK_NAMES)})")
    for name, tasks, on in (("train.tasks", p.train.tasks, True), ("sft.tasks", p.sft.tasks, p.sft.enabled)):
        missing = [t for t in tasks if t not in annotated]
        if on and missing:
            out.append(f"{name} has {missing} but build_samples.annotations gives no file for them "
                       f"(annotated: {sorted(annotated)})")
    t = p.train
    if t.num_generations < 2:
        out.append(f"train.num_generations={t.num_generations}: GRPO needs at least 2 completions per prompt")
    elif t.per_device_train_batch_size % t.num_generations:
        out.append(f"train.per_device_train_batch_size={t.per_device_train_batch_size} is not a multiple of "
                   f"train.num_generations={t.num_generations} (whole groups per device)")
    if t.task_groups:
        listed = [task for group in t.task_groups for task in group]
        if any(listed.count(task) != 1 for task in t.tasks) or any(not g for g in t.task_groups):
            out.append(f"train.task_groups={t.task_groups} must put each of train.tasks={t.tasks} in exactly one "
                       f"non-empty group (a group's tasks that are not trained are ignored)")
    if t.weight_ema and t.deepspeed:
        out.append(f"train.weight_ema={t.weight_ema} needs whole weights on each process (train.deepspeed="
                   f"{t.deepspeed!r} partitions them)")
    if t.validation.per_task and (t.deepspeed or t.num_processes > 1):
        out.append(f"train.validation.per_task={t.validation.per_task} needs one process without DeepSpeed "
                   f"(train.num_processes={t.num_processes}, train.deepspeed={t.deepspeed!r}): greedy validation "
                   f"runs on one process and keeps its weights whole")
    boxes = tracking.NUM_BOXES
    if tracking.NAME in annotated and {p.synthesize.num_boxes, p.extract_frames.tracking_frames} != {boxes}:
        out.append(f"synthesize.num_boxes={p.synthesize.num_boxes} and extract_frames.tracking_frames="
                   f"{p.extract_frames.tracking_frames} must both be the tracking task's {boxes} boxes (one box "
                   f"per sampled frame; otherwise every tracking sample is quarantined)")
    try:
        check_params(p.extract_frames)
    except ValueError as e:
        out.append(f"extract_frames: {e}")
    general = general_key(p.evaluate)
    if general in p.promote.keep and p.promote.keep[general] != p.evaluate.general_tolerance:
        out.append(f"promote.keep[{general!r}]={p.promote.keep[general]} differs from evaluate.general_tolerance="
                   f"{p.evaluate.general_tolerance}: the general-ability tolerance is one value (leave {general!r} "
                   f"out of promote.keep; it is taken from evaluate.general_tolerance)")
    gates = [("evaluate.general_task/general_metric", general)]
    gates += [(f"promote.{kind}", key) for kind in ("improve", "keep") for key in getattr(p.promote, kind)]
    for where, key in gates:
        task, _, metric = key.partition(".")
        if task not in TASK_NAMES:
            out.append(f"{where}: {key!r} names no task (tasks: {', '.join(TASK_NAMES)})")
        elif metric not in (known := sorted(set(task_registry.aggregate(task, [])) - {"count"})):
            out.append(f"{where}: {key!r}: {task} reports no metric {metric!r} (it reports {', '.join(known)})")
        elif task not in annotated:
            out.append(f"{where}: {key!r}: {task} is not evaluated (build_samples.annotations gives no file)")
    return out


def _set_dotted(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def load_params(path: str | os.PathLike = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read params.yaml (missing file = defaults) and apply `a.b=value` overrides (value parsed as YAML)."""
    raw = {}
    if Path(path).exists():
        raw = yaml.safe_load(Path(path).read_text()) or {}
    for item in overrides or []:
        key, _, value = item.partition("=")
        if not key or not _:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        _set_dotted(raw, key.strip(), yaml.safe_load(value))
    return Params.model_validate(raw)
