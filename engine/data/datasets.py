"""MNIST and Fashion-MNIST by name: find the IDX files, or download them once, verify them, load them.

Where a data set's files are looked for, first match wins (a place counts when it holds both
files of the requested split):

1. ``data_dir`` -- the directory holding the four files, or its parent with a ``<name>/`` folder;
2. ``$EINSUM_DATA_DIR/<name>/`` -- the variable names a root that holds one folder per data set;
3. ``/usr/share/datasets/<name>/`` (see ``SYSTEM_DIRS``; Debian's ``dataset-fashion-mnist`` lands here);
4. ``${XDG_CACHE_HOME:-~/.cache}/einsum-engine/<name>/`` -- where downloads go.

Every file is checked against its SHA-256 on every load (about 0.03 s for all of Fashion-MNIST,
small next to the 0.3 s of decompression, so no stamp files).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from notation.runtime import environment

from ..errors import named
from . import missing
from .idx import REDOWNLOAD, DataError, decompress, parse_idx

__all__ = [
    "DATASETS", "Dataset", "DatasetSpec", "FileSpec", "SplitSpec", "DataError",
    "ENV_VAR", "SYSTEM_DIRS", "load", "locate", "searched_places", "default_cache_root",
]

ENV_VAR = "EINSUM_DATA_DIR"
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)
SHARED_DIR = Path(__file__).resolve().parents[3] / "shared" / "datasets"  # copies shared beside the repository
TIMEOUT_S = 30.0
_CHUNK = 1 << 16


@dataclass(frozen=True)
class FileSpec:
    """One IDX file and the SHA-256 sums it is accepted under."""

    filename: str
    sha256: str  # of the .gz exactly as the mirrors publish it
    # Of the decompressed IDX bytes: accepts copies re-compressed by packagers (Debian's
    # dataset-fashion-mnist strips the gzip file-name field, so its .gz hashes differ).
    content_sha256: str | None = None


@dataclass(frozen=True)
class SplitSpec:
    """The image and label files of one split and how many examples they hold."""

    images: FileSpec
    labels: FileSpec
    count: int

    @property
    def files(self) -> tuple[FileSpec, FileSpec]:
        return (self.images, self.labels)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to find, fetch, verify and credit one data set."""

    name: str
    title: str
    licence: str
    mirrors: tuple[str, ...]
    splits: Mapping[str, SplitSpec]
    how_to_get: str
    how_to_get_briefly: str = ""  # the same in a few words, for the one line of a command line (else how_to_get)
    classes: tuple[str, ...] = tuple(str(d) for d in range(10))  # the name of each label, in order
    image_shape: tuple[int, int] = (28, 28)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True, eq=False)
class Dataset:
    """One loaded split: uint8 images (N, 28, 28), uint8 labels (N,), and where they came from."""

    images: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    name: str
    split: str
    source: str

    def __len__(self) -> int:
        return len(self.labels)


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

