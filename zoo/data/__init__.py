"""Datasets (image and audio folders, tar shards, synthetic), transforms and the bundled sample files.

    from zoo.data import build_dataset
    ds = build_dataset({"type": "image_folder", "path": "photos/train", "image_size": 256, "crop": "multiscale"})
    ds.set_epoch(epoch)   # item i's augmentation depends only on (seed, rank, epoch, i)
    tokens = TokenShards("tokens/")   # (key, Tokens) pairs written by `zoo tokenize`
"""

from zoo.data.audio import AUDIO_EXTENSIONS, AudioFolder, load_audio, resample
from zoo.data.common import SeededDataset, TarMember, UnreadableFileError, item_seed, list_files
from zoo.data.factory import DATASETS, build_dataset, register_dataset
from zoo.data.image import IMAGE_EXTENSIONS, ImageFolder, load_image
from zoo.data.samples import SAMPLES_DIR, sample_audio, sample_image, sample_path
from zoo.data.shards import tar_shards, write_tar_shards
from zoo.data.synthetic import SyntheticAudio, SyntheticImage
from zoo.data.token_shards import TokenShards, TokenShardsMap, read_manifest, read_shard

__all__ = [
    "AUDIO_EXTENSIONS",
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "SAMPLES_DIR",
    "AudioFolder",
    "ImageFolder",
    "SeededDataset",
    "SyntheticAudio",
    "SyntheticImage",
    "TarMember",
    "TokenShards",
    "TokenShardsMap",
    "UnreadableFileError",
    "build_dataset",
    "item_seed",
    "list_files",
    "load_audio",
    "load_image",
    "read_manifest",
    "read_shard",
    "register_dataset",
    "resample",
    "sample_audio",
    "sample_image",
    "sample_path",
    "tar_shards",
    "write_tar_shards",
]
