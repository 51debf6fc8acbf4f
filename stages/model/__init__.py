"""Model input/output, shared by training, SFT, evaluation, serving and the recipes: loading (load.py), processors
(processor.py), video inputs (video_inputs.py), batched generation (generate.py) and the tiny offline models
(tiny.py). The GRPO trainer itself lives in stages/rl/."""
