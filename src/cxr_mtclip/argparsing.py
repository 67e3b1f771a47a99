"""The command-line parsers' shared behaviour: defaults shown once, one-line errors, close-match suggestions.

`CliParser` is an `argparse.ArgumentParser` that every entry point uses (the `cxr-mtclip` subcommands,
`evaluate`'s flags, and, mixed into `HfArgumentParser`, the training flags):

- ``--help`` shows each flag's default once, after its help text (``(default: 5)``), and nothing for a help text
  that already names its default, a flag without one, or an on/off switch;
- a usage error is one line, ``<prog>: error: <what> (see <prog> --help)``, exit code 2;
- a misspelt flag is named with its closest match: ``--k`` -> ``did you mean -k?``, ``--modle`` -> ``did you mean
  --model?``, also when argparse would otherwise only report a required flag as missing.

Imports only the standard library: it is loaded by ``cxr-mtclip --help``, which must answer at once.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

__all__ = ["CliParser", "DefaultsOnceFormatter", "SuggestingParserMixin", "misspelt_flags"]

EXIT_USAGE = 2
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
_NO_DEFAULT_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
                       argparse._HelpAction, argparse._VersionAction, argparse._CountAction,
                       argparse._SubParsersAction)


class DefaultsOnceFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to a flag's help unless the text already says its default or there is none.

    transformers' `HfArgumentParser` uses argparse's `ArgumentDefaultsHelpFormatter`, which appends the default
    to every flag, so help texts that state their default read ``(default: config, 0.69). (default: None)``.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 32, width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position, width)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or "%(default)" in text:
            return text
        if isinstance(action, _NO_DEFAULT_ACTIONS) or action.default in (None, argparse.SUPPRESS, "", [], ()):
            return text
        if action.nargs == "?" and action.const is True and action.default is False:  # HfArgumentParser's bools
            return text
        default = action.default
        if hasattr(default, "value") and not isinstance(default, (int, float, str)):  # an Enum member
            default = default.value
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})".strip()


def _normalise(flag: str) -> str:
    return flag.lstrip("-").replace("_", "-").lower()


def _edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours cost 1."""
    rows = [list(range(len(b) + 1))] + [[i] + [0] * len(b) for i in range(1, len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
    return rows[-1][-1]


def _closest(flag: str, by_key: dict[str, str], preferred: set[str]) -> str | None:
    key = _normalise(flag)
    if key in by_key:
        return by_key[key]
    scored = []
    for other, known in by_key.items():
        distance = _edit_distance(key, other)
        if distance <= max(1, len(key) // 3):
            # ties: a required flag not given yet, then the same length (a swap), then difflib's similarity
            scored.append((distance, known not in preferred, abs(len(other) - len(key)),
                           -difflib.SequenceMatcher(None, key, other).ratio(), known))
    if scored:
        return min(scored)[-1]
    longer = [known for other, known in by_key.items() if len(key) > 2 and other.startswith(key)]
    if len(longer) == 1:  # a prefix of one flag (abbreviations are not accepted): that flag
        return longer[0]
    close = difflib.get_close_matches(key, list(by_key), n=1, cutoff=0.75)
    return by_key[close[0]] if close else None


def misspelt_flags(known: Iterable[str], argv: Sequence[str], *, allow_abbrev: bool = True,
                   preferred: Iterable[str] = ()) -> list[tuple[str, str | None]]:
    """The flags in `argv` that are not in `known`, each with its closest known flag (or None).

    A flag matches a known one equal to it with dashes and underscores ignored (``--k`` -> ``-k``,
    ``--batch_size`` -> ``--batch-size``), else the one fewest edits away (a swap of neighbours is one edit;
    ``--modle`` -> ``--model``), ties going to a `preferred` flag (one that is required and missing). Unique
    prefixes of a long flag are known when `allow_abbrev` (argparse accepts them). Values after ``--`` are skipped.

    Example:
        >>> misspelt_flags(["--model", "--mode", "-k"], ["--modle", "x", "--k", "3"], preferred=["--model"])
        [('--modle', '--model'), ('--k', '-k')]
    """
    known = [flag for flag in known if flag.startswith("-")]
    # --help is never the flag someone meant to give a value to (`--k 5` is not `-h`)
    candidates = [flag for flag in known if flag not in ("-h", "--help")]
    by_key: dict[str, str] = {}
    for flag in sorted(candidates, key=len):
        by_key.setdefault(_normalise(flag), flag)
    found = []
    for token in argv:
        if token == "--":
            break
        if not token.startswith("-") or token == "-" or _NEGATIVE_NUMBER.match(token):
            continue
        flag = token.split("=", 1)[0]
        if flag in known:
            continue
        if allow_abbrev and flag.startswith("--") and sum(k.startswith(flag) for k in known if k.startswith("--")) == 1:
            continue
        found.append((flag, _closest(flag, by_key, set(preferred))))
    return found


class SuggestingParserMixin:
    """argparse behaviour shared by `CliParser` and the training flags' `HfArgumentParser` (see module docstring)."""

    _argv: list[str]

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)  # type: ignore[misc]

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            # argparse reports a subcommand's unknown flags from the top parser: report them from the subcommand's
            self._subcommand_parser(parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _subcommand_parser(self, parsed: Any) -> Any:
        for action in getattr(self, "_actions", []):
            if isinstance(action, argparse._SubParsersAction):
                chosen = getattr(parsed, action.dest, None)
                if chosen in action.choices:
                    return action.choices[chosen]._subcommand_parser(parsed)
        return self

    def unknown_flags_message(self, argv: Sequence[str] | None = None) -> str | None:
        """'unrecognized argument --modle: did you mean --model?' for the misspelt flags of `argv`, or None."""
        argv = list(getattr(self, "_argv", []) if argv is None else argv)
        subcommands = [a for a in getattr(self, "_actions", []) if isinstance(a, argparse._SubParsersAction)]
        if subcommands:  # the flags after a subcommand name are the subcommand's to judge
            names = set(subcommands[0].choices)
            argv = argv[: next((i for i, token in enumerate(argv) if token in names), len(argv))]
        given = {token.split("=", 1)[0] for token in argv}
        missing = {flag for action in getattr(self, "_actions", []) if action.required
                   and not given & set(action.option_strings) for flag in action.option_strings}
        wrong = misspelt_flags(self._option_string_actions, argv,  # type: ignore[attr-defined]
                               allow_abbrev=getattr(self, "allow_abbrev", True), preferred=missing)
        if not wrong:
            return None
        parts = [f"{flag}: did you mean {match}?" if match else flag for flag, match in wrong]
        return "unrecognized argument" + ("s " if len(wrong) > 1 else " ") + "; ".join(parts)

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        # a misspelt flag is named first: it is also why a value lands in a positional ("argument source: 8: no
        # such file", for `build-dataset --phantom 8`) or a required flag seems missing
        if message.startswith(("the following arguments are required", "unrecognized arguments", "argument ")):
            message = self.unknown_flags_message() or message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")  # type: ignore[attr-defined]


class CliParser(SuggestingParserMixin, argparse.ArgumentParser):
    """`argparse.ArgumentParser` with defaults shown once, one-line errors and flag suggestions.

    Example:
        >>> parser = CliParser(prog="cxr-mtclip search")
        >>> _ = parser.add_argument("-k", type=int, default=5, help="results per query")
        >>> "(default: 5)" in parser.format_help()
        True
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsOnceFormatter)
        kwargs.setdefault("allow_abbrev", False)  # `--phantom 100` is a misspelling to name, not a silent prefix
        super().__init__(*args, **kwargs)
