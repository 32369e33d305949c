"""The ``ckptflow`` command: fetch, inspect, diff, cache ls|verify|prune, demo, catalog.

Human output by default, ``--json`` for machines; every failure kind has its own exit code
(``EXIT_CODES``), so scripts can tell a 404 from a checksum mismatch without parsing text.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from returns.result import Failure, Result, Success

from ckptflow.errors import ERROR_TYPES, Error

__all__ = ["EXIT_CODES", "main"]

EXIT_CODES: dict[str, int] = {cls.kind: 10 + i for i, cls in enumerate(ERROR_TYPES)}
"""Exit code per failure kind: 0 success, 2 usage error, 10+ one per kind (see ``ckptflow --help``)."""


def _emit(
    result: Result[Any, Error], as_json: bool, human: Callable[[Any], str], data: Callable[[Any], Any]
) -> int:
    match result:
        case Success(value):
            print(json.dumps(data(value), indent=2, default=str) if as_json else human(value))
            return 0
        case Failure(err):
            if as_json:
                print(json.dumps({"error": err.kind, "message": err.message, "stage": err.stage}, indent=2))
            else:
                print(f"error ({err.kind}): {err.message}", file=sys.stderr)
            return EXIT_CODES.get(err.kind, 1)
    return 1


def _cmd_fetch(args: argparse.Namespace) -> int:
    from ckptflow.api import describe_ref
    from ckptflow.fetch import fetch

    result = fetch(
        args.ref,
        cache_dir=args.cache_dir,
        sha256=args.sha256,
        offline=args.offline,
        verify=args.verify,
        progress=None if args.json else True,
    )
    return _emit(
        result,
        args.json,
        str,
        lambda p: {"path": str(p), "size": p.stat().st_size, "ref": describe_ref(args.ref)},
    )


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ckptflow.inspect import describe_checkpoint, render_description

    result = describe_checkpoint(args.ref, cache_dir=args.cache_dir, trusted=args.trusted)
    return _emit(result, args.json, lambda d: render_description(d, keys=args.keys), lambda d: d)


def _cmd_diff(args: argparse.Namespace) -> int:
    from ckptflow.inspect import diff_checkpoint, render_diff

    result = diff_checkpoint(
        args.ref, other=args.other, model=args.model, cache_dir=args.cache_dir, strategy=args.strategy
    )
    return _emit(result, args.json, render_diff, lambda d: d)


def _cmd_cache(args: argparse.Namespace) -> int:
    from ckptflow.inspect import cache_command

    result = cache_command(args.action, cache_dir=args.cache_dir, older_than=args.older_than)
    code = _emit(result, args.json, _render_cache, lambda d: d)
    corrupt = isinstance(result, Success) and result.unwrap().get("ok") is False
    return EXIT_CODES["checksum_mismatch"] if corrupt and code == 0 else code


def _render_cache(data: dict[str, Any]) -> str:
    lines = [f"cache: {data['root']}"]
    lines += [
        f"  {e['digest'][:16]}  {e['size']:>12,d}  {e.get('identity', '')}" for e in data.get("entries", [])
    ]
    lines += [f"  {k}: {v}" for k, v in data.items() if k not in ("root", "entries")]
    return "\n".join(lines)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ckptflow.demo import run_demo

    return _emit(run_demo(workdir=args.dir), args.json, lambda d: d["text"], lambda d: d["reports"])


def _cmd_catalog(args: argparse.Namespace) -> int:
    from ckptflow.catalog import catalog, render_catalog

    return _emit(Success(catalog()), args.json, render_catalog, lambda c: c)


def _parser() -> argparse.ArgumentParser:
    codes = ", ".join(f"{code} {kind}" for kind, code in EXIT_CODES.items())
    p = argparse.ArgumentParser(
        prog="ckptflow",
        description="Fetch, inspect and load PyTorch checkpoints from any source.",
        epilog=f"exit codes: 0 success, 2 usage error, {codes}",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        sp.add_argument("--cache-dir", default=None, help="cache directory (default: CKPTFLOW_CACHE)")
        return sp

    f = common(sub.add_parser("fetch", help="fetch REF into the cache and print its local path"))
    f.add_argument("ref")
    f.add_argument("--sha256", default=None)
    f.add_argument("--offline", action="store_true")
    f.add_argument("--verify", action="store_true", help="re-hash a cached blob before trusting it")
    f.set_defaults(run=_cmd_fetch)

    i = common(sub.add_parser("inspect", help="format, keys, shapes, dtypes, counts, training state, sha256"))
    i.add_argument("ref")
    i.add_argument("--keys", action="store_true", help="list every key, not just the module tree")
    i.add_argument("--trusted", action="store_true", help="allow arbitrary pickles for this file")
    i.set_defaults(run=_cmd_inspect)

    d = common(sub.add_parser("diff", help="what a load would do: REF vs a model, or REF vs REF"))
    d.add_argument("ref")
    d.add_argument("other", nargs="?", default=None)
    d.add_argument("--model", default=None, help="module:factory returning the target nn.Module")
    d.add_argument("--strategy", default="transfer_learning")
    d.set_defaults(run=_cmd_diff)

    c = common(sub.add_parser("cache", help="list, verify or prune the cache"))
    c.add_argument("action", choices=("ls", "verify", "prune"))
    c.add_argument(
        "--older-than", type=float, default=None, help="prune: partial downloads older than S seconds"
    )
    c.set_defaults(run=_cmd_cache)

    m = sub.add_parser("demo", help="end-to-end demo on local files and a temp cache")
    m.add_argument("--json", action="store_true")
    m.add_argument("--dir", default=None, help="work directory (default: a fresh temp dir)")
    m.set_defaults(run=_cmd_demo)

    k = sub.add_parser("catalog", help="sources, strategies and transforms available")
    k.add_argument("--json", action="store_true")
    k.set_defaults(run=_cmd_catalog)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except BrokenPipeError:
        # The reader (``| head``) went away: stop quietly, as Unix tools do.
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    raise SystemExit(main())
