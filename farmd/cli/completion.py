"""`farmd completion bash|zsh|fish`: a shell completion script, generated from the
argument parser itself so that it cannot fall behind a new command or option.

Theory of operation
-------------------
`commands` walks the parser once into plain data: each command (a group such as
`config` as `config check`, words joined by a space) with its options, each option's
flags, whether it takes a value and, if it has them, its choices. A writer per shell
turns that data into a script: a command word first, then that command's options, and
the choices of an option that has them right after it. Nothing completes values the
supervisor knows (job ids, worker names): a completion script must not need a farm.
No dependency: the scripts are the shells' own plain mechanisms (bash `complete -F`,
zsh `compdef` with `compadd`, fish `complete -c`).
"""

from __future__ import annotations

import argparse

import attrs

SHELLS = ("bash", "zsh", "fish")


@attrs.frozen
class Option:
    flags: tuple[str, ...]
    takes_value: bool
    choices: tuple[str, ...]
    help: str


@attrs.frozen
class Command:
    words: tuple[str, ...]  # ("config", "check") for a command of a group
    help: str
    options: tuple[Option, ...]


def commands(parser: argparse.ArgumentParser) -> list[Command]:
    """Every command of `parser` (and of its groups), in the order `--help` lists them."""
    found: list[Command] = []
    _walk(parser, (), "", found)
    return found


