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
    """The error's text on one line. A KeyError's str() is the repr of its text (a newline in it
    comes out as a literal backslash-n), so its text is read from its argument, also when another
    exception wraps it (ml_collections' AttributeError around a KeyError)."""
    if len(e.args) == 1 and isinstance(e.args[0], BaseException):
        return one_line(e.args[0])
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        return " ".join(e.args[0].split()) or type(e).__name__
    return " ".join(str(e).split()) or type(e).__name__


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


_UNKNOWN_KEY = r"'([^'.]+)'(?:\s*Did you mean \"([^\"]+)\" instead of \"[^\"]*\"\?)?"


def _unknown_key(e: BaseException, argv) -> UserError | None:
    """ml_collections says an unknown key as a KeyError (or an AttributeError around one) whose
    text is `'stepz'`, a newline and `Did you mean "steps" instead of "stepz"?`: two lines in
    its own words, without the section. Say it as one sentence that names the flag, the key, the
    section it was looked up in and the suggestion."""
    inner = e.args[0] if isinstance(e, AttributeError) and e.args else e
    text = inner.args[0] if isinstance(inner, KeyError) and len(inner.args) == 1 else None
    m = isinstance(text, str) and re.fullmatch(_UNKNOWN_KEY, text)
    if not m:
        return None
    key, guess = m.groups()
    for arg in argv[1:]:
        path = arg.split("=", 1)[0].lstrip("-").split(".")
        if path[0] == "config" and key in path[1:]:
            section = ".".join(path[1 : path.index(key, 1)])
            flag = "--" + ".".join(path)
            break
    else:
        return None
    where = f"in {section}" if section else "in the config"
    hint = f'; did you mean "{guess}"?' if guess else ""
    return UserError(f"{flag}: unknown key {key!r} {where}{hint}")


def _parse_flags(argv):
    """absl's parser, with an unknown or badly typed `--config.*` override as a user error."""
    from absl import app, flags

    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, flags.Error):  # absl's own message and usage, exit 1 as before
            return app.parse_flags_with_usage(argv)
        unknown = _unknown_key(e, argv)
        if unknown is not None:
            _fail(unknown, argv)
        msg = one_line(e).replace("\\'", "'").strip("'\" ")
        key = re.match(r"'?(\w+)'", msg)
        bad = [a for a in argv[1:] if key and a.startswith("--config.") and key.group(1) in a]
        where = f"{bad[0].split('=')[0]}: " if bad else ""
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
