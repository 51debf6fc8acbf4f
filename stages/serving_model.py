"""MLflow models-from-code entry of the registered model (stages/serving.py): register copies this file into the
logged model, beside the checkpoint, and MLflow runs it when the model is loaded; the model folder is where it
lies. Not imported by the project."""
from pathlib import Path

import mlflow

from stages.serving import VideoTaskModel

mlflow.models.set_model(VideoTaskModel(Path(__file__).resolve().parent))
