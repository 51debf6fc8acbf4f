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
from pydantic import BaseModel, ConfigDict, Field

TASK_NAMES = ("tg", "gqa", "tracking", "qa")


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
    tracking_length: int = Field(24, description="Frames per tracking sequence.")
    num_boxes: int = Field(8, description="Boxes per tracking annotation (VideoChat-R1 uses 8).")


class IngestParams(Section):
    """Bring videos into data/raw with a manifest; unusable inputs go to quarantine with a reason."""

    source: str = Field("data/synthetic/videos", description="Local folder or s3://bucket/prefix of video files.")
    frame_folders: str | None = Field(
        "data/synthetic/got10k", description="Folder whose sub-folders are JPEG frame sequences (GOT-10k), or null."
    )
    frame_folder_fps: float = Field(10.0, description="Frame rate assumed for JPEG frame folders (GOT-10k: 10).")
    extensions: list[str] = Field([".mp4", ".mkv", ".webm", ".avi", ".mov"], description="Video file suffixes.")
    out_dir: str = Field("data/raw", description="Where copies, manifest.jsonl and quarantine.jsonl go.")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint; None = AWS / AWS_ENDPOINT_URL.")


class ExtractFramesParams(Section):
    """Frame sampling under the model's visual budget (Qwen2.5-VL conventions, all configurable)."""

    backend: Literal["decord", "pyav"] = Field("decord", description="Video decoder.")
    fps: float = Field(2.0, description="Sampling rate, frames per second of video.")
    min_frames: int = Field(4, description="At least this many frames per video.")
    max_frames: int = Field(768, description="At most this many frames per video.")
    frame_factor: int = Field(2, description="Frame count is a multiple of this (temporal patch size).")
    size_factor: int = Field(28, description="Frame height and width are multiples of this (patch 14 x merge 2).")
    min_pixels: int = Field(16 * 28 * 28, description="Lower bound of height*width per frame.")
    max_pixels: int = Field(768 * 28 * 28, description="Upper bound of height*width per frame.")
    total_pixels: int = Field(3584 * 28 * 28, description="Upper bound of frames*height*width per video.")
    tracking_frames: int = Field(8, description="Frames for a JPEG-folder sequence: one per annotated box.")
    workers: int = Field(1, description="Worker processes (one video per task).")
    raw_dir: str = Field("data/raw", description="Ingest output to read (manifest.jsonl and the files it lists).")
    out_dir: str = Field("data/frames", description="Frame cache: <video_id>.npy + <video_id>.json.")


class BuildSamplesParams(Section):
    """Turn annotations + extracted frames into train/eval rows of every task."""

    annotations: dict[str, str | None] = Field(
        default_factory=lambda: {
            "tg": "data/synthetic/annotations/charades_sta.json",
            "gqa": "data/synthetic/annotations/nextgqa.json",
            "tracking": "data/synthetic/annotations/got10k.json",
            "qa": "data/synthetic/annotations/mcq.json",
        },
        description="Annotation file per task (null or missing = task not used).",
    )
    eval_fraction: float = Field(0.25, description="Fraction of VIDEOS held out for evaluation (split by video).")
    max_per_task: dict[str, int | None] = Field(default_factory=dict, description="Cap on train rows per task.")
    weights: dict[str, float] = Field(default_factory=dict, description="Per-task sampling weight (default 1).")
    think: bool = Field(True, description="Use the <think> prompt variant.")
    prompt_dir: str | None = Field(None, description="Folder of replacement prompt templates (<task>.txt).")
    interval_policy: Literal["clip", "reject"] = Field(
        "clip", description="Intervals that end after the video: clip to [0, duration] or reject."
    )
    seed: int = Field(0, description="Seed of the split and of sampling.")
    out_dir: str = Field("data/samples", description="train.jsonl, eval.jsonl, quarantine.jsonl.")


