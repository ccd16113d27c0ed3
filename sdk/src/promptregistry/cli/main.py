"""The command line: parse (argparse), load the settings, call one command, map the outcome to an
exit code (``ExitCode``). ``main(argv)`` returns the code rather than exiting, so tests and other
programs can call it in process."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import __version__
from . import evaluate, files, releases
from .config import API_KEY_VARIABLE, CONFIG_VARIABLE, TIMEOUT_VARIABLE, URL_VARIABLE, settings_load
from .errors import CliError, ExitCode
from .output import Output
from .registry import Registry

DESCRIPTION = """\
Prompt Registry from CI: pull and push prompt files, diff them, evaluate a version against the
promotion gates, change releases, and read what an environment serves. Every command talks to
the registry's REST API.

exit codes: 0 ok; 1 the files differ (diff), a promotion gate would refuse or refused (eval,
release); 2 a usage, configuration or registry error, or a bad file (nothing was changed).
"""
CONFIGURATION = f"""\
configuration, each setting from the first that has it: --url/--timeout; {URL_VARIABLE},
{API_KEY_VARIABLE}, {TIMEOUT_VARIABLE}; promptregistry.toml in this directory or a parent;
~/.config/promptregistry/config.toml. --config FILE (or {CONFIG_VARIABLE}) reads that file
instead of the last two. The key is never taken from the command line.
"""
WAIT_MINUTES = 30.0
POLL_SECONDS = 2.0


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (their defaults are left unset, so
    one given before the command is not undone by the subcommand's parser)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument(
        "--url", default=argparse.SUPPRESS, help="the registry, e.g. https://registry.example.com"
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=argparse.SUPPRESS,
        help="seconds each request may take (30)",
    )
    group.add_argument("--config", default=argparse.SUPPRESS, help="the one config file to read")
    group.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="one JSON document on stdout"
    )
    return common


def _positive_int(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
    return value


def parser() -> argparse.ArgumentParser:
    common = _common()
    root = argparse.ArgumentParser(
        prog="promptregistry",
        description=DESCRIPTION,
        epilog=CONFIGURATION,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=[common])

    pull = command(
        "pull",
        "Write the registry's prompts into DIR as YAML files (as `manage.py prompts export`).",
    )
    pull.add_argument("directory", type=Path, metavar="DIR")
    pull.add_argument(
        "--environment", help="the versions ENV serves as stable (default: the latest committed)"
    )
    pull.add_argument("--tag", help="only the prompts with this tag")
    pull.add_argument(
        "--no-version-fields",
        dest="version_fields",
        action="store_false",
        help="leave out version and content_hash: for files that are the source of truth",
    )

    push = command(
        "push", "Import DIR's prompt files: changed content becomes drafts (or versions)."
    )
    push.add_argument("directory", type=Path, metavar="DIR")
    push.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    push.add_argument("--commit", action="store_true", help="commit changed content as versions")

    diff = command(
        "diff", "Compare DIR's prompt files with the registry (exit 1 when they differ)."
    )
    diff.add_argument("directory", type=Path, metavar="DIR")

    run = command("eval", "Run a version over datasets, wait, and ask the promotion gates.")
    run.add_argument("key", metavar="KEY")
    run.add_argument("version", metavar="VERSION", help="a number, latest or draft")
    run.add_argument(
        "--dataset",
        action="append",
        default=[],
        help="a dataset to run (repeatable; default with --gate: the ones its gates name)",
    )
    run.add_argument(
        "--gate",
        metavar="ENV",
        help="gate runs (holdout included), then exit 1 if a gate of ENV would refuse the version",
    )
    run.add_argument(
        "--baseline",
        metavar="ENV",
        help="compare with ENV's stable version (default: --gate's, else the server's)",
    )
    run.add_argument(
        "--wait",
        type=_positive_float,
        default=WAIT_MINUTES,
        metavar="MINUTES",
        help="give up waiting after this long (30); the runs go on",
    )
    run.add_argument(
        "--poll",
        type=_positive_float,
        default=POLL_SECONDS,
        metavar="SECONDS",
        help=argparse.SUPPRESS,
    )

    release = command("release", "Change a release, sending If-Match with its revision.")
    verbs = release.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help, description=help, parents=[common])
        sub.add_argument("environment", metavar="ENV")
        sub.add_argument("key", metavar="KEY")
        return sub

    deploy = verb("deploy", "Make VERSION the stable version.")
    canary = verb("canary", "Start a canary of VERSION on PERCENT of subjects.")
    for sub in (deploy, canary):
        sub.add_argument("version", type=_positive_int, metavar="VERSION")
    canary.add_argument("--percent", required=True, help="0 to 100, at most two decimals")
    ramp = verb("ramp", "Set the running canary's percent.")
    ramp.add_argument("percent", metavar="PERCENT")
    verb("promote", "Make the canary's version stable.")
    verb("abort", "Stop the canary.")
    rollback = verb("rollback", "Undo the last change (or back to before --to-event).")
    rollback.add_argument("--to-event", type=_positive_int, metavar="EVENT")
    for sub in verbs.choices.values():
        sub.add_argument("--reason", default="", help="why, kept in the release history")
        sub.add_argument(
            "--expect-revision",
            type=int,
            metavar="N",
            help="the revision you read (status --json); refused if the release moved on",
        )
    for sub in (deploy, canary, verbs.choices["promote"]):
        sub.add_argument(
            "--override-gates",
            action="store_true",
            help="release past failing gates (needs --reason; audited)",
        )

    status = command("status", "What ENV serves: one prompt's release, or every one's.")
    status.add_argument("environment", metavar="ENV")
    status.add_argument("key", nargs="?", metavar="KEY")
    return root


def _dispatch(args: argparse.Namespace) -> Callable[[Registry, Output], ExitCode]:
    match args.command:
        case "pull":
            return lambda r, o: files.pull(
                r,
                o,
                directory=args.directory,
                environment=args.environment,
                tag=args.tag,
                version_fields=args.version_fields,
            )
        case "push":
            return lambda r, o: files.push(
                r, o, directory=args.directory, dry_run=args.dry_run, commit=args.commit
            )
        case "diff":
            return lambda r, o: files.diff(r, o, directory=args.directory)
        case "eval":
            if not args.dataset and not args.gate:
                raise CliError(
                    "Name a --dataset, or --gate ENV to run the datasets its gates name."
                )
            return lambda r, o: evaluate.evaluate(
                r,
                o,
                key=args.key,
                version=args.version,
                datasets=args.dataset,
                baseline=args.baseline,
                gate=args.gate,
                wait=args.wait * 60,
                poll=args.poll,
            )
        case "release":
            return lambda r, o: releases.change(
                r,
                o,
                verb=args.verb,
                environment=args.environment,
                key=args.key,
                version=getattr(args, "version", None),
                percent=getattr(args, "percent", None),
                to_event=getattr(args, "to_event", None),
                reason=args.reason,
                override_gates=getattr(args, "override_gates", False),
                expected_revision=args.expect_revision,
            )
    return lambda r, o: releases.status(r, o, environment=args.environment, key=args.key)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse has printed
        return int(exc.code or 0) if isinstance(exc.code, int) else ExitCode.ERROR
    out = Output(as_json=getattr(args, "json", False))
    try:
        command = _dispatch(args)
        settings = settings_load(
            url=getattr(args, "url", None),
            timeout=getattr(args, "timeout", None),
            config=getattr(args, "config", None),
        )
        with Registry(settings) as registry:
            return command(registry, out)
    except CliError as exc:
        out.error(exc.message, exc.as_json())
        return exc.exit_code
    except KeyboardInterrupt:
        out.error("Interrupted.", {"message": "Interrupted."})
        return ExitCode.INTERRUPTED
