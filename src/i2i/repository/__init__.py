"""Contract 2: the model repository, where export writes and serving reads.

The layout follows Triton's model repository::

    <repository>/<name>/<version>/manifest.json
                                 A2B.onnx, A2B.fp16.onnx, A2B.<gpu>.plan, ...
                                 A2B.style.onnx, A2B.style.fp16.onnx   (multimodal only)

Versions are positive integers (folders "1", "2", ...). The manifest, whose JSON Schema
ships as `i2i/schemas/manifest.schema.json`, is the only file a server reads to know a
model: family, domains, directions, artifacts, their parity.

Multimodal directions have a ``style`` input (float32 [N, S]) and, optionally, a
``style_encoder`` ({"input", "output", "shape_rule"}: uint8 images of the target domain ->
float32 [N, S]) whose files are artifacts with ``"graph": "style_encoder"``. An artifact
without ``graph`` holds the direction's translator, so manifests written before style
encoders existed stay valid and mean what they meant (`artifact_graph`,
`translator_artifacts`, `style_encoder_artifacts` read them).

Multi-domain models (directions ``to_<domain>``) record each direction's ``target_domain``
and ``domain_index`` (its place in ``domains``) and, optionally, the whole ``conditional``
graph ({"input", "domain", "output", "shape_rule"}: uint8 images and int64 target indices
[N] -> uint8 images), whose files are artifacts with ``"graph": "conditional"`` and no
direction (`conditional_artifacts`). A family's extra graphs (the two-step model's
``encoder`` and ``generator``) are described in ``graphs`` ({name: {"inputs", "outputs"}})
and held by artifacts with ``"graph": <name>`` and no direction; servers ignore them. All
of these are optional, so older manifests stay valid.

Publication is atomic: `write_version` builds a version in a hidden temporary folder inside
`<repository>/<name>/` and renames it into place only once its manifest is valid and every
artifact is on disk, so readers never see a half-written version. Hidden entries (`.tmp-*`,
`.old-*`, `.lock`) are never versions; the next writer cleans up what a killed one left.
Writers of one model are serialised by `fcntl.flock` on `<repository>/<name>/.lock` (POSIX);
readers take no lock. `add_artifacts` adds files made later (TensorRT engines built on the
serving GPU) to a published version under the same lock: readers see its old manifest or
its new one.

A contract module: imports only the standard library and jsonschema.

The package's modules: `layout` (names and version folders), `schema` (the manifest's
schema and cross-checks), `storage` (reading and writing versions), `locking` (the writer
lock, publication and clean-up), `engines` (what a TensorRT plan is tied to). Shape rules
are in `i2i.shapes`. How a repository is shown to a person is the CLI's business
(`i2i.cli.models`).
"""

from i2i._files import sha256_file
from i2i.repository.engines import engine_differences, gpu_slug
from i2i.repository.layout import (
    LOCK,
    MANIFEST,
    RepositoryError,
    list_models,
    next_version,
    version_folder,
    versions,
)
from i2i.repository.schema import (
    CONDITIONAL,
    FORMAT,
    FORMAT_VERSION,
    RESERVED_GRAPHS,
    STYLE_ENCODER,
    TRANSLATOR,
    artifact_graph,
    conditional_artifacts,
    load_schema,
    style_encoder_artifacts,
    translator_artifacts,
    validate_manifest,
)
from i2i.repository.storage import add_artifacts, read_manifest, write_version

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LOCK",
    "MANIFEST",
    "RepositoryError",
    "STYLE_ENCODER",
    "TRANSLATOR",
    "add_artifacts",
    "CONDITIONAL",
    "RESERVED_GRAPHS",
    "artifact_graph",
    "conditional_artifacts",
    "engine_differences",
    "gpu_slug",
    "list_models",
    "load_schema",
    "next_version",
    "read_manifest",
    "sha256_file",
    "style_encoder_artifacts",
    "translator_artifacts",
    "validate_manifest",
    "version_folder",
    "versions",
    "write_version",
]
