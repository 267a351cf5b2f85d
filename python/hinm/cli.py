"""The `hinm` command.

    hinm demo  [-o OUT] [--quick]          prune all-MiniLM-L6-v2 end to end and write a report folder
    hinm prune MODEL --config CFG -o OUT   prune a local sentence-transformers / transformers model
                                           folder or a .safetensors file
    hinm bench [--quick]                   HiNMLinear vs dense nn.Linear speed, timed in the same run
    hinm info                              version, build options, threads, GPUs

User errors (a missing path, an impossible config, an unreadable checkpoint, a target that is not
an nn.Linear, missing optional packages) print one line on stderr and exit with status 2; only
genuine bugs show a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

EXIT_USER = 2


class UserError(Exception):
    """An error caused by the command's input, reported in one line."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hinm", description="Hierarchical N:M sparsity: prune, compress and run models.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    d = sub.add_parser("demo", help="prune all-MiniLM-L6-v2 (bundled, offline) and report quality and speed")
    d.add_argument("-o", "--out", default="hinm-demo", help="output folder (default: hinm-demo)")
    d.add_argument("--quick", action="store_true", help="fewer sentences and variants (a few minutes)")
    d.add_argument("--calib", type=int, default=None, help="calibration sentences (default 256; quick 128)")
    d.add_argument("--eval", type=int, default=None, help="evaluation sentences (default 384; quick 128)")
    d.add_argument("--no-plots", action="store_true", help="skip the PNG plots")

    pr = sub.add_parser("prune", help="prune a local model folder or .safetensors file")
    pr.add_argument("model", help="sentence-transformers / transformers folder, or a .safetensors file")
    pr.add_argument("--config", default="hinm:v64:0.5:2:4", help="'hinm:v64:0.5:2:4' (v, vector density, n, m) or '2:4'")
    pr.add_argument("--permute", default="gyro", choices=["gyro", "identity", "random", "channel_swap"])
    pr.add_argument("--permute-effort", default="default", choices=["default", "fast"],
                    help="permutation search effort ('fast': several times quicker, most of the gain)")
    pr.add_argument("--calibration", metavar="FILE", help="text file, one calibration sentence per line")
    pr.add_argument("--saliency", choices=["magnitude", "activation", "obs"], default=None,
                    help="default: activation with --calibration, else magnitude")
    pr.add_argument("--reconstruct", action="store_true", help="layer-wise reconstruction (needs --calibration)")
    pr.add_argument("--distill-steps", type=int, default=None, metavar="N",
                    help="then distil the pruned model from the dense one on the calibration text, masks fixed")
    pr.add_argument("--distill-seconds", type=float, default=None, metavar="S", help="distillation wall-clock budget")
    pr.add_argument("--targets", nargs="*", default=None, metavar="REGEX", help="layers to prune (default: all Linear)")
    pr.add_argument("--ignore", nargs="*", default=(), metavar="REGEX", help="layers to leave dense")
    pr.add_argument("-o", "--out", required=True, help="output folder")

    b = sub.add_parser("bench", help="HiNMLinear vs dense nn.Linear on CPU, ratios from the same run")
    b.add_argument("--quick", action="store_true")
    b.add_argument("-o", "--out", default=None, help="write the results as JSON here")

    sub.add_parser("info", help="version, build options, threads and GPUs")
    return p


def _run(args: argparse.Namespace) -> int:
    if args.command == "info":
        from . import info

        info.main()
        return 0
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.out, quick=args.quick, n_calib=args.calib, n_eval=args.eval, plots=not args.no_plots)
        return 0
    if args.command == "prune":
        from .prune_cmd import run_prune

        run_prune(args)
        return 0
    if args.command == "bench":
        from .bench_cmd import run_bench

        run_bench(quick=args.quick, out=args.out)
        return 0
    raise UserError(f"unknown command {args.command!r}")


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="hinm: %(message)s")
    try:
        return _run(args)
    except (UserError, ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError,
            NotADirectoryError, ImportError, RuntimeError) as e:
        if isinstance(e, (TypeError, RuntimeError)) and not _is_user_message(e):
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        sys.stderr.write(f"hinm {args.command}: error: {msg}\n")
        return EXIT_USER
    except KeyboardInterrupt:
        sys.stderr.write("hinm: interrupted\n")
        return 130


def _is_user_message(e: Exception) -> bool:
    """TypeError/RuntimeError are user errors only when hinm raised them about the input."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    mod = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return mod.startswith("hinm")


if __name__ == "__main__":
    sys.exit(main())
