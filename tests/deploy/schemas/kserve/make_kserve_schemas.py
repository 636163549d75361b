"""Write the KServe CRD schemas the offline tests validate against (tests/deploy/test_kserve_manifests.py).

    python tests/deploy/schemas/kserve/make_kserve_schemas.py KSERVE_CHECKOUT COMMIT

KSERVE_CHECKOUT is a checkout of kserve/kserve at COMMIT (the v0.20.0 tag:
1fb781055dd1567164358233e1125142ca6ef1fe), Apache-2.0 (LICENSE-kserve beside this script).
It reads ``config/crd/full/serving.kserve.io_{servingruntimes,clusterservingruntimes,
inferenceservices}.yaml`` and writes, beside this script, each CRD's served version's
``openAPIV3Schema`` as JSON with:

- the ``description`` strings removed (size), for all three;
- for the InferenceService (1.9 MB of YAML), only what i2i's manifests use: ``spec.predictor``
  without the framework-specific predictors (``sklearn``, ``onnx``, ``triton``, ...) and
  without ``workerSpec`` (multi-node); ``spec.transformer``, ``spec.explainer``,
  ``spec.canary`` and the properties of ``status`` are dropped too.

Dropping properties only makes the schema stricter once the tests refuse unknown fields: a
manifest valid against the trimmed schema is valid against KServe's (nothing dropped is
``required``; the script checks). Nothing else is changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
CRDS = {
    "servingruntimes": "servingruntime-v1alpha1.schema.json",
    "clusterservingruntimes": "clusterservingruntime-v1alpha1.schema.json",
    "inferenceservices": "inferenceservice-v1beta1.schema.json",
}
# Alternatives to spec.predictor.model (each a whole container schema) and multi-node.
PREDICTOR_DROPPED = (
    "huggingface", "lightgbm", "onnx", "paddle", "pmml", "pytorch", "sklearn", "tensorflow",
    "triton", "xgboost", "workerSpec",
)  # fmt: skip
SPEC_DROPPED = ("canary", "explainer", "transformer")


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


def drop(schema: dict[str, Any], names: tuple[str, ...]) -> None:
    """Remove these properties; none may be required (that would loosen, not tighten)."""
    required = set(schema.get("required", []))
    assert not required & set(names), f"cannot drop required properties {required & set(names)}"
    for name in names:
        del schema["properties"][name]


def trim_inference_service(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]
    drop(spec, SPEC_DROPPED)
    drop(spec["properties"]["predictor"], PREDICTOR_DROPPED)
    status = schema["properties"]["status"]
    assert status.get("x-kubernetes-preserve-unknown-fields"), "status must keep unknown fields"
    schema["properties"]["status"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }


def main() -> None:
    checkout, commit = Path(sys.argv[1]), sys.argv[2]
    for plural, out in CRDS.items():
        path = checkout / "config" / "crd" / "full" / f"serving.kserve.io_{plural}.yaml"
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        (version,) = [v for v in crd["spec"]["versions"] if v.get("served")]
        schema = strip_descriptions(version["schema"]["openAPIV3Schema"])
        note = "descriptions removed"
        if plural == "inferenceservices":
            trim_inference_service(schema)
            note += (
                "; only spec.predictor, without " + ", ".join(PREDICTOR_DROPPED) + "; no "
                + ", ".join(f"spec.{name}" for name in SPEC_DROPPED) + "; status unchecked"
            )  # fmt: skip
        schema["$comment"] = (
            f"kserve/kserve config/crd/full/serving.kserve.io_{plural}.yaml, "
            f"{crd['spec']['group']}/{version['name']} {crd['spec']['names']['kind']}, "
            f"at {commit} (v0.20.0, Apache-2.0): {note}"
        )
        with open(HERE / out, "w", encoding="utf-8") as stream:
            json.dump(schema, stream, indent=1, sort_keys=True)
            stream.write("\n")


if __name__ == "__main__":
    main()
