"""The registered model as an MLflow pyfunc: `mlflow.pyfunc.load_model("models:/videorft-tiny@production")` and
`mlflow models serve -m models:/... --env-manager local` answer a task prompt about a video the way evaluation does.

One input row per question (columns of `SIGNATURE`):
  task       tg | gqa | tracking | qa
  video      path of a video file (or a JPEG frame folder) readable where the model runs, or
  video_b64  the video file's bytes, base64-encoded (for clients on another machine)
  sentence   tg: the event to find                          duration  tg, gqa: seconds (default: the video's)
  question   gqa, qa: the question                          options   gqa, qa: the answer options, a JSON list
  object     tracking: what to track                        init_box  tracking: JSON [x0, y0, x1, y1], first frame
  num_boxes  tracking: boxes to answer (default: the frames sampled)

Each row goes through the project's own code: the video is probed and sampled under the frame budget the model was
evaluated with (stages/video: plan_for, read_frames; tracking gets `tracking_frames` frames as in training), the
prompt is rendered from the templates shipped in the model (`prompts/`, stages/tasks.render_prompt), the model
generates with evaluation's pinned greedy decoding (stages/model/generate.py), and the task's parser reads the answer.
Output columns: task, answer (the generated text), parsed (the parsed answer as JSON: tg [start, end] seconds, gqa
{"answer", "glue"}, tracking [[x0, y0, x1, y1], ...], qa a letter; null when it does not parse), num_frames, fps,
error (null, or why the row could not be answered: the other rows are still answered).

The model folder is the logged model itself (checkpoint + processor at its root, as register ships them);
`serving_model.py` (models-from-code, copied into the model by `add_pyfunc`) points this class at it, and
`serving.json` holds the settings (frame budget, think, prompt protocol, decoding length) taken from params.yaml
when the model was registered.
"""
from __future__ import annotations

import base64
import binascii
import json
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np

CONFIG = "serving.json"
ENTRY = Path(__file__).with_name("serving_model.py")
OUTPUTS = ("task", "answer", "parsed", "num_frames", "fps", "error")
# Problem fields whose cells are numbers (double: absent cells of a mixed batch are NaN) or JSON lists; every
# other problem field is text.
NUMBER_FIELDS = ("duration", "num_boxes")
JSON_LIST_FIELDS = ("options", "init_box", "frame_times")


def problem_fields() -> dict[str, tuple[str, ...]]:
    """{task: the problem fields a request for it carries}: each task module's PROBLEM_FIELDS."""
    from stages import tasks

    return {name: module.PROBLEM_FIELDS for name, module in tasks.TASKS.items()}


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    s, d, i = DataType.string, DataType.double, DataType.long
    fields = dict.fromkeys(f for names in problem_fields().values() for f in names)  # every task's, once each
    inputs = Schema([
        ColSpec(s, "task"), ColSpec(s, "video", required=False), ColSpec(s, "video_b64", required=False),
        *[ColSpec(d if f in NUMBER_FIELDS else s, f, required=False) for f in fields],
    ])
    outputs = Schema([ColSpec(s, "task"), ColSpec(s, "answer"), ColSpec(s, "parsed", required=False),
                      ColSpec(i, "num_frames", required=False), ColSpec(d, "fps", required=False),
                      ColSpec(s, "error", required=False)])
    return ModelSignature(inputs=inputs, outputs=outputs)


INPUT_EXAMPLE = {"task": ["tg"], "video": ["/data/videos/syn00001.mp4"],
                 "sentence": ["the red circle moves to the left"]}


def serving_config(params) -> dict:
    """What predict needs from params.yaml: the frame budget, think, evaluation's decoding length and protocol, and
    the frame rate ingest gives JPEG frame folders."""
    return {"extract_frames": params.extract_frames.model_dump(mode="json"), "think": params.build_samples.think,
            "max_new_tokens": params.evaluate.max_new_tokens, "batch_size": params.evaluate.batch_size,
            "protocol": params.evaluate.protocol, "frame_folder_fps": params.ingest.frame_folder_fps}


