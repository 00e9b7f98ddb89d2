"""The ``crackcascade`` command's argument parser: jsonargparse's parse errors as crackcascade's one line.

jsonargparse reports a bad option as a usage dump of up to sixty lines, in which the line a
user can act on (``Parser key "lr": Expected a <class 'float'>. Got value: abc``) sits nested
under the ``Union`` of every class the option could belong to. :class:`CrackcascadeParser`
raises an :class:`OptionError` instead, whose message names the option as it is typed
(``--model.lr``), says what it expected, and suggests the closest known option for an unknown
one; :func:`locate` then names the ``--config`` file that set the option, when the command line
did not.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pytorch_lightning.cli import LightningArgumentParser

from crackcascade.errors import ConfigError

SUBCOMMANDS = ("fit", "validate", "test", "predict", "synthesize", "convert", "export")
"""Every subcommand of ``crackcascade``: Lightning's four, then crackcascade's own."""

_LIGHTNING_SUBCOMMANDS = SUBCOMMANDS[:4]
_KEY = re.compile(r'^(\s*)(?:- )?Parser key "([^"]+)":\s*(.*)$')
_CLASS = re.compile(r"Problem with given class_path '([^']+)':")
_NOT_ACCEPTED = re.compile(r"(?:Option|Key) '([^']+)' is not accepted")
_EXPECTED = re.compile(r"Expected an? (.+?)(?:\. Got value: (.*))?$")
_NO_CLASS = re.compile(r"not accessible or invalid|dot import path")
_GIVEN = re.compile(r"^Given value: (.*)$")
_STRUCTURE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes: .*|Errors:|Given value type: .*"
    r"|Given value: .*|Problem with given class_path .*)$"
)
_BASE_CLASSES = {
    "pytorch_lightning.LightningModule": "model",
    "crackcascade.models.base.CrackcascadeModule": "model",
    "pytorch_lightning.LightningDataModule": "data",
}
_EXAMPLES = {"model": "crackcascade.MultiTaskClassifier", "data": "crackcascade.PhiNetDataModule"}
_CLASS_EXAMPLES = {
    "data": "crackcascade.CrackMaskDataModule",
    "trainer.callbacks": "pytorch_lightning.callbacks.ModelCheckpoint",
    "trainer.logger": "pytorch_lightning.loggers.CSVLogger",
}
_CLASS_MODULES = ("crackcascade", "pytorch_lightning.callbacks", "pytorch_lightning.loggers")
"""Modules whose classes a config names by short name, for "did you mean" on a misspelt class."""


class OptionError(ConfigError):
    """A command-line or config option that cannot be parsed.

    Args:
        message: The one line, ending with where to read more (``; see crackcascade fit --help``).
        key: The option as a config spells it (``model.lr``), or None when the error names none.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class CrackcascadeParser(LightningArgumentParser):
    """:class:`~pytorch_lightning.cli.LightningArgumentParser` whose errors are one-line :class:`OptionError`.

    jsonargparse's inner parsers (``exit_on_error=False``, used while it tries each type an option
    may have) keep raising its own errors, which it catches; only the error that would end the
    command becomes an :class:`OptionError`. ``--help`` and ``--print_config`` are untouched.
    """

    family: list[CrackcascadeParser]
    """Every parser of the command (the top level and each subcommand's), for suggestions; set by the CLI."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Raise an :class:`OptionError` naming the option and what to do."""
        if not self.exit_on_error:
            super().error(message, ex)
        line, key = explain(message, self.reads, self._known_keys)
        raise OptionError(line, key) from None

    @property
    def reads(self) -> str | None:
        """The subcommand this parser reads (``fit``), from its ``prog``; None at the top level."""
        last = self.prog.split()[-1] if self.prog.split() else ""
        return last if last in _LIGHTNING_SUBCOMMANDS else None

    def _known_keys(self, subcommand: str | None) -> list[str]:
        """Every option of ``subcommand``'s parser (``trainer.max_epochs``, ``ckpt_path``), for close matches."""
        parsers = [p for p in getattr(self, "family", [self]) if p.reads == subcommand] or [self]
        try:
            return [str(key) for key in parsers[0].get_defaults().keys()]  # noqa: SIM118 (a jsonargparse Namespace)
        except Exception:  # a suggestion only: a parser that cannot give its defaults gives none
            return []


