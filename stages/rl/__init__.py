"""Models and the video-aware GRPO trainer."""
