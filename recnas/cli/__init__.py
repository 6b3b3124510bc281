"""The `recnas` command line. Each concern lives in its own module with its own Typer app."""

from __future__ import annotations

import codecs
import os
import sys

import typer

from recnas.cli.terminal import terminal_safe
from recnas.errors import RecnasError
from recnas.rank_errors import OUT_OF_MEMORY, launched_rank, report_error, reported_by_another_rank


def _interrupted() -> None:
    """Ctrl-C: one `interrupted` line (under --nproc the launcher says it, once) and exit 130.
    A rank leaves without the interpreter's teardown: its process group's gloo threads, still
    running, were at times torn down there, and the rank died of SIGABRT printing "terminate
    called without an active exception" under the launcher's line (the `finally` blocks on the
    way here have run: checkpoints are whole; only atexit hooks are skipped)."""
    if not launched_rank():
        typer.secho("interrupted", err=True)
        sys.exit(130)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more to say there
            pass
    os._exit(130)


# The command modules import no torch (nor numpy, pyarrow, matplotlib, ray): each command loads
# what it needs when it runs, so `recnas --version` and every --help stay well under a second
# (tests/test_cli_models.py checks it). Ctrl-C while these modules load ended in the import's
# traceback; while a command's own imports load, Typer makes it exit 130 as any Ctrl-C.
try:
    from recnas.cli import data as data_cli
    from recnas.cli import embed as embed_cli
    from recnas.cli import models as models_cli
    from recnas.cli import search as search_cli
except KeyboardInterrupt:
    _interrupted()

EXIT_CODES = "Exit codes: 0 done; 2 a bad command line, config, data file or path (one error: line); 1 out of memory (or a crash, with its traceback); 130 interrupted."

# -h as well as --help (subcommands inherit it): `recnas search -h` was "No such option: -h"
app = typer.Typer(help="Weight-sharing NAS for CTR models.", epilog=EXIT_CODES, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})


def _print_version(value: bool) -> None:
    if value:
        from recnas import __version__

        typer.echo(f"recnas {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="print the version of recnas and exit")) -> None:
    """Weight-sharing NAS for CTR models."""
app.add_typer(data_cli.app, name="data", help="Prepare raw CTR data or generate the synthetic benchmark.")
app.add_typer(models_cli.supernet_app, name="supernet", help="Train a supernet.")
app.add_typer(models_cli.subnet_app, name="subnet", help="Train one architecture (from scratch, or from supernet weights).")
app.add_typer(models_cli.baseline_app, name="baseline", help="Train a hand-designed baseline.")
app.command("evaluate", help="Evaluate a trained model checkpoint on a split.")(models_cli.evaluate)
search_cli.register(app)
app.add_typer(embed_cli.app, name="embed", help="One-shot embedding size search, and putting its widths into an architecture.")

def _fold_option_help() -> None:
    """Typer draws an option's help in a column that is 18 characters wide at 80 columns (a
    default terminal, or piped), and cut any longer word with an ellipsis: `--sampler` read
    "single-op-any-con…", its default too, `--inherit` "model.pt/checkpoi…". Each piece of an
    option's help is folded onto the next line instead. (A Typer without this private helper
    keeps its own drawing.)"""
    from rich.text import Text
    from typer import rich_utils

    helper = getattr(rich_utils, "_get_parameter_help", None)
    if helper is None or getattr(helper, "_recnas_folds", False):
        return

    def folded(*args, **kwargs):
        drawn = helper(*args, **kwargs)
        for piece in getattr(drawn, "renderables", ()):
            if isinstance(piece, Text):
                piece.overflow = "fold"
        return drawn

    folded._recnas_folds = True  # type: ignore[attr-defined]
    rich_utils._get_parameter_help = folded


_fold_option_help()

# Typer's own click: recent Typers vendor one (typer._click), older ones use click itself. The
# module of its public BadParameter holds the rest of the usage errors either way.
_click_errors = sys.modules[typer.BadParameter.__module__]
_NoArgsIsHelp = getattr(_click_errors, "NoArgsIsHelpError", ())  # click >= 8.2


def _error_line(text: str) -> None:
    """`text` on stderr, in red on a terminal, but plain where the user asked for no colour
    (NO_COLOR set and not empty, https://no-color.org) or the terminal has none (TERM=dumb):
    rich's output honoured both, the error line alone came in red. Its control characters
    (of a file name or a key read from a file) are shown as escapes (`terminal_safe`)."""
    text = terminal_safe(text)
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        typer.echo(text, err=True)
    else:
        typer.secho(text, fg=typer.colors.RED, err=True)


def _fail(message: str) -> None:
    """Exit 2 with `message` as one `error:` line. A rank of `--nproc` training hands it to its
    launcher instead, which prints it once for all ranks (recnas.rank_errors)."""
    if not report_error(message):
        _error_line(f"error: {message}")
    sys.exit(2)


def _out_of_memory(exc: BaseException) -> bool:
    """Python's MemoryError, CUDA's OutOfMemoryError (a RuntimeError), or PyTorch's CPU
    allocator failing ("can't allocate memory", also a RuntimeError): a resource limit the user
    can act on, reported in one line instead of a traceback (exit 1: not a usage error)."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(exc)


def _usage_error(exc) -> str:
    """Click's message for a bad command line (an option's invalid value, a missing option, an
    unknown command), folded into one line, with where to find the right usage."""
    message = " ".join(exc.format_message().split())
    ctx = exc.ctx
    return f"{message} (see '{ctx.command_path} --help')" if ctx is not None else message


def _escape_unencodable(exc: UnicodeError) -> tuple[bytes | str, int]:
    """Encoding error handler of stdout: a path's undecodable bytes (held as lone surrogates)
    are written back as they were, as the C.UTF-8 locale's stdout does, anything else the
    stream's encoding cannot hold as a backslash escape, as Python writes it on stderr."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    char = exc.object[exc.start]  # one at a time: the encoder comes back for the rest
    if 0xDC80 <= ord(char) <= 0xDCFF:
        return bytes([ord(char) - 0xDC00]), exc.start + 1
    return char.encode("ascii", "backslashreplace").decode("ascii"), exc.start + 1


