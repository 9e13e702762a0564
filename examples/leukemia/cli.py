"""What the example's scripts share on the command line: argument types, the help format, a clean exit.

- :func:`whole_number`, :func:`positive_float`, :func:`probability`, :func:`device`,
  :func:`output_file`, :func:`output_folder`: ``argparse`` types that refuse a bad value when the
  command line is parsed, before any model or image is read;
- :class:`HelpFormatter`: ``--help`` shows each flag's default once, and not where it says nothing
  (``None``, the ``False``/``True`` of an on/off switch);
- :func:`exits_cleanly`: the decorator of every script's ``main``: a user error (a bad flag value,
  a missing file, a damaged checkpoint, labels outside the taxonomy) ends the script with
  ``error: <message>`` on stderr and exit status 2, without a traceback. Set ``HIERCLS_DEBUG=1`` to
  get the exception with its full traceback instead. While ``main`` runs, a data warning (skipped
  files, empty folders) prints as one ``warning: <message>`` line, without the source location.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import hiercls
from hiercls import TaxonomyError

__all__ = [
    "DEBUG_ENV",
    "USER_ERRORS",
    "ArgumentParser",
    "HelpFormatter",
    "exits_cleanly",
    "number_in",
    "output_file",
    "output_folder",
    "positive_float",
    "probability",
    "whole_number",
]

DEBUG_ENV = "HIERCLS_DEBUG"
USER_ERRORS: tuple[type[BaseException], ...] = (
    TaxonomyError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
)
"""What :func:`exits_cleanly` reports as ``error: <message>``; any other exception keeps its traceback.
(:class:`~examples.leukemia.checkpoint.CheckpointError` is a ``ValueError``: it is not named here, so this
module, which every script imports, does not import torch: ``aggregate`` reads only JSON.)"""

_OWN_CODE = (Path(__file__).resolve().parent, Path(hiercls.__file__).resolve().parent)

F = TypeVar("F", bound=Callable[..., Any])


# ------------------------------------------------------------------ argument types
def whole_number(minimum: int = 1, fix: str = "") -> Callable[[str], int]:
    """An ``argparse`` type: an int ``>= minimum``; ``fix`` ends the message (what to pass instead).

    Examples:
        >>> whole_number(1)("3")
        3
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected a whole number >= {minimum}, got {text!r}" + (f"; {fix}" if fix else "")
            )
        return value

    return parse


def positive_float(fix: str = "") -> Callable[[str], float]:
    """An ``argparse`` type: a finite float ``> 0``; ``fix`` ends the message.

    Examples:
        >>> positive_float()("2e-3")
        0.002
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}" + (f"; {fix}" if fix else ""))
        return value

    return parse


def number_in(
    low: float, high: float = float("inf"), *, high_open: bool = False, fix: str = ""
) -> Callable[[str], float]:
    """An ``argparse`` type: a finite float in ``[low, high]`` (``[low, high)`` with ``high_open``).

    Examples:
        >>> number_in(0.0)("0.05")
        0.05
        >>> number_in(0.0, 1.0, high_open=True)("0.1")
        0.1
    """
    upper = f"{high:g})" if high_open else f"{high:g}]"
    shown = f">= {low:g}" if high == float("inf") else f"in [{low:g}, {upper}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = None
        inside = (
            value is not None
            and math.isfinite(value)
            and low <= value
            and (value < high or (value == high and not high_open))
        )
        if not inside:
            raise argparse.ArgumentTypeError(f"expected a number {shown}, got {text!r}" + (f"; {fix}" if fix else ""))
        return value

    return parse


def probability(text: str) -> float:
    """An ``argparse`` type: a probability in ``(0, 1]`` (a decoding threshold).

    Examples:
        >>> probability("0.8")
        0.8
    """
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value <= 1:
        raise argparse.ArgumentTypeError(
            f"expected a probability in (0, 1], got {text!r}; e.g. 0.5 (higher: answers stop at coarser nodes "
            "more often)"
        )
    return value


def device(text: str) -> str:
    """An ``argparse`` type: a torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ...), as given.

    Checked when the command line is read: a misspelt device (``gpu``) or a GPU the machine lacks failed
    with a torch traceback, in ``predict`` and ``explain`` after every image had been read.

    Examples:
        >>> device("cpu")
        'cpu'
    """
    import torch

    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA device; use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    return text


def _check_writable_place(path: Path, text: str) -> None:
    """Refuse ``path`` when the nearest folder that exists above it is a file or cannot be written in."""
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {os.fspath(above)!r} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: cannot write in {os.fspath(above)!r} (no permission)")


def output_file(text: str) -> str:
    """An ``argparse`` type: a file to write (``-``: stdout), as given, ``~`` expanded.

    Checked when the command line is read, not after the work: it must not be a folder, and the nearest
    folder that exists above it must be one this user can write in (missing folders below it are made
    when the file is written). An existing file is replaced.

    Examples:
        >>> output_file("predictions.csv"), output_file("-")
        ('predictions.csv', '-')
    """
    if text == "-":
        return text
    if not text:
        raise argparse.ArgumentTypeError("expected a file name, got ''")
    text = os.path.expanduser(text)  # --out=~/p.csv: no shell expands a ~ after '='
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a folder; give a file name, e.g. {os.fspath(path / 'predictions.csv')!r}"
        )
    _check_writable_place(path, text)
    return text


def output_folder(text: str) -> str:
    """An ``argparse`` type: a folder to write into (made when missing), as given, ``~`` expanded.

    Checked when the command line is read: it must not be an existing file, and the nearest folder that
    exists (it, or one above it) must be one this user can write in.

    Examples:
        >>> output_folder("explain")
        'explain'
    """
    if not text:
        raise argparse.ArgumentTypeError("expected a folder name, got ''")
    text = os.path.expanduser(text)  # --out=~/explain: no shell expands a ~ after '='
    path = Path(text)
    if path.is_symlink() and not path.exists():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a link to {os.readlink(path)!r}, which does not exist; make that folder or give another"
        )
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder; give a folder to write into")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{text!r}: cannot write in it (no permission)")
    else:
        _check_writable_place(path, text)
    return text


# ------------------------------------------------------------------ help
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``ArgumentDefaultsHelpFormatter`` that adds ``(default: X)`` only where it tells something.

    Left out: when the help already names the default, when the default is ``None`` (the help says
    what happens), and for on/off switches (``--quiet``, ``--no-test``): their default is "off" /
    "not given", which ``(default: True)`` on a ``--no-...`` flag only confuses.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if "default" in text or action.default is None or switch:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """The scripts' parser: :class:`HelpFormatter`, and a bad flag reported in two lines, not after the
    whole usage block (30 lines for ``train``): the error, then where to read about every option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n(every option: {self.prog} --help)\n")


