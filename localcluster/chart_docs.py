"""Regenerate the values table of charts/vibecraft/README.md from the `# --` comments in values.yaml."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "vibecraft"
BEGIN, END = "<!-- values:begin -->", "<!-- values:end -->"


def rows() -> list[tuple[str, str, str]]:
    lines = (CHART / "values.yaml").read_text().splitlines()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    out: list[tuple[str, str, str]] = []
    path: list[str] = []
    doc: list[str] = []
    for line in lines:
        if m := re.match(r"^(\s*)# -- (.*)", line):
            doc = [m.group(2)]
            continue
        if doc and (m := re.match(r"^(\s*)#\s?(.*)", line)) and not re.match(r"^\s*#\s+-", line):
            doc.append(m.group(2))
            continue
        if m := re.match(r"^(\s*)([A-Za-z][\w]*):", line):
            depth = len(m.group(1)) // 2
            path = [*path[:depth], m.group(2)]
            if doc:
                val = values
                for p in path:
                    val = val[p]
                out.append((".".join(path), yaml.safe_dump(val, default_flow_style=True).strip().removesuffix("..."
                            ).strip(), " ".join(doc)))
            doc = []
    return out


def table() -> str:
    body = "\n".join(f"| `{k}` | `{v}` | {d} |" for k, v, d in rows())
    return f"{BEGIN}\n| key | default | description |\n|---|---|---|\n{body}\n{END}"


def main() -> int:
    readme = CHART / "README.md"
    text = readme.read_text()
    new = re.sub(re.escape(BEGIN) + ".*" + re.escape(END), table(), text, flags=re.S)
    if "--check" in sys.argv:
        return 0 if new == text else 1
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
