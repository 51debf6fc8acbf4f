"""Stage register: the trained checkpoint becomes an MLflow logged model (checkpoint + processor + the prompt
templates + a generated model card), then a registered model version whose description is the model card, tagged
with its lineage (git commit, DVC hashes of the data, params hash, training run, evaluation inputs) and the gate's
headline metrics, and the alias `staging`. Every metric stays in the training run and the card.

Idempotent and restartable, keyed by the training run id (tag `train_run_id`):
  1. a version of this training run exists  -> reuse it (refresh its tags and card if evaluate re-ran; alias);
  2. a logged model of this run exists      -> READY: register it; PENDING (an attempt killed mid-upload):
                                               upload again into it and finalize it; FAILED: delete it;
  3. otherwise create the logged model, upload, finalize READY, register;
  4. two versions of one run (two registers raced, or a retried create) -> all but the oldest are deleted.
So a retry after any failure converges on exactly one version with everything attached. An unreachable
tracking server fails the stage at once with its URI named (stages/mlflow_log.py bounds MLflow's retries).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from stages import model_card, serving
from stages import tasks as task_registry
from stages.evaluate import EVAL_SAMPLES
from stages.io import read_json, sha256_file, sha256_json, write_json
from stages.lineage import git_commit
from stages.params import MlflowParams, Params, RegisterParams, load_params
from stages.run_inputs import dvc_hashes
from stages.mlflow_log import TrackingUnavailable, is_http, metric_name, require_reachable

# Training-output files that are not part of the model: trainer checkpoints (optimizer state) and the
# pickled TrainingArguments (a pickle is never shipped).
_NOT_SHIPPED = {"checkpoints", "training_args.bin"}


def intervals_tag(eval_result: dict) -> str | None:
    """The evaluation's intervals of the headline metrics as short JSON: level, resamples, seed, method and
    "<task>.<metric>": [delta, lo, hi] (the card has every metric's)."""
    ivs = eval_result.get("intervals")
    if not ivs:
        return None
    headline = task_registry.headline()
    cells = {f"{t}.{headline[t]}": [round(m[headline[t]][x], 4) for x in ("delta", "lo", "hi")]
             for t, m in ivs.items() if headline.get(t) in m}
    return json.dumps({**(eval_result.get("interval") or {}), **cells}, sort_keys=True, separators=(",", ":"))


def lineage_tags(summary: dict, eval_result: dict, *, commit: str, data_hashes: dict[str, str],
                 params_sha256: str, eval_samples_sha256: str | None = None) -> dict[str, str]:
    """The version's tags: where it came from, and per task the candidate's headline metric and its interval."""
    tags = {
        "train_run_id": summary["mlflow_run_id"],
        "base_model": summary["base_model"],
        "git_commit": commit,
        "params_sha256": params_sha256,
        "eval_inputs_sha256": eval_result.get("inputs_sha256", "unknown"),
        "model_sha256": eval_result["candidate"].get("model_sha256", "unknown"),
    }
    if eval_samples_sha256:  # the per-sample rows the promotion gate resamples (shipped in the model)
        tags["eval_samples_sha256"] = eval_samples_sha256
    if (intervals := intervals_tag(eval_result)) is not None:
        tags["intervals"] = intervals
    tags.update({f"dvc.{path}": h for path, h in data_hashes.items()})
    headline = task_registry.headline()
    for task, metrics in eval_result["candidate"]["metrics"].items():
        if (k := headline.get(task)) in metrics:
            v = metrics[k]
            tags[metric_name(f"metric.{task}.{k}")] = f"{v:.6g}" if isinstance(v, float) else str(v)
    return tags


def refresh_version(client, name: str, version, tags: dict[str, str], description: str) -> None:
    """Bring a version registered earlier up to date: changed tags, the card as description, no old metric tags."""
    for k, v in tags.items():
        if version.tags.get(k) != v:
            client.set_model_version_tag(name, version.version, k, v)
    for k in version.tags:  # metric tags of versions registered before the tags were kept to lineage
        if k not in tags and (k.startswith(("metric.", "baseline.")) or k in ("metrics", "baseline_metrics")):
            client.delete_model_version_tag(name, version.version, k)
    if (version.description or "") != description:
        client.update_model_version(name, version.version, description=description)


def prompt_files(prompt_dir: str | None) -> list[Path]:
    folder = Path(prompt_dir) if prompt_dir else task_registry.PROMPT_DIR
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no prompt templates (*.txt) in {folder}")
    return files


def stage_model_dir(model_dir: str, prompts: list[Path], card: str, dest: Path, eval_samples: Path | None = None,
                    serving_config: dict | None = None) -> Path:
    """What the logged model holds: checkpoint + processor files, prompts/, MODEL_CARD.md, eval_samples.json, and
    with `serving_config` the pyfunc files that make it loadable and servable (stages/serving.py)."""
    src = Path(model_dir)
    dest.mkdir(parents=True)
    for item in sorted(src.iterdir()):
        if item.name in _NOT_SHIPPED or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, dest / item.name)
        else:
            shutil.copy2(item, dest / item.name)
    (dest / "prompts").mkdir()
    for f in prompts:
        shutil.copy2(f, dest / "prompts" / f.name)
    (dest / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    if eval_samples is not None:
        shutil.copy2(eval_samples, dest / EVAL_SAMPLES)
    if serving_config is not None:
        serving.add_pyfunc(dest, serving_config)
    return dest


def find_versions(client, name: str, train_run_id: str) -> list:
    try:
        found = client.search_model_versions(f"name = '{name}' and tags.train_run_id = '{train_run_id}'")
    except Exception as e:  # a registry without the model yet answers RESOURCE_DOES_NOT_EXIST on some stores
        if "RESOURCE_DOES_NOT_EXIST" in str(e):
            return []
        raise
    return sorted(found, key=lambda v: int(v.version))


def find_logged_models(client, experiment_id: str, name: str, train_run_id: str) -> list:
    found = client.search_logged_models(
        experiment_ids=[experiment_id], filter_string=f"tags.train_run_id = '{train_run_id}'")
    return [m for m in found if m.name == name]


def training_run_home(client, summary: dict, experiment: str) -> tuple[str, str | None]:
    """(experiment id, source run id) for the logged model in this registry. The training run lives in the
    tracking store it was trained against; when this registry is another one (trained with the demo's SQLite,
    registered on the stack) the run is not here: the model goes into this store's experiment without a source run
    (its tag train_run_id still names the run, and stays the idempotence key)."""
    from mlflow.exceptions import MlflowException

    from stages.mlflow_log import ensure_experiment

    run_id = summary["mlflow_run_id"]
    try:
        run = client.get_run(run_id)
    except MlflowException:
        run = None
    if run is not None:
        return run.info.experiment_id, run_id
    print(f"register: training run {run_id} is not in this tracking store (trained against another one): "
          f"registering without a source run, in experiment {experiment!r}")
    return ensure_experiment(client, experiment), None


def missing_in(record_path: str | os.PathLike, uri: str) -> str | None:
    """Why the registry at `uri` lacks the version that register.json records (None when it has it, or when
    there is no record: then DVC runs register anyway). DVC cannot see which registry MLFLOW_TRACKING_URI names, so
    a register up to date for another registry (the demo's SQLite, before the stack) would never run for this one;
    the flow asks this first and forces register when it answers."""
    from mlflow import MlflowClient

    if not Path(record_path).exists():
        return None
    rec = read_json(record_path)
    if not rec.get("train_run_id") or not rec.get("model_name"):
        return None
    if find_versions(MlflowClient(uri), rec["model_name"], rec["train_run_id"]):
        return None
    return (f"{record_path} records {rec['model_name']} version {rec.get('version')} of training run "
            f"{rec['train_run_id']} in {rec.get('tracking_uri')}, but {uri} has no version of that run")


def logged_model_for(client, p: RegisterParams, summary: dict, tags: dict[str, str], build_dir,
                     home: tuple[str, str | None]) -> str:
    """A READY logged model of this training run: reused, resumed, or created (steps 2-3 of the docstring)."""
    import mlflow
    from mlflow.entities import LoggedModelStatus

    run_id = summary["mlflow_run_id"]
    experiment_id, source_run_id = home
    existing = find_logged_models(client, experiment_id, p.model_name, run_id)
    for m in existing:
        if m.status == LoggedModelStatus.FAILED:
            client.delete_logged_model(m.model_id)
    ready = [m for m in existing if m.status == LoggedModelStatus.READY]
    if ready:
        return ready[0].model_id
    pending = [m for m in existing if m.status == LoggedModelStatus.PENDING]
    if pending:
        model_id = pending[0].model_id
        print(f"register: resuming logged model {model_id} left PENDING by an interrupted attempt")
    else:
        model_id = mlflow.initialize_logged_model(
            name=p.model_name, source_run_id=source_run_id, tags=tags, model_type="video-mllm",
            experiment_id=experiment_id).model_id
    # An upload that fails leaves the model PENDING, and the retry resumes it (same files, same paths).
    client.log_model_artifacts(model_id, str(build_dir()))
    client.finalize_logged_model(model_id, "READY")
    return model_id


def register_version(client, p: RegisterParams, model_id: str, tags: dict[str, str]):
    """Register the logged model, then keep only the oldest version of this training run: another register of
    the same run may have raced us, or a create whose answer was lost may have been retried by the client."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mine = mlflow.register_model(f"models:/{model_id}", p.model_name, tags=tags)
    versions = find_versions(client, p.model_name, tags["train_run_id"]) or [mine]
    for extra in versions[1:]:
        try:
            client.delete_model_version(p.model_name, extra.version)
        except MlflowException as e:
            if "RESOURCE_DOES_NOT_EXIST" not in str(e.error_code):  # the racing register deleted it first
                raise
    return versions[0]


def evaluation_run(client, experiment_id: str, train_run_id: str):
    """The latest evaluation run of the training run (stages/evaluate.evaluation_run), or None."""
    from stages.evaluate import TRAIN_RUN_TAG

    runs = client.search_runs([experiment_id], f"tags.`{TRAIN_RUN_TAG}` = '{train_run_id}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def link_evaluation(client, eval_run, model_id: str, eval_result: dict) -> None:
    """The logged model as an input of its evaluation run, and the candidate's headline metrics on the logged model
    (its page in the UI), measured on the evaluation dataset; once per logged model."""
    from mlflow.entities import LoggedModelInput, Metric

    if model_id in {m.model_id for m in (eval_run.inputs.model_inputs or [])}:
        return
    client.log_inputs(eval_run.info.run_id, models=[LoggedModelInput(model_id)])
    ds = next((d.dataset for d in eval_run.inputs.dataset_inputs or []), None)
    on = {"dataset_name": ds.name, "dataset_digest": ds.digest} if ds else {}
    now, headline = int(time.time() * 1000), task_registry.headline()
    metrics = [Metric(metric_name(f"eval/candidate/{t}/{headline[t]}"), float(m[headline[t]]), now, 0,
                      model_id=model_id, run_id=eval_run.info.run_id, **on)
               for t, m in eval_result["candidate"]["metrics"].items() if headline.get(t) in m]
    if metrics:
        client.log_batch(eval_run.info.run_id, metrics=metrics)


def set_alias(client, name: str, alias: str, version: str, attempts: int = 5) -> None:
    """The tracking server inserts an alias after checking that it is absent, so two registers setting it at once
    can hit its unique key: retry, and accept an alias that already points at the version."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException:
            try:
                if str(client.get_model_version_by_alias(name, alias).version) == str(version):
                    return
            except MlflowException:
                pass
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def run(p: RegisterParams, mlflow_p: MlflowParams, model_dir: str, eval_path: str, *,
        prompt_dir: str | None = None, params: Params | None = None, lock_path: str = "dvc.lock",
        repo: str = ".") -> dict:
    from mlflow import MlflowClient

    from stages.mlflow_log import setup

    uri = setup(mlflow_p, experiment=False)
    require_reachable(uri)
    try:
        return _register(MlflowClient(uri), uri, p, model_dir, eval_path, prompt_dir, params, lock_path, repo,
                         mlflow_p)
    except TrackingUnavailable:
        raise
    except Exception:
        if is_http(uri):
            require_reachable(uri)  # the server went away mid-way: say so, naming it
        raise


def _register(client, uri, p, model_dir, eval_path, prompt_dir, params, lock_path, repo, mlflow_p) -> dict:
    summary = read_json(os.path.join(model_dir, "train_summary.json"))
    eval_result = read_json(eval_path)
    samples = Path(eval_path).parent / EVAL_SAMPLES
    if not samples.exists():
        print(f"register: {samples} not found (evaluate predates it): the promotion gate will refuse this version")
        samples = None
    params = params or Params()
    tags = lineage_tags(summary, eval_result, commit=git_commit(repo),
                        data_hashes=dvc_hashes(lock_path, p.lineage_outs),
                        params_sha256=sha256_json(params.model_dump()),
                        eval_samples_sha256=sha256_file(samples) if samples else None)
    run_id = summary["mlflow_run_id"]
    home = training_run_home(client, summary, os.environ.get("MLFLOW_EXPERIMENT_NAME") or mlflow_p.experiment)
    eval_run = evaluation_run(client, home[0], run_id) if home[1] else None
    if eval_run is not None:
        tags["eval_run_id"] = eval_run.info.run_id
    versions = find_versions(client, p.model_name, run_id)
    reused = bool(versions)
    with tempfile.TemporaryDirectory(prefix="videorft-register-") as tmp:
        def card() -> tuple[list[Path], str]:
            prompts = prompt_files(prompt_dir)
            return prompts, model_card.render(p.model_name, summary, eval_result, tags, params.train.model_dump(),
                                              [f.name for f in prompts])

        def build_dir() -> Path:
            prompts, text = card()
            return stage_model_dir(model_dir, prompts, text, Path(tmp) / "model", samples,
                                   serving.serving_config(params))

        if versions:  # already registered: refresh tags that a re-evaluation changed
            version = versions[0]
            if samples and version.tags.get("eval_samples_sha256") != tags["eval_samples_sha256"]:
                # re-evaluated: the model's per-sample rows and card follow before the tag that names them
                fresh = Path(tmp) / "refresh"
                fresh.mkdir()
                shutil.copy2(samples, fresh / EVAL_SAMPLES)
                (fresh / "MODEL_CARD.md").write_text(card()[1], encoding="utf-8")
                client.log_model_artifacts(version.source.removeprefix("models:/"), str(fresh))
        else:
            model_id = logged_model_for(client, p, summary, tags, build_dir, home)
            version = register_version(client, p, model_id, tags)
        refresh_version(client, p.model_name, version, tags, model_card.description(card()[1]))
    if eval_run is not None:
        link_evaluation(client, eval_run, version.source.removeprefix("models:/"), eval_result)
    set_alias(client, p.model_name, p.alias, version.version)
    record = {
        "model_name": p.model_name, "version": str(version.version), "alias": p.alias, "reused": reused,
        "train_run_id": run_id, "source": version.source, "tracking_uri": uri,
    }
    write_json(p.out, record)
    return record


def main() -> None:
    params = load_params()
    try:
        rec = run(params.register, params.mlflow, params.train.out_dir,
                  os.path.join(params.evaluate.out_dir, "eval.json"),
                  prompt_dir=params.build_samples.prompt_dir, params=params)
    except TrackingUnavailable as e:
        raise SystemExit(f"register: {e}") from None
    state = "already registered" if rec["reused"] else "registered"
    print(f"register: {rec['model_name']} version {rec['version']} {state} -> alias '{rec['alias']}' "
          f"(run {rec['train_run_id']})")


if __name__ == "__main__":
    main()
