"""`videorft` command line: thin entry points over the stages and flows (this package sits above both; stages never
import it, nor flows)."""
from __future__ import annotations

import argparse
import json
import os
import sys


def fail(message: str) -> SystemExit:
    """One clear line on stderr and exit status 2 (a usage error), before anything starts."""
    print(f"videorft: {message}", file=sys.stderr)
    return SystemExit(2)


def load_params_file(path: str):
    """params.yaml of the command; a missing file is an error here (a typo must not run on defaults)."""
    from stages.params import load_params

    if not os.path.isfile(path):
        raise fail(f"params file {path} not found")
    return load_params(path)


def check_stages(stages: list[str]) -> None:
    """Stage names must be dvc.yaml's (this directory's pipeline), checked before a flow or server starts."""
    from stages.graph import stage_names

    known = stage_names()
    bad = [s for s in stages if s not in known]
    if bad:
        raise fail(f"unknown stage {', '.join(bad)}; dvc.yaml here has: {' '.join(known) or 'no stages'}")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("videorft")
    except PackageNotFoundError:  # run from a source tree without the install step
        return "unknown (not installed)"


def cmd_summary(args) -> int:
    """Print what the last run produced: MLflow run, registered version + alias, and per task base, candidate,
    the difference with its interval, parse rates, the blind line and whether anything was learned."""
    from stages.io import read_json

    p = load_params_file(args.params)
    out = {}
    for name, path in (("train", os.path.join(p.train.out_dir, "train_summary.json")),
                       ("eval", os.path.join(p.evaluate.out_dir, "eval.json")),
                       ("register", p.register.out)):
        if os.path.exists(path):
            out[name] = read_json(path)
    if not out:
        print("no run found: run `bash scripts/demo.sh` first", file=sys.stderr)
        return 1
    reg, tr, ev = out.get("register", {}), out.get("train", {}), out.get("eval", {})
    print(f"MLflow run        : {tr.get('mlflow_run_id')} ({reg.get('tracking_uri', p.mlflow.tracking_uri)})")
    print(f"registered model  : {reg.get('model_name')} version {reg.get('version')} alias '{reg.get('alias')}'")
    print(f"training          : {tr.get('steps')} steps, {tr.get('samples')} samples, {tr.get('seconds')} s")
    val = tr.get("validation")
    if val:  # train.validation: greedy validation rows and which validated step became the model
        print(f"validation        : {val['rows']} rows answered greedily at steps "
              f"{', '.join(str(h['step']) for h in val['history'])}; the model is step {val['selected_step']} "
              f"(select: {val['select']}); curves: MLflow val/<task>/<metric>, dvc plots")
    if ev:
        from stages.evaluate import report

        print(f"evaluation        : {ev.get('samples')} held-out samples "
              f"({', '.join(f'{t}: {n}' for t, n in (ev.get('samples_per_task') or {}).items())}); "
              f"all metrics in {os.path.join(p.evaluate.out_dir, 'eval.json')}")
        for line in report(ev):
            print(line)
    return 0


# `videorft exps`: the train params a sweep usually varies (dvc exp show column names).
EXPS_PARAMS = ("model.name_or_path", "train.tasks", "train.max_steps", "train.learning_rate", "train.beta",
               "train.num_generations", "train.loss_type", "train.seed")


def exps_keep() -> str:
    """The `dvc exp show --keep` regex of `videorft exps`: per task the candidate's headline metric and the ends of
    its paired interval of candidate - base (eval.json), whether general ability was kept, the main params."""
    import re

    from stages import tasks as task_registry

    metrics = "|".join(re.escape(f"{t}.{m}") for t, m in task_registry.headline().items())
    params = "|".join(re.escape(p) for p in EXPS_PARAMS)
    return (rf"^(Experiment|Created|candidate\.metrics\.({metrics})|intervals\.({metrics})\.(lo|hi)|general\.kept"
            rf"|{params})$")


def cmd_exps(args, dvc_args: list[str]) -> int:
    """`dvc exp show` with the curated columns; other dvc exp show options pass through (-A, --md, --csv, -n 5)."""
    import shlex
    import subprocess

    show = ["exp", "show", "--no-pager", "--drop", ".*", "--keep", exps_keep(), *dvc_args]
    if args.print:
        print(shlex.join(["dvc", *show]))
        return 0
    return subprocess.call([sys.executable, "-m", "dvc", *show])


def cmd_flow(args) -> int:
    check_stages(args.stages)
    from flows.pipeline import pipeline

    pipeline(stages=args.stages or None, force=args.force)
    return 0


