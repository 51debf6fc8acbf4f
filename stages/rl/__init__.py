"""The video-aware GRPO trainer (model input/output is stages/model/)."""
