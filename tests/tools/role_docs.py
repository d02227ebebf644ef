"""Role README variable tables, generated from meta/argument_specs.yml.

    python tests/tools/role_docs.py            # rewrite every role README's table
    python tests/tools/role_docs.py --check    # exit 1 if any table is stale

The table sits between `<!-- BEGIN VARIABLES -->` and `<!-- END VARIABLES -->` in roles/<role>/README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- BEGIN VARIABLES -->", "<!-- END VARIABLES -->"


def specs(role: Path) -> dict:
    data = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    return data["argument_specs"]["main"].get("options") or {}


def table(role: Path) -> str:
    rows = ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
    for name, spec in specs(role).items():
        default = (
            json.dumps(spec.get("default"))
            if "default" in spec
            else "(required)"
            if spec.get("required")
            else "(unset)"
        )
        description = spec.get("description", "")
        if isinstance(description, list):
            description = " ".join(description)
        choices = f" One of: {', '.join(map(str, spec['choices']))}." if spec.get("choices") else ""
        rows.append(f"| `{name}` | {spec.get('type', 'str')} | `{default}` | {description}{choices} |")
    return "\n".join(rows)


def rendered_readme(role: Path) -> str:
    text = (role / "README.md").read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{role / 'README.md'}: add {BEGIN} and {END} where the variables table goes")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table(role)}\n{END}{tail}"


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for role in sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file()):
        want = rendered_readme(role)
        if (role / "README.md").read_text(encoding="utf-8") != want:
            stale.append(role.name)
            if not check:
                (role / "README.md").write_text(want, encoding="utf-8")
    if check and stale:
        print(f"stale README variable tables: {', '.join(stale)} (run python tests/tools/role_docs.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
