"""Face data: folder datasets, transforms, samplers and verification pair sets."""

from facerec.data.folder import FaceFolder, scan_folder
from facerec.data.module import FaceDataModule, PairsSet
from facerec.data.sampler import ResumableSampler
from facerec.data.transforms import normalize

__all__ = [
    "FaceDataModule",
    "FaceFolder",
    "PairsSet",
    "ResumableSampler",
    "normalize",
    "scan_folder",
]
