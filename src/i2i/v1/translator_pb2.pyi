from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_PNG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_JPEG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_WEBP: _ClassVar[ImageFormat]
    IMAGE_FORMAT_RAW: _ClassVar[ImageFormat]

class SizePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIZE_POLICY_UNSPECIFIED: _ClassVar[SizePolicy]
    SIZE_POLICY_PAD: _ClassVar[SizePolicy]
    SIZE_POLICY_RESIZE: _ClassVar[SizePolicy]
    SIZE_POLICY_REJECT: _ClassVar[SizePolicy]
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat
IMAGE_FORMAT_JPEG: ImageFormat
IMAGE_FORMAT_WEBP: ImageFormat
IMAGE_FORMAT_RAW: ImageFormat
SIZE_POLICY_UNSPECIFIED: SizePolicy
SIZE_POLICY_PAD: SizePolicy
SIZE_POLICY_RESIZE: SizePolicy
SIZE_POLICY_REJECT: SizePolicy

class RawImage(_message.Message):
    __slots__ = ("pixels", "height", "width", "channels")
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    pixels: bytes
    height: int
    width: int
    channels: int
    def __init__(self, pixels: _Optional[bytes] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoded", "raw")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawImage
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ...) -> None: ...

class StyleCode(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Style(_message.Message):
    __slots__ = ("seed", "code", "reference")
    SEED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    seed: int
    code: StyleCode
    reference: Image
    def __init__(self, seed: _Optional[int] = ..., code: _Optional[_Union[StyleCode, _Mapping]] = ..., reference: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class OutputOptions(_message.Message):
    __slots__ = ("format", "quality")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    format: ImageFormat
    quality: int
    def __init__(self, format: _Optional[_Union[ImageFormat, str]] = ..., quality: _Optional[int] = ...) -> None: ...

class TranslateRequest(_message.Message):
    __slots__ = ("model", "version", "direction", "image", "style", "num_samples", "output", "size_policy", "request_id", "target_domain")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    SIZE_POLICY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    direction: str
    image: Image
    style: Style
    num_samples: int
    output: OutputOptions
    size_policy: SizePolicy
    request_id: str
    target_domain: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., direction: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., style: _Optional[_Union[Style, _Mapping]] = ..., num_samples: _Optional[int] = ..., output: _Optional[_Union[OutputOptions, _Mapping]] = ..., size_policy: _Optional[_Union[SizePolicy, str]] = ..., request_id: _Optional[str] = ..., target_domain: _Optional[str] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("queue_ms", "compute_ms", "total_ms")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    compute_ms: float
    total_ms: float
    def __init__(self, queue_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class TranslateResponse(_message.Message):
    __slots__ = ("images", "model", "version", "direction", "request_id", "timing", "batch_size")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    model: str
    version: int
    direction: str
    request_id: str
    timing: Timing
    batch_size: int
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., direction: _Optional[str] = ..., request_id: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., batch_size: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ShapeRule(_message.Message):
    __slots__ = ("multiple_of", "fixed_size", "min_size")
    MULTIPLE_OF_FIELD_NUMBER: _ClassVar[int]
    FIXED_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    multiple_of: int
    fixed_size: int
    min_size: int
    def __init__(self, multiple_of: _Optional[int] = ..., fixed_size: _Optional[int] = ..., min_size: _Optional[int] = ...) -> None: ...

class DirectionInfo(_message.Message):
    __slots__ = ("name", "input_channels", "output_channels", "shape_rule", "style_size", "backend", "artifact", "max_batch", "style_encoder", "target_domain")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SHAPE_RULE_FIELD_NUMBER: _ClassVar[int]
    STYLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    STYLE_ENCODER_FIELD_NUMBER: _ClassVar[int]
    TARGET_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    name: str
    input_channels: int
    output_channels: int
    shape_rule: ShapeRule
    style_size: int
    backend: str
    artifact: str
    max_batch: int
    style_encoder: bool
    target_domain: str
    def __init__(self, name: _Optional[str] = ..., input_channels: _Optional[int] = ..., output_channels: _Optional[int] = ..., shape_rule: _Optional[_Union[ShapeRule, _Mapping]] = ..., style_size: _Optional[int] = ..., backend: _Optional[str] = ..., artifact: _Optional[str] = ..., max_batch: _Optional[int] = ..., style_encoder: _Optional[bool] = ..., target_domain: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "family", "domains", "directions", "created", "shared_batches")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    DIRECTIONS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    SHARED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    family: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    directions: _containers.RepeatedCompositeFieldContainer[DirectionInfo]
    created: str
    shared_batches: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., family: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ..., directions: _Optional[_Iterable[_Union[DirectionInfo, _Mapping]]] = ..., created: _Optional[str] = ..., shared_batches: _Optional[bool] = ...) -> None: ...
