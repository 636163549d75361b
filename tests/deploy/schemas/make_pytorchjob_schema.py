"""Write pytorchjob-v1.schema.json from the training-operator's PyTorchJob CRD (offline tests).

    python tests/deploy/schemas/make_pytorchjob_schema.py CRD_YAML COMMIT > \
        tests/deploy/schemas/pytorchjob-v1.schema.json

CRD_YAML is ``manifests/base/crds/kubeflow.org_pytorchjobs.yaml`` of kubeflow/training-operator
at COMMIT (the v1.9.0 tag: 6f74c7f6b2ed6c27aabd82d0a316b23f0646059c), Apache-2.0 (the
licence is LICENSE-kubeflow-training-operator beside this script). The output is the
``v1`` version's ``openAPIV3Schema`` with the descriptions removed (size) and nothing else
changed; tests/deploy/test_training_manifests.py adds the API server's strictness.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

SOURCE = "kubeflow/training-operator manifests/base/crds/kubeflow.org_pytorchjobs.yaml"


def strip_descriptions(node: Any) -> Any:
    """The schema without its ``description`` strings (a property named description stays)."""
    if isinstance(node, dict):
        return {
            key: (
                {name: strip_descriptions(sub) for name, sub in value.items()}
                if key == "properties"
                else strip_descriptions(value)
            )
            for key, value in node.items()
            if key != "description"
        }
    if isinstance(node, list):
        return [strip_descriptions(item) for item in node]
    return node


def main() -> None:
    crd_path, commit = Path(sys.argv[1]), sys.argv[2]
    crd = yaml.safe_load(crd_path.read_text(encoding="utf-8"))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strip_descriptions(version["schema"]["openAPIV3Schema"])
    schema["$comment"] = f"{SOURCE} at {commit} (Apache-2.0), descriptions removed"
    json.dump(schema, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
