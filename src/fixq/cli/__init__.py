"""The ``fixq`` command line: quantize ``.npz`` weight archives and run int8 inference."""
import json
import signal
import sys

import click

from .. import __version__, cpu_info


def _version_message():
    info = cpu_info()
    return (f"fixq {__version__}\n"
            f"CPU paths compiled: {', '.join(info['compiled'])}; supported: {', '.join(info['supported'])}; "
            f"selected: {info['selected']}")


def _print_version(ctx, param, value):
    """--version and --json (both eager): click calls this for each, given or not, so the second call
    knows both values whichever order they came in."""
    if ctx.resilient_parsing:
        return
    seen = ctx.meta.setdefault("fixq.version_flags", {})
    seen[param.name] = value
    if len(seen) < 2:
        return
    if seen["version"]:
        if seen["json"]:
            click.echo(json.dumps({"fixq": __version__, "cpu": cpu_info()}))
        else:
            click.echo(_version_message())
        ctx.exit(0)
    if seen["json"]:
        raise click.UsageError("--json before a command goes with --version; for a command's JSON report put it "
                               "after the command (fixq inspect --json MODEL)", ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and the CPU paths, then exit.")
@click.option("--json", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="With --version: print them as one JSON object.")
def cli():
    """fixq: exact, fast int8 inference."""


from . import demo as _demo, io_cmds as _io_cmds, model_cmds as _model_cmds  # noqa: E402,F401  (register their commands)


def _terminated(signum, frame):
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: temporary outputs are removed, `fixq: interrupted`, exit 130


def main(args=None, prog_name="fixq"):
    signal.signal(signal.SIGTERM, _terminated)
    try:
        cli.main(args=args, prog_name=prog_name, standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("fixq: interrupted", err=True)
        sys.exit(130)
