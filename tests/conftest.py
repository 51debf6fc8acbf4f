import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _cwd_stays_in_its_test():
    """The recipes' main() chdir into their workdir (a test's tmp_path); pytest removes a passed test's tmp_path
    (tmp_path_retention_policy = "failed"), so a cwd left there would be a deleted folder for every later test."""
    before = os.getcwd()
    yield
    os.chdir(before)


@pytest.fixture(autouse=True)
def _mlflow_globals_stay_in_their_test():
    """mlflow.set_tracking_uri / set_experiment also write MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_ID into
    os.environ (for subprocesses); a test that calls them in-process would send a later test's runs to its store."""
    import sys

    before = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is not None:
        while fluent.active_run() is not None:
            fluent.end_run()
        fluent._active_experiment_id = None
        sys.modules["mlflow"].set_tracking_uri(None)  # unsets the env var too; the restore below puts back ours
    for k in [k for k in os.environ if k.startswith("MLFLOW_")]:
        if k not in before:
            del os.environ[k]
    os.environ.update(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The demo's tiny Qwen2.5-VL, built offline once per test session."""
    from stages.params import TinyModelParams
    from stages.model.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-model")
    build_tiny_model(TinyModelParams(), out)
    return str(out)


@pytest.fixture(scope="session")
def frame_files(tmp_path_factory):
    """Four cached videos of 8 random 84x112 frames (frame-cache layout)."""
    d = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        p = d / f"v{i}.npy"
        np.save(p, rng.integers(0, 255, (8, 84, 112, 3), dtype=np.uint8))
        paths.append(str(p))
    return paths
