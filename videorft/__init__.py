"""Entry points above the stages and flows: the `videorft` command (videorft/cli.py). Stages never import it."""