def requirements() -> list[str]:
    """The packages the model's code imports, pinned to this environment (with --env-manager local the server
    uses the project's own environment; these document it and let a virtualenv serve reproduce it)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for pkg in ("mlflow", "torch", "torchvision", "transformers", "av", "numpy", "pandas", "pydantic", "pyyaml"):
        try:
            found.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return found


def add_pyfunc(model_dir: Path, config: dict) -> Path:
    """Make a staged model folder (checkpoint + processor + prompts/ at its root) a pyfunc model: MLmodel,
    serving_model.py, serving.json, the signature, an input example and the requirements, beside the checkpoint."""
    model_dir = Path(model_dir)
    (model_dir / CONFIG).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="videorft-pyfunc-") as tmp:
        out = Path(tmp) / "pyfunc"
        import pandas as pd

        mlflow.pyfunc.save_model(
            path=str(out), python_model=str(ENTRY), signature=signature(),
            input_example=pd.DataFrame(INPUT_EXAMPLE), pip_requirements=requirements())
        for item in out.iterdir():
            if (model_dir / item.name).exists():
                raise FileExistsError(f"pyfunc file {item.name} would overwrite the model's own file")
            shutil.move(str(item), model_dir / item.name)
    return model_dir


class VideoTaskModel(mlflow.pyfunc.PythonModel):
    """The checkpoint in `root` answering task prompts about videos (module docstring)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else None

    def load_context(self, context) -> None:
        from stages.params import ExtractFramesParams
        from stages.model.load import load_model

        cfg = json.loads((self.root / CONFIG).read_text(encoding="utf-8"))
        self.cfg = cfg
        self.frames_p = ExtractFramesParams(**cfg["extract_frames"])
        self.model, self.processor = load_model(str(self.root))

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from stages import tasks
        from stages.model.generate import generate

        rows = model_input.to_dict(orient="records") if hasattr(model_input, "to_dict") else list(model_input)
        results: list[dict] = []
        with tempfile.TemporaryDirectory(prefix="videorft-serve-") as tmp:
            ready = []
            for i, row in enumerate(rows):
                try:
                    item = self._prepare(i, row, Path(tmp))
                except (ValueError, KeyError, OSError, RuntimeError, binascii.Error) as e:
                    results.append({"task": _cell(row.get("task")), "answer": "", "parsed": None,
                                    "num_frames": None, "fps": None, "error": f"{type(e).__name__}: {e}"})
                    continue
                results.append(item["result"])
                ready.append(item)
            if ready:
                texts = generate(self.model, self.processor, [r["gen"] for r in ready],
                                 int(self.cfg["max_new_tokens"]), int(self.cfg["batch_size"]))
                for item, text in zip(ready, texts, strict=True):
                    parsed = tasks.parse(item["result"]["task"], text, self.cfg.get("protocol", "ours"))
                    item["result"].update(answer=text, parsed=None if parsed is None else json.dumps(parsed))
        return pd.DataFrame(results, columns=list(OUTPUTS))

    def _prepare(self, i: int, row: dict, tmp: Path) -> dict:
        from stages import tasks
        from stages.video.decode import probe_frames, probe_video, read_frames
        from stages.video.extract import plan_for

        task = _cell(row.get("task"))
        if task not in tasks.TASKS:
            raise ValueError(f"row {i}: task must be one of {sorted(tasks.TASKS)}, got {task!r}")
        module = tasks.TASKS[task]
        path = self._video_path(i, row, tmp)
        info = probe_frames(path, self.cfg["frame_folder_fps"]) if path.is_dir() else probe_video(path)
        # a "frames" task (tracking) samples exactly tracking_frames frames, as its training sequences were
        plan = plan_for({"kind": module.INPUT, "duration": info.duration, "frames": info.frames, "fps": info.fps,
                         "height": info.height, "width": info.width}, self.frames_p)
        frames = read_frames(path, plan.indices, backend=self.frames_p.backend, size=(plan.height, plan.width),
                             threads=self.frames_p.decode_threads)
        fps = round(plan.sample_fps, 6)
        stem = tmp / f"row{i}"
        np.save(stem.with_suffix(".npy"), np.ascontiguousarray(frames, dtype=np.uint8))
        problem = {k: _json_list(i, k, v) if k in JSON_LIST_FIELDS else v
                   for k in module.PROBLEM_FIELDS if (v := _cell(row.get(k))) is not None}
        if "duration" in module.PROBLEM_FIELDS:
            problem.setdefault("duration", info.duration)
        if "num_boxes" in module.PROBLEM_FIELDS:
            problem.setdefault("num_boxes", plan.num_frames)
        if "frame_times" in module.PROBLEM_FIELDS:  # stvg lists the sampled frames' times, as bind_frames does
            problem.setdefault("frame_times", [round(float(t), 2) for t in plan.timestamps])
        try:
            prompt = tasks.render_prompt(task, problem, think=bool(self.cfg["think"]),
                                         prompt_dir=str(self.root / "prompts"))
        except (KeyError, ValueError) as e:
            raise ValueError(f"row {i}: {task} needs {', '.join(module.PROBLEM_FIELDS)} ({e})") from None
        gen = {"id": f"row{i}", "prompt": prompt, "frames": str(stem.with_suffix(".npy")), "fps": fps,
               "frame_times": plan.timestamps}  # as build_samples writes them
        return {"gen": gen,
                "result": {"task": task, "answer": "", "parsed": None, "num_frames": plan.num_frames, "fps": fps,
                           "error": None}}

    @staticmethod
    def _video_path(i: int, row: dict, tmp: Path) -> Path:
        video, blob = _cell(row.get("video")), _cell(row.get("video_b64"))
        if blob:
            path = tmp / f"row{i}.video"
            path.write_bytes(base64.b64decode(blob, validate=True))
            return path
        if not video:
            raise ValueError(f"row {i}: give `video` (a path readable by the server) or `video_b64`")
        path = Path(video)
        if not path.exists():
            raise FileNotFoundError(f"row {i}: video {video} not found where the model runs")
        return path


def _cell(value):
    """A DataFrame cell as plain Python: NaN/None -> None, numpy arrays and scalars -> lists and numbers."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _json_list(i: int, name: str, value) -> list:
    """options / init_box: a JSON list in a string column (a signature cannot mix lists and absent cells)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"row {i}: {name} must be a JSON list ({e.msg})") from None
    if not isinstance(value, list):
        raise ValueError(f"row {i}: {name} must be a JSON list, got {type(value).__name__}")
    return value