def explain(
    message: str, subcommand: str | None, known_keys: Callable[[str | None], Iterable[str]] = lambda _: []
) -> tuple[str, str | None]:
    """Reduce a jsonargparse error message to one line that names the option as it is typed.

    Args:
        message: The message jsonargparse passes to ``ArgumentParser.error``.
        subcommand: The subcommand whose parser failed (``fit``), or None for the top level.
        known_keys: A function returning a subcommand's option keys, for "did you mean" suggestions.

    Returns:
        The line, ending with where to read more (``see crackcascade fit --help``), and the option
        it names as a config spells it (``model.lr``), or None.
    """
    text = message.strip()
    named = re.match(r"(?:the following arguments are required: (\w+)\.|Subcommand '(\w+)')", text)
    if subcommand is None and named and (named.group(1) or named.group(2)) in _LIGHTNING_SUBCOMMANDS:
        subcommand = named.group(1) or named.group(2)  # the top-level parser raises these for the subcommand
    see = f"see crackcascade {subcommand} --help" if subcommand else "see crackcascade --help"
    if text.startswith("unrecognized arguments:"):
        tokens = text.split(":", 1)[1].split()
        option = next((t for t in tokens if t.startswith("-")), None)
        if option is None:
            return f"unexpected argument {tokens[0]!r} (options start with --); {see}", None
        key = option.lstrip("-").split("=", 1)[0]
        return f"unknown option --{key}{_did_you_mean(key, known_keys(subcommand))}; {see}", key
    found = re.match(r"Subcommand '\w+' does not accept option '([^']+)'", text)
    if found:  # a key of a --config file
        key = _option(found.group(1))
        return f"unknown option {key}{_did_you_mean(key, known_keys(subcommand), prefix='')}; {see}", key
    found = re.match(r"argument subcommand: invalid choice: '([^']*)'", text)
    if found:
        suggestion = _did_you_mean(found.group(1), SUBCOMMANDS, prefix="")
        choices = ", ".join(SUBCOMMANDS)
        return f"unknown subcommand {found.group(1)!r}{suggestion}; choose one of {choices}; {see}", None
    found = re.match(r"the following arguments are required: (.*)$", text)
    if found:
        key = _option(found.group(1).split(",")[0].strip())
        example = _EXAMPLES.get(key, "")
        what = f"give --{key} {example} or " if example else f"give --{key} or "
        return f"--{key} is required: {what}a --config file that sets it; {see}", key
    found = re.match(r"Problems parsing config: (.*)", text, re.DOTALL)
    if found:
        return f"--config: not valid YAML ({_yaml_problem(found.group(1))}); fix the file", "config"
    return _explain_key_error(text, subcommand, see)


