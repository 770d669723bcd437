"""DIR/manifest.json: every artifact (sha256, bytes) and every input (versions, sha256s)."""

from __future__ import annotations

import json
import os

from .model import Artifact, Input


def render(artifacts: list[Artifact], inputs: list[Input], epoch: int, options: dict) -> str:
    return json.dumps({
        "schema": 1,
        "source_date_epoch": epoch,
        "options": options,
        "artifacts": [a.to_json() for a in artifacts],
        "inputs": [i.to_json() for i in inputs],
    }, indent=2, sort_keys=True) + "\n"


def write(out_dir: str, text: str) -> str:
    path = os.path.join(out_dir, "manifest.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