codecs.register_error("recnas.escape", _escape_unencodable)


def _stdout_writes_anything() -> None:
    """A path, field or model name stdout's encoding cannot hold (`PYTHONIOENCODING=ascii`, a
    Latin-1 locale; a folder name that is not UTF-8 under a strict UTF-8 stdout, as
    en_US.UTF-8 gives) ended the command in a UnicodeEncodeError traceback, a search at its
    first line; it is escaped instead. On stderr, which Python escapes already, the error line
    named such a folder `x\\udce9y`, which no shell finds: its bytes are written as they were."""
    for stream, default in ((sys.stdout, "strict"), (sys.stderr, "backslashreplace")):
        if getattr(stream, "errors", None) == default and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="recnas.escape")
            except (ValueError, OSError):  # closed or detached: nothing to print to anyway
                pass


def main() -> None:
    """Entry point: user errors become one clear line and exit code 2, never a traceback.
    Typer runs outside click's standalone mode so that a bad command line reaches us as a
    click exception (instead of Typer's boxed usage panel); `--help` and `typer.Exit` come back
    as an exit code."""
    _stdout_writes_anything()
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except _NoArgsIsHelp as exc:  # `recnas`, `recnas data`: help, exit 2 as before
        if exc.format_message().strip():  # Typer's rich help has printed itself already
            exc.show()
        sys.exit(exc.exit_code)
    except _click_errors.UsageError as exc:  # BadParameter, MissingParameter, NoSuchOption, ...
        _fail(_usage_error(exc))
    except _click_errors.ClickException as exc:
        _error_line(f"error: {' '.join(exc.format_message().split())}")
        sys.exit(exc.exit_code)
    except typer.Abort:  # a RuntimeError in recent Typers: caught before those below
        typer.secho("Aborted!", err=True)
        sys.exit(1)
    except RecnasError as exc:
        _fail(str(exc))
    except OSError as exc:  # an output path under a file, a directory where a file goes, ...
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{exc.strerror or exc}")
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            if reported_by_another_rank():  # gloo's "Connection closed by peer": the launcher prints that rank's line
                sys.exit(1)
            raise
        first = (str(exc).strip().splitlines() or ["no details"])[0][:200]
        if not report_error(first, OUT_OF_MEMORY):  # under --nproc the launcher says it, once
            _error_line(f"error: out of memory ({first}); lower the batch size, the widths or the rows, or use a larger machine")
        sys.exit(1)
    except SystemExit as exc:  # Typer turns Ctrl-C (KeyboardInterrupt) into a silent exit 130
        if exc.code == 130:
            _interrupted()
        raise
    except BaseException as exc:
        if _interrupt_in_rust(exc):
            _interrupted()
        raise


def _interrupt_in_rust(exc: BaseException) -> bool:
    """Ctrl-C while a Rust library (polars) ran Python code of its own, e.g. numpy's import at
    its first `to_numpy`: pyo3 turns the KeyboardInterrupt into a panic, which reaches Python as
    its PanicException (a BaseException) naming it. It ended in a traceback and exit code 1."""
    return type(exc).__name__ == "PanicException" and "KeyboardInterrupt" in str(exc)