def _explain_key_error(text: str, subcommand: str | None, see: str) -> tuple[str, str | None]:
    """Explain the nested ``Parser key "...":`` form: the innermost option and what it expected."""
    lines = text.splitlines()
    keys: list[tuple[int, str]] = []  # (indent, key part): the path to the innermost failing option
    class_path: str | None = None
    details: list[str] = []  # what went wrong with the innermost option (deeper than its key line)
    given: str | None = None
    for line in lines:
        found = _KEY.match(line)
        if found:
            indent = len(found.group(1))
            keys = [(i, k) for i, k in keys if i < indent] + [(indent, found.group(2))]
            details = [found.group(3)] if found.group(3) else []
            continue
        stripped = line.strip().removeprefix("- ").strip()
        klass = _CLASS.search(stripped)
        if klass:
            class_path = klass.group(1)
            continue
        value = _GIVEN.match(stripped)
        if value and given is None:
            given = value.group(1)
        deeper = not keys or len(line) - len(line.lstrip()) > keys[-1][0]
        if stripped and deeper and not _STRUCTURE.match(stripped):
            details.append(stripped)
    key = _option(".".join(k for _, k in keys)) if keys else None
    if not details:
        return (f"--{key}: invalid value; {see}" if key else f"{lines[0] if lines else text}; {see}"), key
    unknown = _NOT_ACCEPTED.search(details[0])
    if unknown:
        return _unknown_nested(key, unknown.group(1), class_path, subcommand, see)
    expected = [m for m in (_EXPECTED.match(d) for d in details) if m]
    got = next((m.group(2) for m in expected if m.group(2) is not None), None)
    got = got if got is not None else _plain_value(given)
    if any(_NO_CLASS.search(d) for d in details):
        suggestion = _did_you_mean(str(got), _class_names(), prefix="")
        example = _CLASS_EXAMPLES.get(str(key), "crackcascade.CrackSegmenter")
        detail = f"no class {got!r}{suggestion}; give a class name or import path such as {example}"
    elif expected:
        what = " or ".join(dict.fromkeys(_type_name(m.group(1)) for m in expected))
        detail = f"expected {what}" + (f", got {got!r}" if got is not None else "")
    else:
        detail = details[0][0].lower() + details[0][1:]
    if key == "config":
        return f"--config: {detail}", key
    return (f"--{key}: {detail}; {see}" if key else f"{detail}; {see}"), key


def _unknown_nested(
    key: str | None, name: str, class_path: str | None, subcommand: str | None, see: str
) -> tuple[str, str]:
    """An option that the class named by ``--model`` / ``--data`` (or the config) does not take."""
    group = key or "model"
    option = f"{group}.{name}"
    if class_path in _BASE_CLASSES:
        example = _EXAMPLES[_BASE_CLASSES[class_path]]
        return (
            f"--{option}: no {group} class given to take it; give --{group} <class> first "
            f"(e.g. --{group} {example}) or a --config that sets {group}; {see}"
        ), option
    known = [f"{group}.{p}" for p in _parameters(class_path)]
    suggestion = _did_you_mean(option, known)
    if class_path and subcommand:
        see = f"see crackcascade {subcommand} --{group}.help {class_path}"
    return f"unknown option --{option}{suggestion}; {see}", option


def _parameters(class_path: str | None) -> list[str]:
    """The ``__init__`` parameters of the class at ``class_path`` (empty if it cannot be imported)."""
    if not class_path or "." not in class_path:
        return []
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    except Exception:  # a suggestion only
        return []


def _class_names() -> list[str]:
    """Short names of the classes a config may name (crackcascade's, Lightning's callbacks and loggers)."""
    names: list[str] = []
    for module in _CLASS_MODULES:
        names += [n for n in getattr(importlib.import_module(module), "__all__", []) if n[:1].isupper()]
    return names


def _did_you_mean(key: str, known: Iterable[str], prefix: str = "--") -> str:
    """`` (did you mean --trainer.max_epochs?)`` for the closest known key, or nothing.

    Keys of the same group (``trainer.``) are compared by their last part, so the group's shared
    prefix does not make every one of them look close.
    """
    group, _, leaf = key.rpartition(".")
    options = [_option(k) for k in known]
    siblings = {k.rpartition(".")[2]: k for k in options if k.rpartition(".")[0] == group}
    if siblings:
        close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
        found = siblings[close[0]] if close else None
    else:
        found = next(iter(difflib.get_close_matches(key, options, n=1, cutoff=0.6)), None)
    return f" (did you mean {prefix}{found}?)" if found else ""


def _option(key: str) -> str:
    """A parser key as a user types it: no subcommand prefix, no ``init_args`` / ``dict_kwargs``."""
    parts = [p for p in key.split(".") if p not in ("init_args", "dict_kwargs")]
    if len(parts) > 1 and parts[0] in _LIGHTNING_SUBCOMMANDS:
        parts = parts[1:]
    return ".".join(parts)