# Archive SHA-256: MNIST from /work/shared/datasets/mnist/SHA256SUMS and TensorFlow Datasets'
# url_checksums/mnist.txt; Fashion-MNIST from TensorFlow Datasets' url_checksums/fashion_mnist.txt.
# Content SHA-256: computed from the real files here; for Fashion-MNIST the decompressed files'
# MD5s equal the published ones (f4a8712d..., 9018921c..., 8181f547..., 15d48437...).
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST handwritten digits",
        licence="Yann LeCun, Corinna Cortes and Christopher J.C. Burges; CC BY-SA 3.0",
        mirrors=_MNIST_MIRRORS,
        splits={
            "train": SplitSpec(
                FileSpec("train-images-idx3-ubyte.gz",
                         "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
                FileSpec("train-labels-idx1-ubyte.gz",
                         "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                         "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
                60000,
            ),
            "test": SplitSpec(
                FileSpec("t10k-images-idx3-ubyte.gz",
                         "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                         "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
                FileSpec("t10k-labels-idx1-ubyte.gz",
                         "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                         "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
                10000,
            ),
        },
        how_to_get=(
            "download the four .gz files from " + " or ".join(_MNIST_MIRRORS)
            + f" into a directory and pass it as {named('data_dir')}, "
            + f"or put them in a mnist/ folder under ${ENV_VAR}"
        ),
        how_to_get_briefly=f"give {named('data_dir')} DIR",
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST (Zalando article images)",
        licence="Zalando Research (Han Xiao, Kashif Rasul, Roland Vollgraf); MIT",
        mirrors=_FASHION_MIRRORS,
        splits={
            "train": SplitSpec(
                FileSpec("train-images-idx3-ubyte.gz",
                         "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                         "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
                FileSpec("train-labels-idx1-ubyte.gz",
                         "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                         "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
                60000,
            ),
            "test": SplitSpec(
                FileSpec("t10k-images-idx3-ubyte.gz",
                         "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                         "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
                FileSpec("t10k-labels-idx1-ubyte.gz",
                         "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                         "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
                10000,
            ),
        },
        how_to_get=(
            "apt-get install -y dataset-fashion-mnist (puts the files in /usr/share/datasets/fashion-mnist/), "
            "or download the four .gz files from " + " or ".join(_FASHION_MIRRORS)
            + f" and pass their directory as {named('data_dir')}, or put them in a fashion-mnist/ folder under "
            f"${ENV_VAR}"
        ),
        how_to_get_briefly=f"apt-get install dataset-fashion-mnist, give {named('data_dir')} DIR",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"),
    ),
}


def _spec(name: str, split: str | None = None) -> DatasetSpec:
    """Look a data set (and split) up in DATASETS, with a clear error for unknown ones."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    if split is not None and split not in spec.splits:
        raise DataError(f"unknown split {split!r} for {name}; known: {', '.join(spec.splits)}")
    return spec


def default_cache_root() -> Path:
    """The per-user download cache root: ${XDG_CACHE_HOME:-~/.cache}/einsum-engine."""
    return environment.cache_root()


def searched_places(name: str, data_dir: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """The directories looked in for data set `name`, in order; the last is where downloads go."""
    _spec(name)
    places: list[Path] = []
    if data_dir is not None:
        explicit = Path(data_dir).expanduser()
        if not explicit.is_dir():
            what = "is a file, not a directory" if explicit.exists() else "does not exist"
            raise DataError(f"{data_dir}: the data directory given {what}; check its spelling, or leave it out to "
                            "search the usual places")
        places += [explicit, explicit / name]
    env = environment.get(ENV_VAR)
    if env:
        places.append(env / name)
    places += [Path(root) / name for root in SYSTEM_DIRS]
    places.append(Path(cache_dir).expanduser() / name if cache_dir is not None else default_cache_root() / name)
    return places


def _file(directory: Path, file_spec: FileSpec) -> Path | None:
    """The file in `directory`: as published (.gz), or gunzipped (the same name without .gz)."""
    for name in (file_spec.filename, file_spec.filename.removesuffix(".gz")):
        if (directory / name).is_file():
            return directory / name
    return None


def _has_split(directory: Path, split_spec: SplitSpec) -> bool:
    return all(_file(directory, f) is not None for f in split_spec.files)


def locate(name: str, split: str, data_dir: str | os.PathLike | None = None,
           cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The first searched directory holding both files of `split`, or None (presence only, no hashing)."""
    split_spec = _spec(name, split).splits[split]
    for place in searched_places(name, data_dir, cache_dir):
        if _has_split(place, split_spec):
            return place
    return None


def load(name: str, split: str, data_dir: str | os.PathLike | None = None, download: bool = True,
         mirrors: Sequence[str] | None = None, cache_dir: str | os.PathLike | None = None) -> Dataset:
    """Find (or download into the cache) one split of a data set, verify its checksums and load it."""
    spec = _spec(name, split)
    split_spec = spec.splits[split]
    directory = locate(name, split, data_dir, cache_dir)
    if directory is None:
        places = searched_places(name, data_dir, cache_dir)
        if not download:
            raise _not_found(spec, split, places, None)
        directory = places[-1]
        failures = _download_split(spec, split_spec, directory, _mirror_list(spec, mirrors))
        if failures:
            raise _not_found(spec, split, places, failures)
    side = spec.image_shape[0] * spec.image_shape[1]
    images = _read_verified(_file(directory, split_spec.images), split_spec.images, 16 + split_spec.count * side)
    labels = _read_verified(_file(directory, split_spec.labels), split_spec.labels, 8 + split_spec.count)
    _check_arrays(spec, split_spec, directory, images, labels)
    return Dataset(images=images, labels=labels, name=name, split=split, source=str(directory))


def _mirror_list(spec: DatasetSpec, mirrors: Sequence[str] | None) -> list[str]:
    if mirrors is None:
        mirrors = spec.mirrors
    elif isinstance(mirrors, str):
        mirrors = [mirrors]
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_verified(path: Path, file_spec: FileSpec, size: int | None = None) -> np.ndarray:
    """Read one IDX file (at most `size` bytes once inflated), check its structure, then its SHA-256
    (archive, else decompressed content)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc}); check its permissions") from None
    payload = decompress(raw, path, size)
    array = parse_idx(payload, path)
    if raw is payload and file_spec.content_sha256 is None:
        raise DataError(f"{path}: it is gunzipped, and only the published archive's checksum is known for this "
                        f"file, so it cannot be verified; put the published {file_spec.filename} there instead")
    actual = _sha256(raw)
    content_ok = file_spec.content_sha256 is not None and _sha256(payload) == file_spec.content_sha256
    if actual != file_spec.sha256 and not content_ok:
        known = _known_as(actual, _sha256(payload) if raw is not payload else actual)
        if known is not None and known[0] != file_spec:
            other, title, name = known
            asked = next((t for f, t, _ in _every_file() if f == file_spec), "the data set asked for")
            raise DataError(f"{path}: an intact {other.filename} of {title} ({name}), not of {asked}; give "
                            f"{named('dataset')} {name}, or put {asked}'s files in {path.parent}")
        raise DataError(
            f"{path}: SHA-256 {actual} does not match the published {file_spec.sha256}"
            + (f" (nor, decompressed, {file_spec.content_sha256})" if file_spec.content_sha256 else "")
            + f": the file is damaged or not the official one; {REDOWNLOAD}"
        )
    return array


def _known_as(archive_sha: str, content_sha: str):
    """(FileSpec, title, data set name) of the file of any known data set with these hashes, or None."""
    return next(((f, title, name) for f, title, name in _every_file()
                 if archive_sha == f.sha256 or content_sha == f.content_sha256), None)


def _every_file():
    """(FileSpec, title, name) of every file of every known data set."""
    return [(f, spec.title, name) for name, spec in DATASETS.items() for split in spec.splits.values()
            for f in split.files]


def _check_arrays(spec: DatasetSpec, split_spec: SplitSpec, directory: Path,
                  images: np.ndarray, labels: np.ndarray) -> None:
    """Shapes, dtypes, counts and label range, so a mismatched pair of files cannot load."""
    img_path = _file(directory, split_spec.images) or directory / split_spec.images.filename
    lbl_path = _file(directory, split_spec.labels) or directory / split_spec.labels.filename
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != spec.image_shape:
        raise DataError(f"{img_path}: expected uint8 images of shape (N, {spec.image_shape[0]}, "
                        f"{spec.image_shape[1]}), found {images.dtype} {images.shape}; {REDOWNLOAD}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{lbl_path}: expected a uint8 vector of labels, found {labels.dtype} {labels.shape}; "
                        f"{REDOWNLOAD}")
    if len(images) != len(labels):
        raise DataError(f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} labels: "
                        f"the two files do not belong together; {REDOWNLOAD}")
    if len(labels) != split_spec.count:
        raise DataError(f"{img_path} and {lbl_path}: expected {split_spec.count} examples, found {len(labels)}; "
                        f"{REDOWNLOAD}")
    if labels.size and int(labels.max()) >= spec.num_classes:
        bad = int(np.argmax(labels >= spec.num_classes))
        raise DataError(f"{lbl_path}: label {int(labels[bad])} at index {bad} is outside 0..{spec.num_classes - 1}; "
                        f"{REDOWNLOAD}")


def _urlopen(url: str, timeout: float):
    """The one place that touches the network (tests guard it)."""
    return urllib.request.urlopen(url, timeout=timeout)


def _download_split(spec: DatasetSpec, split_spec: SplitSpec, directory: Path, mirrors: list[str]) -> list[str]:
    """Fetch the split's missing files into `directory`; return why each failed file failed (empty: all good)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [f"cannot create {directory} ({exc.strerror or exc})"]
    for file_spec in split_spec.files:
        dest = directory / file_spec.filename
        if dest.is_file():
            continue
        errors = []
        for mirror in mirrors:
            url = mirror + file_spec.filename
            try:
                _fetch(url, dest, file_spec)
                break
            except _TransferError as exc:
                errors.append(str(exc))
        else:
            return errors or [f"no mirrors to download {file_spec.filename} from"]
    return []


class _TransferError(Exception):
    """One URL failed; the loader tries the next mirror."""


def _fetch(url: str, dest: Path, file_spec: FileSpec) -> None:
    """Download `url` to a temp file beside `dest`, verify it, then os.replace it into place."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise _TransferError(f"cannot write in {dest.parent} ({exc.strerror or exc})") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with _urlopen(url, TIMEOUT_S) as response:
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    received = 0
                    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                              desc=dest.name, file=sys.stderr, leave=False) as bar:
                        while chunk := response.read(_CHUNK):
                            out.write(chunk)
                            received += len(chunk)
                            bar.update(len(chunk))
            except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError, HTTPError, timeouts, resets
                raise _TransferError(f"{url}: {_describe(exc)}") from None
            if total is not None and received != total:
                raise _TransferError(f"{url}: transfer interrupted after {received} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        raw = tmp.read_bytes()
        actual = _sha256(raw)
        if actual != file_spec.sha256:
            content_ok = False
            if file_spec.content_sha256 is not None:
                try:
                    content_ok = _sha256(decompress(raw, url)) == file_spec.content_sha256
                except DataError:
                    content_ok = False
            if not content_ok:
                raise _TransferError(f"{url}: checksum mismatch, expected SHA-256 {file_spec.sha256}, got {actual}")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if reason is not None:
        return str(reason)
    return str(exc) or type(exc).__name__


def shared_test_split(name: str) -> Path | None:
    """The project's shared copy of a data set that holds only its test split (../shared/datasets/<name>
    beside the repository), when it exists."""
    folder = SHARED_DIR / name
    spec = DATASETS[name]
    if "test" in spec.splits and folder.is_dir() and _has_split(folder, spec.splits["test"]):
        return folder
    return None


def _not_found(spec: DatasetSpec, split: str, places: list[Path], failures: list[str] | None) -> DataError:
    """The error for a split found nowhere (engine/data/missing.py words it)."""
    return missing.not_found(spec, split, places, failures, ENV_VAR, shared_test_split(spec.name))
