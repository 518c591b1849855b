"""How the command lines end on an error a person fixes (types.UserError: a config key, a data
file, a checkpoint, a busy workdir, a run that went non-finite; or a missing file).

Such an error ends a command with one line, `error: <what and where>`, on stderr and exit
status 2; `--verbose` (or absl's `-v 1`) shows the traceback too. Every other exception is an
internal error and keeps its traceback.
"""

from __future__ import annotations

import re
import sys

from metalm_jax.types import USER_ERRORS, UserError

EXIT_USER_ERROR = 2


def one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg


def _verbose(argv) -> bool:
    from absl import flags

    f = flags.FLAGS
    if f.is_parsed():
        return bool(f["verbose"].value) or f.verbosity >= 1
    args = " ".join(argv or sys.argv)  # flags not parsed: a parse error; read argv instead
    return bool(re.search(r"(^| )(--verbose\b|(-v|--verbosity)[ =]?([1-9]))", args))


def _fail(e: BaseException, argv) -> None:
    if _verbose(argv):
        raise e
    print(f"error: {one_line(e)}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _parse_flags(argv):
    """absl's parser, with an unknown or badly typed `--config.*` override as a user error."""
    from absl import app, flags

    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        msg = one_line(e).replace("\\'", "'").strip("'\" ")
        key = re.match(r"'?(\w+)'", msg)
        bad = [a for a in argv[1:] if key and a.startswith("--config.") and key.group(1) in a]
        where = f"{bad[0].split('=')[0]}: " if bad else ""
        if isinstance(e, flags.Error):  # absl's own message and usage, exit 1 as before
            return app.parse_flags_with_usage(argv)
        _fail(UserError(f"{where}{msg}"), argv)


def run_cli(main) -> None:
    """`app.run(main)` for the command lines: user errors as one line and exit 2 (above)."""
    from absl import app, flags

    if "verbose" not in flags.FLAGS:
        flags.DEFINE_bool("verbose", False, "show tracebacks of user errors too (or -v 1)")

    def guarded(argv):
        try:
            return main(argv)
        except USER_ERRORS as e:
            _fail(e, argv)

    app.run(guarded, flags_parser=_parse_flags)