# ------------------------------------------------------------------ clean exit
def remove_listed_pngs(out: Path, names: Iterable[str]) -> list[Path]:
    """Remove the PNG files straight in ``out`` that ``names`` lists (file names; each once): what an earlier
    run of a command listed as its own figures, so that a rerun into the same folder leaves none of them
    beside a listing that no longer names them. Nothing else is touched.

    Returns:
        the files removed.

    Examples:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> for name in ("old.png", "mine.png", "notes.txt"):
        ...     _ = (out / name).write_bytes(b"x")
        >>> [p.name for p in remove_listed_pngs(out, ["old.png", "old.png", "notes.txt", "gone.png"])]
        ['old.png']
        >>> sorted(p.name for p in out.iterdir())
        ['mine.png', 'notes.txt']
    """
    removed = []
    for name in dict.fromkeys(names):
        file = out / name
        if name.endswith(".png") and file.is_file():
            file.unlink()
            removed.append(file)
    return removed


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def _raised_by_own_code(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is in this example or in hiercls.

    Their messages say what is wrong and what to do; an error from elsewhere (torch, timm, the
    standard library) is better read with its traceback, so the message then says how to get it.
    """
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    file = Path(tb.tb_frame.f_code.co_filename).resolve()
    return any(file.is_relative_to(root) for root in _OWN_CODE)


def exits_cleanly(main: F) -> F:
    """Decorate a script's ``main(argv)``: a user error (:data:`USER_ERRORS`) prints ``error: <message>``
    to stderr and exits with status 2, without a traceback; ``HIERCLS_DEBUG=1`` re-raises it instead.

    Only these types are caught, so any other exception (a genuine bug) keeps its traceback.
    """

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        default_format = warnings.formatwarning
        warnings.formatwarning = _format_warning  # data warnings as one 'warning: ...' line each
        global interrupt_hint
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:  # Ctrl-C: one line, not the traceback of wherever it landed
            if _debug():
                raise
            hint = interrupt_hint() if interrupt_hint is not None else None
            print("interrupted (Ctrl-C)" + (f": {hint}" if hint else ""), file=sys.stderr)
            sys.stderr.flush()
            raise SystemExit(130) from None
        except USER_ERRORS as err:
            if _debug():
                raise
            print(f"error: {err}", file=sys.stderr)
            if not _raised_by_own_code(err):
                print(f"(set {DEBUG_ENV}=1 to see where it came from: the full traceback)", file=sys.stderr)
            sys.stderr.flush()
            raise SystemExit(2) from None
        finally:
            warnings.formatwarning = default_format
            interrupt_hint = None

    return wrapper  # type: ignore[return-value]


#: set by a command once it has something to say on Ctrl-C (train: how to resume); read by exits_cleanly
interrupt_hint: Callable[[], str | None] | None = None


def _format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """A :class:`~examples.leukemia.data.DataWarning` (skipped files, empty folders) is for the user, not a
    developer: ``warning: <message>`` without the file, line number and source line; others as usual."""
    from examples.leukemia.data import DataWarning

    if issubclass(category, DataWarning):
        return f"warning: {message}\n"
    return _DEFAULT_FORMAT(message, category, filename, lineno, line)


_DEFAULT_FORMAT = warnings.formatwarning