def _type_name(text: str) -> str:
    """``<class 'float'>`` -> ``a number``; ``typing.Literal['sgd', 'adam']`` -> ``one of sgd, adam``."""
    text = text.strip()
    literal = re.fullmatch(r"(?:typing\.)?Literal\[(.*)\]", text)
    if literal:
        return "one of " + ", ".join(v.strip().strip("'\"") for v in literal.group(1).split(","))
    found = re.fullmatch(r"<class '([^']+)'>", text)
    name = found.group(1).rsplit(".", 1)[-1] if found else text
    names = {"NoneType": "null", "bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}
    return names.get(name, f"a {name}")


def _plain_value(given: str | None) -> str | None:
    """The value from ``Given value: NestedArg(key='lr', val='abc')`` or ``Given value: abc``."""
    if given is None:
        return None
    nested = re.fullmatch(r"NestedArg\(key='[^']*', val='(.*)'\)", given)
    return nested.group(1) if nested else given


def _yaml_problem(text: str) -> str:
    """The first line of PyYAML's message as jsonargparse passes it on, with its position."""
    lines = [p.strip() for p in text.splitlines() if p.strip()]
    where = re.search(r"line \d+, column \d+", lines[1]) if len(lines) > 1 else None
    return f"{lines[0]} at {where.group(0)}" if where else (lines[0] if lines else text)


def _yaml_error(err: yaml.YAMLError) -> str:
    """``while parsing a flow sequence at line 2, column 15: expected ',' or ']' ... at line 3, column 1``."""
    if not isinstance(err, yaml.MarkedYAMLError):
        return str(err).splitlines()[0]
    parts = []
    for text, mark in ((err.context, err.context_mark), (err.problem, err.problem_mark)):
        if text:
            parts.append(f"{text} at line {mark.line + 1}, column {mark.column + 1}" if mark else text)
    return ": ".join(parts)


# ---- which --config file set an option --------------------------------------------------------------


def config_files(argv: Sequence[str]) -> list[Path]:
    """The ``--config`` / ``-c`` files of a command line, in order (later ones override earlier ones)."""
    files: list[Path] = []
    items = iter(argv)
    for item in items:
        if item in ("--config", "-c"):
            value = next(items, None)
            if value is not None:
                files.append(Path(value))
        elif item.startswith("--config="):
            files.append(Path(item.partition("=")[2]))
    return files


def locate(err: OptionError, argv: Sequence[str]) -> OptionError:
    """``err`` naming the ``--config`` file that set its option, when the command line did not set it.

    A bad YAML file is named too: jsonargparse's message only says where in the file it is.
    """
    files = [f for f in config_files(argv) if f.is_file()]
    if err.key == "config":
        for path in files:
            try:
                yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as problem:
                detail = _yaml_error(problem)
                return OptionError(f"--config '{path}': not valid YAML ({detail}); fix the file", err.key)
            except (OSError, UnicodeDecodeError):
                continue
        return err
    typed = re.compile(rf"--{re.escape(err.key or '')}(\+?=.*)?")
    if err.key is None or any(typed.fullmatch(a) for a in argv):
        return err
    for path in reversed(files):
        if _sets(path, err.key):
            # As the file spells it: model.lr, not --model.lr.
            message = str(err).replace(f"--{err.key}", err.key, 1).replace("(did you mean --", "(did you mean ")
            return OptionError(message.replace(err.key, f"{err.key} in --config '{path}'", 1), err.key)
    return err


def _sets(path: Path, key: str) -> bool:
    """Whether the YAML config at ``path`` sets ``key`` (``model.lr`` is also ``model.init_args.lr``)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    roots = [data] + [data[s] for s in _LIGHTNING_SUBCOMMANDS if isinstance(data, dict) and s in data]
    for root in roots:
        node: Any = root
        for part in key.split("."):
            if isinstance(node, dict) and part not in node and isinstance(node.get("init_args"), dict):
                node = node["init_args"]
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return True
    return False