def _walk(
    parser: argparse.ArgumentParser, words: tuple[str, ...], text: str, found: list[Command]
) -> None:
    options = []
    groups: list[tuple[str, argparse.ArgumentParser, str]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            groups.extend((name, sub, helps.get(name, "")) for name, sub in action.choices.items())
        elif action.option_strings:
            choices = tuple(str(c) for c in action.choices) if action.choices else ()
            options.append(
                Option(
                    flags=tuple(action.option_strings),
                    takes_value=action.nargs != 0,
                    choices=choices,
                    help=action.help or "",
                )
            )
    if words and not groups:
        found.append(Command(words, text, tuple(options)))
    for name, sub, help_text in groups:
        _walk(sub, (*words, name), help_text, found)


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell` (one of `SHELLS`)."""
    writer = {"bash": _bash, "zsh": _zsh, "fish": _fish}[shell]
    return writer(commands(parser), parser.prog)


def _first_line(text: str, width: int = 72) -> str:
    """A help text cut to fit a completion menu: its first clause, at most `width`."""
    text = " ".join(text.split()).replace("%%", "%")
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def _bash(found: list[Command], prog: str) -> str:
    first = " ".join(dict.fromkeys(c.words[0] for c in found))
    groups: dict[str, list[str]] = {}
    for c in found:
        if len(c.words) > 1:
            groups.setdefault(c.words[0], []).append(c.words[1])
    lines = [
        f'# bash completion for {prog}: eval "$({prog} completion bash)"',
        f"_{_ident(prog)}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    local cmd="" sub="" i word',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        word="${COMP_WORDS[i]}"',
        '        [[ "$word" == -* ]] && continue',
        '        if [[ -z "$cmd" ]]; then cmd="$word"; elif [[ -z "$sub" ]]; then sub="$word"; fi',
        "    done",
        '    if [[ -z "$cmd" ]]; then',
        f'        COMPREPLY=($(compgen -W "{first}" -- "$cur"))',
        "        return",
        "    fi",
        '    case "$cmd" in',
    ]
    for group, subs in groups.items():
        lines += [
            f"        {group})",
            '            if [[ -z "$sub" ]]; then',
            f'                COMPREPLY=($(compgen -W "{" ".join(subs)}" -- "$cur"))',
            "                return",
            "            fi",
            '            cmd="$cmd $sub" ;;',
        ]
    lines += ["    esac", '    local opts=""', '    case "$cmd" in']
    for c in found:
        flags = " ".join(f for o in c.options for f in o.flags)
        lines.append(f"        {_bash_word(' '.join(c.words))})")
        choices = [o for o in c.options if o.choices]
        # An option's free value (a path, a URL, a number) is not another option: leave
        # COMPREPLY empty so that `complete -o default` offers file names instead.
        free = [f for o in c.options if o.takes_value and not o.choices for f in o.flags]
        if choices or free:
            lines.append('            case "$prev" in')
            for o in choices:
                pattern = "|".join(o.flags)
                words = " ".join(o.choices)
                lines.append(
                    f'                {pattern}) COMPREPLY=($(compgen -W "{words}" -- "$cur")); '
                    "return ;;"
                )
            if free:
                lines.append(f"                {'|'.join(free)}) COMPREPLY=(); return ;;")
            lines.append("            esac")
        lines.append(f'            opts="{flags}" ;;')
    lines += [
        "    esac",
        '    COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
        "}",
        f"complete -o default -F _{_ident(prog)} {prog}",
        "",
    ]
    return "\n".join(lines)


def _bash_word(words: str) -> str:
    """A case pattern matching exactly `words` (quoted: a group's command has a space)."""
    return f'"{words}"'


def _ident(prog: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in prog)


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _zsh(found: list[Command], prog: str) -> str:
    name = _ident(prog)
    tops: dict[str, str] = {}
    for c in found:
        tops.setdefault(c.words[0], c.help if len(c.words) == 1 else "")
    described = " ".join(
        _zsh_quote(f"{word}:{_first_line(text)}".replace("\\", "")) for word, text in tops.items()
    )
    lines = [
        f"#compdef {prog}",
        f'# zsh completion for {prog}: eval "$({prog} completion zsh)" (after compinit)',
        f"_{name}() {{",
        "    local -a commands",
        f"    commands=({described})",
        "    if (( CURRENT == 2 )); then",
        "        _describe command commands",
        "        return",
        "    fi",
        "    local cmd=$words[2]",
        "    case $cmd in",
    ]
    groups = sorted({c.words[0] for c in found if len(c.words) > 1})
    for group in groups:
        subs = " ".join(c.words[1] for c in found if c.words[0] == group)
        lines.append(f"        {group})")
        lines.append(f"            if (( CURRENT == 3 )); then compadd -- {subs}; return; fi")
        lines.append('            cmd="$cmd $words[3]" ;;')
    lines += ["    esac", '    case "$words[CURRENT-1]" in']
    seen: set[tuple[str, ...]] = set()
    for c in found:
        for o in c.options:
            key = (*o.flags, *o.choices)
            if o.choices and key not in seen:
                seen.add(key)
                pattern = "|".join(o.flags)
                lines.append(f"        {pattern}) compadd -- {' '.join(o.choices)}; return ;;")
    lines += ["    esac", '    case "$cmd" in']
    for c in found:
        flags = " ".join(f for o in c.options for f in o.flags)
        lines.append(f"        {_zsh_quote(' '.join(c.words))}) compadd -- {flags} ;;")
    lines += ["    esac", "}", f"compdef _{name} {prog}", ""]
    return "\n".join(lines)


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(found: list[Command], prog: str) -> str:
    tops: dict[str, str] = {}
    for c in found:
        tops.setdefault(c.words[0], c.help if len(c.words) == 1 else "")
    names = " ".join(tops)
    lines = [
        f"# fish completion for {prog}: {prog} completion fish | source",
        f"complete -c {prog} -f",
    ]
    for word, text in tops.items():
        lines.append(
            f"complete -c {prog} -n 'not __fish_seen_subcommand_from {names}' -a {word} "
            f"-d {_fish_quote(_first_line(text))}"
        )
    for c in found:
        condition = f"__fish_seen_subcommand_from {c.words[0]}"
        if len(c.words) > 1:
            lines.append(
                f"complete -c {prog} -n {_fish_quote(condition)} -a {c.words[1]} "
                f"-d {_fish_quote(_first_line(c.help))}"
            )
            condition += f"; and __fish_seen_subcommand_from {c.words[1]}"
        for o in c.options:
            spec = " ".join(f"-l {f[2:]}" if f.startswith("--") else f"-s {f[1:]}" for f in o.flags)
            value = " -r" if o.takes_value else ""
            if o.choices:
                value += f" -a {_fish_quote(' '.join(o.choices))}"
            lines.append(
                f"complete -c {prog} -n {_fish_quote(condition)} {spec}{value} "
                f"-d {_fish_quote(_first_line(o.help))}"
            )
    lines.append("")
    return "\n".join(lines)