def cmd_retrain(args) -> int:
    """The retrain flow: stages in order, train on the GPU deployment (if any), promote under the gate."""
    check_stages(args.stages)
    from flows.retrain import retrain

    state = retrain(stages=args.stages or None, force=args.force, train_deployment=args.train_deployment,
                    train_timeout_s=args.train_timeout, gpus=args.gpus, promote=not args.no_promote,
                    return_state=True)
    if not state.is_completed():
        print(f"retrain: flow run {state.state_details.flow_run_id} {state.name}: {state.message}", file=sys.stderr)
        return 1
    print(json.dumps(state.result(), indent=2))
    return 0


def cmd_serve(args) -> int:
    """Serve the retrain flow on a cron schedule from this machine (flow.serve)."""
    from flows.serve import serve

    serve(name=args.name, cron=args.cron or None, timezone=args.timezone, limit=args.limit)
    return 0


def cmd_promote(args) -> int:
    """Move `production` to a version only if the gate in params.yaml (section promote) holds."""
    from stages.promote import main_promote
    from stages.mlflow_log import TrackingUnavailable

    params = load_params_file(args.params)
    try:
        return main_promote(params, args.model_name, args.version, args.by)
    except (TrackingUnavailable, LookupError, TimeoutError, ValueError) as e:
        print(f"promote: {e}", file=sys.stderr)
        return 2


def cmd_rollback(args) -> int:
    """Move `production` back to the version that held it before."""
    from stages.promote import main_rollback
    from stages.mlflow_log import TrackingUnavailable

    params = load_params_file(args.params)
    try:
        return main_rollback(params, args.model_name, args.by)
    except (TrackingUnavailable, LookupError, TimeoutError) as e:
        print(f"rollback: {e}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="videorft", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="what the last pipeline run produced")
    s.add_argument("--params", default="params.yaml")
    s.set_defaults(fn=cmd_summary)
    f = sub.add_parser("flow", help="run the pipeline as a Prefect flow (ephemeral server unless PREFECT_API_URL)")
    f.add_argument("stages", nargs="*", help="stages to run (default: all, in order)")
    f.add_argument("--force", action="store_true", help="re-run stages even if DVC finds them up to date")
    f.set_defaults(fn=cmd_flow)
    rt = sub.add_parser("retrain", help="retrain flow: stages in order, train on the GPU pool, promote under the gate")
    rt.add_argument("stages", nargs="*", help="stages to run (default: all, in order)")
    rt.add_argument("--force", action="store_true", help="re-run stages even if DVC finds them up to date")
    rt.add_argument("--train-deployment", help="deployment running the train stage, e.g. train-stage/gpu "
                    "(default: $VIDEORFT_TRAIN_DEPLOYMENT; none = train in this process)")
    rt.add_argument("--train-timeout", type=float, help="seconds to wait for the train deployment (default: no limit)")
    rt.add_argument("--gpus", type=int, default=1, help="GPU slots the train stage occupies (concurrency limit 'gpu')")
    rt.add_argument("--no-promote", action="store_true", help="stop after register")
    rt.set_defaults(fn=cmd_retrain)
    sv = sub.add_parser("serve", help="run retrain on a cron schedule from this machine (needs PREFECT_API_URL)")
    sv.add_argument("--name", default="nightly", help="deployment name (retrain/<name>)")
    sv.add_argument("--cron", default="0 3 * * *", help="cron schedule; empty = on demand only")
    sv.add_argument("--timezone", default="UTC")
    sv.add_argument("--limit", type=int, default=1, help="concurrent runs (stages share one workspace)")
    sv.set_defaults(fn=cmd_serve)
    pr = sub.add_parser("promote", help="move 'production' to a version if the promotion gate holds (exit 1: refused)")
    pr.add_argument("--version", help="version to promote (default: the one with alias promote.from_alias)")
    pr.add_argument("--model-name", help="registered model (default: register.model_name)")
    pr.add_argument("--by", help="who decides (recorded; default: $VIDEORFT_ACTOR or user@host)")
    pr.add_argument("--params", default="params.yaml")
    pr.set_defaults(fn=cmd_promote)
    rb = sub.add_parser("rollback", help="restore the previous 'production' version")
    rb.add_argument("--model-name", help="registered model (default: register.model_name)")
    rb.add_argument("--by", help="who decides (recorded; default: $VIDEORFT_ACTOR or user@host)")
    rb.add_argument("--params", default="params.yaml")
    rb.set_defaults(fn=cmd_rollback)
    from stages import score  # light: the task modules only

    sc = sub.add_parser("score", help="score a predictions JSONL against annotations in an upstream format")
    score.add_arguments(sc)
    sc.set_defaults(fn=score.run)
    ex = sub.add_parser("exps", help="dvc exp show with curated columns (headline metrics, intervals, main params); "
                        "other dvc exp show options pass through")
    ex.add_argument("--print", action="store_true", help="print the dvc command instead of running it")
    ex.set_defaults(fn=cmd_exps)
    args, extra = parser.parse_known_args(argv)
    if args.fn is cmd_exps:
        return cmd_exps(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