class ModelParams(Section):
    """The policy model: a local path or a hub id. The demo builds a tiny one offline (stage tiny_model)."""

    name_or_path: str = Field("models/tiny-qwen2_5_vl", description="Local folder or hub id.")
    family: Literal["qwen2_5_vl", "qwen3_vl"] = Field("qwen2_5_vl", description="Model family.")


class TinyModelParams(Section):
    """A tiny Qwen2.5-VL with random weights, built from a config (no download)."""

    out_dir: str = Field("models/tiny-qwen2_5_vl", description="Where save_pretrained writes.")
    seed: int = Field(0, description="Weight init seed.")
    hidden_size: int = Field(64, description="Language model width.")
    num_hidden_layers: int = Field(2, description="Language model depth.")
    num_attention_heads: int = Field(4, description="Attention heads.")
    num_key_value_heads: int = Field(2, description="KV heads.")
    intermediate_size: int = Field(128, description="MLP width.")
    vision_hidden_size: int = Field(32, description="Vision tower width.")
    vision_depth: int = Field(2, description="Vision tower depth.")
    vocab_size: int = Field(512, description="Tokenizer vocabulary (BPE trained on a small corpus).")


class TrainParams(Section):
    """GRPO (TRL) with video reaching generation and the loss forward."""

    out_dir: str = Field("models/run", description="Checkpoint + processor + train_summary.json.")
    tasks: list[str] = Field(list(TASK_NAMES), description="Tasks trained jointly.")
    num_generations: int = Field(8, description="G: completions per prompt (paper: 8).")
    per_device_train_batch_size: int = Field(8, description="Completions per device per step; a multiple of G (paper: 8 GPUs x 1 prompt x G).")
    gradient_accumulation_steps: int = Field(1, description="Micro-batches per optimizer step.")
    max_steps: int = Field(-1, description="Optimizer steps (-1 = num_train_epochs over the data).")
    num_train_epochs: float = Field(1.0, description="Epochs when max_steps = -1 (paper: 1).")
    learning_rate: float = Field(1e-6, description="Learning rate (paper: 1e-6).")
    lr_scheduler_type: str = Field("constant", description="transformers scheduler name.")
    beta: float = Field(0.04, description="KL coefficient (k3 estimator), paper: 0.04.")
    temperature: float = Field(1.0, description="Rollout sampling temperature (paper: 1.0).")
    top_p: float = Field(1.0, description="Rollout nucleus sampling (1 = off).")
    top_k: int = Field(0, description="Rollout top-k (0 = off; keeps checkpoint defaults from leaking in).")
    loss_type: str = Field("grpo", description="TRL loss type: per-sequence mean then batch mean (paper).")
    scale_rewards: str = Field("group", description="Advantage normalisation by the group std (paper).")
    max_completion_length: int = Field(1024, description="Max new tokens per rollout (paper: 1024).")
    logging_steps: int = Field(1, description="Log every N steps.")
    save_steps: int = Field(100, description="Checkpoint every N steps.")
    bf16: bool = Field(False, description="bf16 (GPU only).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations to save memory.")
    seed: int = Field(0, description="Data order and sampling seed.")


class EvaluateParams(Section):
    """Greedy decoding on held-out samples; per-task metrics."""

    max_new_tokens: int = Field(1024, description="Max tokens generated per sample.")
    max_samples_per_task: int | None = Field(None, description="Cap for quick runs (None = all).")
    batch_size: int = Field(4, description="Samples per generate call.")
    out_dir: str = Field("metrics", description="eval.json + predictions.jsonl.")


class RegisterParams(Section):
    """MLflow logged model, registered version and alias."""

    model_name: str = Field("videorft-tiny", description="Registered model name.")
    alias: str = Field("staging", description="Alias given to the new version.")
    out: str = Field("metrics/register.json", description="What was registered (version, run id, uri).")


class MlflowParams(Section):
    tracking_uri: str = Field("sqlite:///mlflow.db", description="Overridden by MLFLOW_TRACKING_URI if set.")
    experiment: str = Field("videorft", description="Experiment name.")


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
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    register: RegisterParams = RegisterParams()
    mlflow: MlflowParams = MlflowParams()


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
