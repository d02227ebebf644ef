"""Turn upstream CRD files into the schema files tests/fixtures/crds/ keeps (descriptions dropped).

    python tests/tools/vendor_crd_schemas.py OUT_DIR CRD.yaml...

Each CRD's openAPIV3Schema of its storage version is written to OUT_DIR/<plural>.schema.json with every
`description` removed (they are most of the bytes and do not change what validates). Nothing is
fetched here: give it the CRD files of the pinned release (see the README in OUT_DIR for where from).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def main(argv: list[str]) -> int:
    out, files = Path(argv[0]), [Path(a) for a in argv[1:]]
    for path in files:
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
        schema = {
            "group": crd["spec"]["group"],
            "version": version["name"],
            "kind": crd["spec"]["names"]["kind"],
            "scope": crd["spec"]["scope"],
            "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "openAPIV3Schema": strip(version["schema"]["openAPIV3Schema"]),
        }
        target = out / f"{crd['spec']['names']['plural']}.schema.json"
        target.write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
        print(f"{path} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
