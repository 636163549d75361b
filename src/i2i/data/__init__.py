"""Datasets, transforms and the built-in sample data (imports numpy, Pillow and torch only)."""

from i2i.data.aligned import AlignedDataset
from i2i.data.folders import IMG_EXTENSIONS, DataError, is_image_file, list_images, load_rgb
from i2i.data.labelled import LabelledDataset, domain_folders, labelled_domains
from i2i.data.sample import (
    GRADES,
    MULTI_DOMAIN_TASKS,
    SAMPLE_TASKS,
    MultiDomainTask,
    SampleTask,
    TranslationRange,
    dusk_grade,
    dusk_grade_strength,
    gray3,
    make_sample_dataset,
    night_grade,
    sample_task_names,
    sepia_grade,
    translation_ranges,
)
from i2i.data.transforms import (
    PREPROCESS_MODES,
    TransformOptions,
    apply_transform,
    to_tensor,
    to_uint8,
)
from i2i.data.unaligned import UnalignedDataset

__all__ = [
    "AlignedDataset",
    "IMG_EXTENSIONS",
    "LabelledDataset",
    "domain_folders",
    "labelled_domains",
    "PREPROCESS_MODES",
    "GRADES",
    "MULTI_DOMAIN_TASKS",
    "MultiDomainTask",
    "SAMPLE_TASKS",
    "DataError",
    "SampleTask",
    "TransformOptions",
    "TranslationRange",
    "UnalignedDataset",
    "apply_transform",
    "dusk_grade",
    "dusk_grade_strength",
    "gray3",
    "is_image_file",
    "list_images",
    "load_rgb",
    "make_sample_dataset",
    "night_grade",
    "sepia_grade",
    "sample_task_names",
    "to_tensor",
    "to_uint8",
    "translation_ranges",
]
