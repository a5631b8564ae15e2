"""``visattn pipeline ...``: the CLI of the app-level pipelines (kept out of ``visattn/cli.py``).

``visattn pipeline two-level --config cfg.yaml [--stage proposals|filter|domain|part|fuse|all]
[--workers N] [--set key=value ...]`` runs the two-level attention pipeline (Xiao et al., CVPR 2015)
or one of its stages; each stage reads the cached output of the one before it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_pipeline_parser", "run_pipeline_command"]

_STAGES = ("proposals", "filter", "domain", "part", "fuse", "all")


def add_pipeline_parser(sub: Any) -> None:
    """Register the ``pipeline`` sub-command on ``sub`` (an argparse sub-parsers object)."""
    pp = sub.add_parser("pipeline", help="run an app-level pipeline (two-level attention)")
    kinds = pp.add_subparsers(
        dest="pipeline", required=True, parser_class=type(pp), help="which pipeline to run"
    )
    tl = kinds.add_parser(
        "two-level",
        help="two-level attention (Xiao et al., CVPR 2015): proposals, object and part attention, fusion",
        description="Stages are cached under the config's `out`; --stage re-runs one of them.",
    )
    tl.add_argument("--config", help="YAML file of TwoLevelConfig fields")
    tl.add_argument(
        "--stage", choices=_STAGES, default="all", help="run only this stage (earlier caches must be valid)"
    )
    tl.add_argument("--workers", type=int, default=1, help="processes for selective search")
    tl.add_argument(
        "--set", action="append", metavar="KEY=VALUE", dest="overrides", help="override a config field"
    )
    tl.add_argument(
        "--figures", type=int, default=4, help="validation images drawn with their patches (fuse)"
    )
    tl.add_argument("--quiet", action="store_true", help="no progress bars")
    tl.set_defaults(handler=run_pipeline_command)


def run_pipeline_command(args: argparse.Namespace) -> int:
    """Run the parsed ``pipeline`` command; prints each stage's statistics as JSON."""
    import yaml

    from visattn.pipelines.two_level import load_two_level_config, run_two_level

    overrides: dict[str, Any] = {}
    for item in args.overrides or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        overrides[k.strip()] = yaml.safe_load(v) if v.strip() else None
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    cfg = load_two_level_config(args.config, overrides)
    report = run_two_level(
        cfg, args.stage, workers=args.workers, progress=not args.quiet, figures=args.figures
    )
    print(json.dumps(report, default=str))
    return 0
