"""Face data: folder, packed and RecordIO datasets, transforms, samplers and verification pairs."""

from facerec.data.folder import FaceFolder, scan_folder
from facerec.data.folder_module import FaceDataModule, PrepareFolder
from facerec.data.identity_sampler import IdentitySampler
from facerec.data.module import DataModule, PairsSet
from facerec.data.pack_writer import pack_folder, pack_images
from facerec.data.packed import PackedDataset
from facerec.data.packed_module import PackedDataModule
from facerec.data.recordio import RecordIODataModule, RecordIODataset
from facerec.data.sampler import ResumableSampler
from facerec.data.transforms import normalize

__all__ = [
    "DataModule",
    "FaceDataModule",
    "FaceFolder",
    "IdentitySampler",
    "PackedDataModule",
    "PackedDataset",
    "PairsSet",
    "PrepareFolder",
    "RecordIODataModule",
    "RecordIODataset",
    "ResumableSampler",
    "normalize",
    "pack_folder",
    "pack_images",
    "scan_folder",
]
