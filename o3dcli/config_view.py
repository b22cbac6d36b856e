"""How `o3d presets show` and `o3d train` present a configuration: rows of key, value, type and
meaning; the compact form (YAML with a one-line comment per field, loadable as a preset); the
full form per key (after `kubectl explain`)."""

from __future__ import annotations

import dataclasses
import re
import textwrap

import yaml

from o3dcli.config import Config, ConfigError, _closest, _hints, field_docs, to_plain, type_name, valid_keys


def describe(cfg: Config) -> list[tuple[str, str, str, str]]:
    """(key, value, type, doc) rows for every leaf field, for `o3d presets show`."""
    rows = []

    def walk(obj, prefix):
        docs = field_docs(type(obj))
        hints = _hints(type(obj))
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                walk(v, f"{prefix}{f.name}.")
            else:
                rows.append((f"{prefix}{f.name}", value_text(v), type_name(hints[f.name]), docs.get(f.name, "")))

    walk(cfg, "")
    return rows


def value_text(value) -> str:
    """A field's value as one line of YAML (`[glb, obj]`, `''`, `0.5`)."""
    text = yaml.safe_dump(to_plain(value), default_flow_style=True, width=float("inf"))
    return text.strip().removesuffix("\n...").removesuffix("...").strip()


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(`])")


def first_sentence(doc: str) -> str:
    return _SENTENCE_END.split(doc.strip(), maxsplit=1)[0] if doc else ""


def clip(text: str, n: int) -> str:
    """`text` cut to `n` characters at a word boundary where one is near, marked with '...'."""
    if len(text) <= n:
        return text
    cut = text[: max(n - 3, 1)].rstrip()
    space = cut.rfind(" ")
    if space > n // 2:
        cut = cut[:space].rstrip(" ,;:")
    return cut + "..."


def compact_lines(cfg, width: int = 80, header: list[str] | tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """`o3d presets show`: the config as YAML, one field a line (long values wrapped in flow style),
    each with the first sentence of its meaning as a comment clipped to `width` (put on the line
    above when the value leaves no room). Lines are (code, comment) pairs; joined, they load with
    yaml.safe_load to `cfg.to_dict()`, so the text can be saved and edited as a preset. `header`:
    comment lines on top, each clipped to `width`."""
    width = max(int(width), 40)
    lines: list[tuple[str, str]] = [("", clip(f"# {h}", width)) for h in header]
    cap = max(24, width // 2)  # comments of a block line up after its keys up to this column

    def emit(run: list[tuple[list[str], str]]) -> None:
        col = max((len(code[0]) for code, _ in run if len(code) == 1 and len(code[0]) <= cap), default=0) + 2
        for code, doc in run:
            if doc and len(code) == 1:
                start = max(col, len(code[0]) + 2)
                room = width - start - 2
                if room >= min(20, len(doc)):
                    lines.append((code[0], " " * (start - len(code[0])) + "# " + clip(doc, room)))
                    continue
            if doc:
                indent = code[0][: len(code[0]) - len(code[0].lstrip())]
                lines.append(("", f"{indent}# {clip(doc, width - len(indent) - 2)}"))
            lines.extend((c, "") for c in code)

    def walk(obj, depth: int) -> None:
        docs, indent, run = field_docs(type(obj)), "  " * depth, []
        for f in dataclasses.fields(obj):
            v, doc = getattr(obj, f.name), first_sentence(docs.get(f.name, ""))
            if dataclasses.is_dataclass(v):
                emit(run)
                run = []
                if depth == 0 and lines:
                    lines.append(("", ""))
                head = f"{indent}{f.name}:"
                lines.append((head, "  # " + clip(doc, width - len(head) - 4)) if doc else (head, ""))
                walk(v, depth + 1)
            else:
                text = value_text(v)
                code = textwrap.wrap(f"{indent}{f.name}: {text}", width, subsequent_indent=f"{indent}    ",
                                     break_long_words=False, break_on_hyphens=False)
                if len(code) > 1 and yaml.safe_load("\n".join(c[len(indent):] for c in code)) != {f.name: to_plain(v)}:
                    code = [f"{indent}{f.name}: {text}"]  # a value whose spaces matter stays on one line
                run.append((code, doc))
        emit(run)

    walk(cfg, 0)
    return lines


def select_keys(names: list[str] | tuple[str, ...]) -> list[str]:
    """The config keys that `names` ask for: a key (`mesh.texture_format`) or a section (`mesh`),
    in the config's order; ConfigError naming the closest key for anything else."""
    keys = valid_keys()
    wanted: set[str] = set()
    for name in names:
        name = name.strip().rstrip(".")
        inside = [k for k in keys if k == name or k.startswith(name + ".")]
        if not inside:
            sections = list(dict.fromkeys(k.split(".", 1)[0] for k in keys))
            raise ConfigError(f"unknown key '{name}'{_closest(name, keys + sections)}")
        wanted.update(inside)
    return [k for k in keys if k in wanted]


def explain_lines(cfg, keys: list[str] | None = None, width: int = 80, preset_cfg=None) -> list[str]:
    """`o3d presets show --long` (or with keys): per key, its value, type, default and full meaning,
    wrapped to `width`; a whole section gets its own meaning as a heading (after `kubectl explain`).
    `preset_cfg`: the preset without the command's --set overrides, where there are some: a value
    they changed is said to be theirs."""
    width = max(int(width), 40)
    keys = valid_keys() if keys is None else keys
    wanted = set(keys)
    defaults = {k: v for k, v, _, _ in describe(Config())}
    own = {k: v for k, v, _, _ in describe(preset_cfg)} if preset_cfg is not None else {}
    section_docs = field_docs(type(cfg))
    whole = {k.split(".", 1)[0] for k in keys if all(o in wanted for o in valid_keys() if o.split(".", 1)[0] == k.split(".", 1)[0])}

    def wrap(text: str, indent: str = "", more: str = "    ") -> list[str]:
        return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=more,
                             break_long_words=False, break_on_hyphens=False) or [indent.rstrip()]

    out: list[str] = []
    section = None
    for key, value, tname, doc in describe(cfg):
        if key not in wanted:
            continue
        top = key.split(".", 1)[0]
        if top != section and top in whole:
            out += ([""] if out else []) + wrap(f"[{top}] {section_docs.get(top, '')}".rstrip(), more="  ")
        section = top
        out += ([""] if out else []) + wrap(f"{key}: {value}")
        default = defaults.get(key, value)
        preset_value = own.get(key, value)
        # a preset's own value differs from o3d's: say whose default is shown (train.p_mean: 0.0 in tiny)
        label = "default" if default == preset_value else "default without a preset"
        line = f"type: {tname}; {label}: {default}"
        if preset_value != value:  # --set's, not the preset's
            line += f"; set by --set ({'the preset has ' + str(preset_value) if preset_value != default else 'the preset keeps the default'})"
        out += wrap(line, "    ")
        out += wrap(doc, "    ") if doc else []
    return out
