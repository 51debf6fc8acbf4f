"""What a user sees in the two UIs after a retrain, checked in headless Chromium (Debian's `chromium`, driven over
the DevTools protocol: tests/chromium.py) against real servers on 127.0.0.1.

One real retrain flow run of the tiny pipeline (`videorft retrain`, every stage of dvc.yaml, train on this machine)
against a Prefect server (SQLite) and an MLflow server (SQLite) that this module starts and stops. Then:
- Prefect: the flow run's page draws its run graph and lists one task run per stage, named after the stage;
- MLflow, in the "Model training" view: the flow's parent run with the stage runs nested under it, and the training
  run's Model metrics drawing the per-task reward curves (the IoU part of tg, gqa and tracking: CURVES);
- MLflow registry: the registered version's page shows the model card as its description, and its alias.
A blank UI ("Can't connect to Server API"), a wrong name or a missing curve fails the test with the page's text.
Screenshots go to the module's tmp dir (and to $VIDEORFT_UI_SCREENSHOTS when set; docs/img has three of them).
"""
import io
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infra.devstack import MlflowServer
from infra.stack import PrefectServer
from tests.chromium import Chromium, PageError, find_chromium
from tests.flows.machines import wait_for
from tests.pipeline.conftest import TINY, make_workspace, sh, workspace_env

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,  # the tiny pipeline through the retrain flow, then three pages: about 2-3 min here
    pytest.mark.skipif(CHROMIUM is None, reason="!!! BROWSER TESTS SKIPPED: no chromium on PATH "
                                                "(apt-get install chromium; .ci/run installs it)"),
]
# The IoU part of each task's reward as the trainer logs it (TRL's rewards/<reward function>/mean; ours are named
# <task>_<part>, stages/tasks): tg and tracking are what the demo claims to learn. qa's reward has no IoU part.
CURVES = ("rewards/tg_iou/mean", "rewards/gqa_evidence_iou/mean", "rewards/tracking_iou/mean")
UI_BROKEN = ("Can't connect to Server API", "Something went wrong", "Page not found")


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """Servers up, one completed retrain flow run; what the pages should show, from the servers' own APIs."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("ui")
    mlflow, prefect = MlflowServer(root / "mlflow", workers=1), PrefectServer(root / "prefect")
    try:
        with ThreadPoolExecutor(2) as pool:  # both start at once: ~20-30 s each on 2 busy cores
            for started in [pool.submit(server.start) for server in (mlflow, prefect)]:
                started.result()
        # TINY, but 2 training steps (tg gets two points, gqa and tracking one each) and one held-out sample per task
        ws = make_workspace(root / "ws", tiny={**TINY, "train": {**TINY["train"], "max_steps": 2},
                                               "evaluate": {**TINY["evaluate"], "max_samples_per_task": 1}})
        env = workspace_env(ws, MLFLOW_TRACKING_URI=mlflow.uri, **prefect.env())
        proc = sh([sys.executable, "-m", "videorft", "retrain"], ws, env, timeout=900)
        summary = json.loads(proc.stdout[proc.stdout.index("{"):])
        client = MlflowClient(mlflow.uri)
        parent = client.get_run(summary["mlflow_parent_run_id"])
        register = json.loads((ws / "metrics/register.json").read_text())
        version = client.get_model_version(register["model_name"], register["version"])
        yield {"ws": ws, "mlflow": mlflow, "prefect": prefect, "client": client, "summary": summary,
               "flow_run_name": parent.data.tags["prefect.flow_run_name"], "parent": parent,
               "train": client.get_run(version.run_id), "version": version, "alias": register["alias"],
               "shots": root / "screenshots"}
    finally:
        prefect.stop()
        mlflow.stop()


@pytest.fixture(scope="module")
def browser(retrained):
    retrained["shots"].mkdir(exist_ok=True)
    with Chromium(CHROMIUM, width=1600, height=1000) as b:
        yield b


def shot(browser, retrained, name: str) -> Path:
    """Save what the page shows now; copied to $VIDEORFT_UI_SCREENSHOTS too when set."""
    path = browser.screenshot(retrained["shots"] / name)
    if os.environ.get("VIDEORFT_UI_SCREENSHOTS"):
        out = Path(os.environ["VIDEORFT_UI_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / name)
    return path


def graph_pixels(browser) -> int:
    """Bright green pixels (Prefect's Completed colour, the task runs' bars) in the run graph's canvas; a blank
    graph has none (measured: about 26,000 once drawn, 0 before)."""
    rect = browser.evaluate("(() => { const c = document.querySelector('canvas'); if (!c) return null;"
                            " const r = c.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()")
    if not rect or min(rect[2:]) < 100:
        return 0
    x, y, w, h = rect
    png = browser.png(clip={"x": x, "y": y, "width": w, "height": h - 20})  # not the state bar along its foot
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((g > 130) & (g > r + 60) & (g > b + 40)).sum())


def test_prefect_flow_run_page_draws_the_run_graph_and_names_each_stage(retrained, browser):
    from flows.workspace import stage_names

    stages = stage_names(retrained["ws"])
    assert {"train", "evaluate", "register"} <= set(stages), stages
    assert list(retrained["summary"]["stages"])[:len(stages)] == stages  # the flow ran every stage
    flow_run_id = retrained["summary"]["flow_run_id"]
    browser.goto(f"{retrained['prefect'].uri}/runs/flow-run/{flow_run_id}")
    browser.wait_for_text(retrained["flow_run_name"], "Completed", "Task Runs", "retrain", timeout=90,
                          forbidden=UI_BROKEN)
    # the run graph is drawn on a canvas, no text to read: wait until it shows the green bars of completed runs
    wait_for(lambda: graph_pixels(browser) > 5000, 60, "the run graph to draw the completed task runs")

    browser.click_text("Task Runs")
    if "promote" in retrained["summary"]["stages"]:
        stages = [*stages, "promote"]  # the gate's task run, named like the stages (not promote-<hash>)
    text = browser.wait_for_text(*stages, timeout=60, forbidden=UI_BROKEN)
    lines = {line.strip() for line in text.splitlines()}
    missing = [s for s in stages if s not in lines]  # whole lines: `train` must not pass as part of `retrain`
    assert not missing, f"task runs not named after their stage: {missing}\n{text}"
    assert not any(line.startswith("stage-") for line in lines), text  # Prefect's default name would be stage-<n>
    shot(browser, retrained, "prefect-flow-run.png")  # the run graph above, the task runs below


def test_mlflow_training_view_shows_per_task_reward_curves(retrained, browser):
    mlflow, train, parent = retrained["mlflow"], retrained["train"], retrained["parent"]
    curves = list(CURVES)
    assert set(curves) <= set(train.data.metrics), sorted(train.data.metrics)  # what the trainer logged
    exp = train.info.experiment_id

    # a fresh browser opens MLflow 3.17 in its GenAI view; "Model training" lists the runs
    browser.goto(f"{mlflow.uri}/#/experiments/{exp}")
    browser.wait_for_text("Model training", timeout=90, forbidden=UI_BROKEN)
    browser.click_text("Model training")
    try:
        browser.wait_for_text(parent.info.run_name, "Runs", timeout=30)
    except PageError:  # seen once in CI under load: the click landed while the GenAI overview still loaded
        browser.click_text("Model training")
        browser.wait_for_text(parent.info.run_name, "Runs", timeout=60)
    browser.click("button[aria-label='Close']")  # the assistant panel MLflow opens on a first visit
    browser.click_beside(parent.info.run_name)  # one run per flow run: its stages are nested under it
    evaluation = f"evaluate-{train.info.run_name}"
    browser.wait_for_text(train.info.run_name, evaluation, "data/samples/train.jsonl", retrained["version"].name,
                          timeout=60)
    shot(browser, retrained, "mlflow-runs.png")

    browser.goto(f"{mlflow.uri}/#/experiments/{exp}/runs/{train.info.run_id}/model-metrics")
    browser.wait_for_text(train.info.run_name, "Model metrics", "rewards/tg_iou", timeout=60, forbidden=UI_BROKEN)
    browser.type_into("input[placeholder='Search metric charts']", "_iou/mean")
    for name in curves:  # charts are drawn when scrolled into view; the legend names run and metric
        browser.scroll_to_text(name.rsplit("/", 1)[0])
        browser.wait_for_text(f"{train.info.run_name} ({name})", timeout=60)
        if name == curves[0]:
            shot(browser, retrained, "mlflow-reward-curves.png")
        plotted = browser.evaluate("document.querySelectorAll('svg .scatterlayer .trace path[d]').length")
        assert plotted, f"the chart of {name} has a legend but no plotted curve"
    text = browser.text()
    assert "rewards/qa_format" not in text, "the chart search did not filter the charts"


def test_mlflow_registry_shows_the_version_with_its_model_card(retrained, browser):
    version, train = retrained["version"], retrained["train"]
    card = version.description
    heading, run_line = "Evaluation (greedy decoding, held-out samples)", "training run (MLflow): {}"
    assert f"## {heading}" in card and run_line.format(f"`{train.info.run_id}`") in card, card[:2000]
    lines = [heading, run_line.format(train.info.run_id)]  # as rendered: no markdown marks
    browser.goto(f"{retrained['mlflow'].uri}/#/models/{version.name}/versions/{version.version}")
    text = browser.wait_for_text(f"Version {version.version}", "Description", *lines, retrained["alias"],
                                 train.info.run_name, timeout=90, forbidden=UI_BROKEN)
    assert "## Model" not in text, "the model card is shown as raw markdown, not rendered"
    shot(browser, retrained, "mlflow-model-version.png")
