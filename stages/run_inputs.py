"""What a training or evaluation run was fed, as MLflow shows it: the sample files as MLflow datasets (the run's
Datasets column and inputs, `mlflow.log_input`'s records) carrying their DVC hashes, and the settings of the stages
upstream of the run (frame budget, sample building, evaluation) as params prefixed by their params.yaml section.

A samples dataset (`samples_dataset`):
  name     `<out_dir>/<file>` as params.yaml names it (e.g. data/samples/train.jsonl)
  digest   md5 of the file's bytes: what DVC records for that file (`dvc.lock` holds the folder's `.dir` hash)
  source   the file's absolute path
  profile  JSON: rows, rows per task, the DVC out and its hash from dvc.lock (`missing` when dvc.lock has no entry,
           e.g. a run outside `dvc repro`), the file's md5
  input tags `mlflow.data.context` (training | evaluation) and `dvc.<out>` = the dvc.lock hash
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import yaml

# The params.yaml sections upstream of a run that decide what it saw, logged on it as `<section>.<key>`.
UPSTREAM = {"training": ("extract_frames", "build_samples"),
            "evaluation": ("extract_frames", "build_samples", "evaluate")}
_PARAM_MAX = 6000  # MLflow's limit on a param value


def dvc_hashes(lock_path: str | os.PathLike, outs: list[str]) -> dict[str, str]:
    """The hash dvc.lock records for each named out (e.g. data/samples -> md5 '...dir'); 'missing' if none."""
    found: dict[str, str] = {}
    if Path(lock_path).exists():
        lock = yaml.safe_load(Path(lock_path).read_text()) or {}
        for stage in (lock.get("stages") or {}).values():
            for out in stage.get("outs") or []:
                if out.get("path") in outs:
                    found[out["path"]] = out.get("md5") or out.get("etag") or out.get("checksum") or "unknown"
    return {o: found.get(o, "missing") for o in outs}


def file_md5(path: str | os.PathLike) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def samples_dataset(path: str | os.PathLike, out_dir: str, lock_path: str | os.PathLike = "dvc.lock"):
    """The sample file as an MLflow dataset (module docstring) and the DVC hash of its out."""
    from mlflow.data.meta_dataset import MetaDataset

    class SamplesDataset(MetaDataset):
        @property
        def profile(self):
            return profile

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(profile, sort_keys=True)}

    path = Path(path)
    tasks = Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            tasks[json.loads(line).get("task", "?")] += 1
    dvc = dvc_hashes(lock_path, [out_dir])[out_dir]
    md5 = file_md5(path)
    profile = {"rows": sum(tasks.values()), "rows_per_task": dict(sorted(tasks.items())), "dvc_out": out_dir,
               "dvc_md5": dvc, "file_md5": md5}
    from mlflow.data.sources import LocalArtifactDatasetSource

    source = LocalArtifactDatasetSource(str(path.resolve()))
    return SamplesDataset(source=source, name=f"{out_dir.rstrip('/')}/{path.name}", digest=md5), dvc


def log_samples(client, run_id: str, path: str | os.PathLike, out_dir: str, context: str,
                lock_path: str | os.PathLike = "dvc.lock") -> None:
    """Log the sample file as a dataset input of the run, in `context` (training | evaluation)."""
    from mlflow.entities import DatasetInput, InputTag

    dataset, dvc = samples_dataset(path, out_dir, lock_path)
    tags = [InputTag("mlflow.data.context", context), InputTag(f"dvc.{out_dir}", dvc)]
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=tags)])


def upstream_params(params, context: str) -> dict[str, str]:
    """`<section>.<key>` of the sections upstream of a run (UPSTREAM), as MLflow params (long values cut)."""
    flat = {}
    for section in UPSTREAM[context]:
        for key, value in getattr(params, section).model_dump(mode="json").items():
            text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
            flat[f"{section}.{key}"] = text[:_PARAM_MAX]
    return flat


def log_run_inputs(client, run_id: str, context: str, samples_path: str | os.PathLike, params=None,
                   lock_path: str | os.PathLike = "dvc.lock") -> None:
    """A training or evaluation run's inputs: the samples file as a dataset in `context` (its out is the file's
    folder, as params.yaml names it) and, given the whole parameter set, the upstream sections as params."""
    from mlflow.entities import Param

    log_samples(client, run_id, samples_path, os.path.dirname(str(samples_path)) or ".", context, lock_path)
    if params is not None:
        items = list(upstream_params(params, context).items())
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, params=[Param(k, v) for k, v in items[start:start + 100]])
