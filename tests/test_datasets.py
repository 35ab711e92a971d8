"""engine.data.datasets: lookup order, verified atomic downloads from a local server, clear errors."""

import gzip
import hashlib
import http.server
import shutil
import socket
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from engine.data import datasets
from engine.data.datasets import DATASETS, DataError, DatasetSpec, FileSpec, SplitSpec, load, locate, searched_places

from conftest import MNIST, needs_mnist

TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real env var, system dir, user cache or network: only what each test sets up."""
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", (tmp_path / "system",))
    real_urlopen = datasets._urlopen

    def local_only(url, timeout):
        host = urllib.parse.urlsplit(url).hostname
        assert host == "127.0.0.1", f"test tried to reach {url}"
        return real_urlopen(url, timeout)

    monkeypatch.setattr(datasets, "_urlopen", local_only)
    monkeypatch.setattr(datasets, "TIMEOUT_S", 5.0)


def fill(directory: Path) -> Path:
    """Put the real MNIST test split into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in TEST_FILES:
        shutil.copyfile(MNIST / name, directory / name)
    return directory


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ---------------------------------------------------------------- lookup order


@needs_mnist
def test_lookup_order(tmp_path, monkeypatch):
    explicit = fill(tmp_path / "explicit")
    env_root = tmp_path / "env"
    fill(env_root / "mnist")
    fill(tmp_path / "system" / "mnist")
    cache_root = tmp_path / "cache"
    fill(cache_root / "mnist")
    monkeypatch.setenv(datasets.ENV_VAR, str(env_root))

    assert locate("mnist", "test", data_dir=explicit, cache_dir=cache_root) == explicit
    assert locate("mnist", "test", cache_dir=cache_root) == env_root / "mnist"
    monkeypatch.delenv(datasets.ENV_VAR)
    assert locate("mnist", "test", cache_dir=cache_root) == tmp_path / "system" / "mnist"
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", (tmp_path / "empty-system",))
    assert locate("mnist", "test", cache_dir=cache_root) == cache_root / "mnist"
    assert locate("mnist", "test", cache_dir=tmp_path / "empty-cache") is None
    # and the default cache follows XDG_CACHE_HOME
    fill(tmp_path / "xdg" / "einsum-engine" / "mnist")
    assert locate("mnist", "test") == tmp_path / "xdg" / "einsum-engine" / "mnist"


@needs_mnist
def test_a_place_counts_only_with_the_requested_splits_files(tmp_path):
    half = tmp_path / "half"
    half.mkdir()
    shutil.copyfile(MNIST / TEST_FILES[0], half / TEST_FILES[0])  # images without labels
    fill(tmp_path / "system" / "mnist")
    assert locate("mnist", "test", data_dir=half) == tmp_path / "system" / "mnist"
    # the shared dir holds train labels but not train images: not a train directory
    assert locate("mnist", "train", data_dir=MNIST) is None


@needs_mnist
def test_data_dir_may_be_the_parent_of_a_named_folder(tmp_path):
    fill(tmp_path / "data" / "mnist")
    assert locate("mnist", "test", data_dir=tmp_path / "data") == tmp_path / "data" / "mnist"


@needs_mnist
def test_env_var_names_a_root_not_the_files(tmp_path, monkeypatch):
    fill(tmp_path / "flat")  # files directly in the env dir: documented as not found
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "flat"))
    assert locate("mnist", "test") is None
    with pytest.raises(DataError) as exc:
        load("mnist", "test", download=False)
    assert f"${datasets.ENV_VAR} must hold a mnist/ folder" in str(exc.value)
    assert str(tmp_path / "flat" / "mnist") in str(exc.value)


@needs_mnist
def test_load_reports_its_source_and_real_data(tmp_path):
    explicit = fill(tmp_path / "explicit")
    ds = load("mnist", "test", data_dir=explicit, download=False)
    assert (ds.name, ds.split, ds.source) == ("mnist", "test", str(explicit))
    assert ds.images.shape == (10000, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (10000,) and ds.labels.dtype == np.uint8
    assert ds.labels[:5].tolist() == [7, 2, 1, 0, 4] and len(ds) == 10000


# ---------------------------------------------------------------- local verification


@needs_mnist
def test_local_file_with_wrong_content_is_rejected(tmp_path):
    d = fill(tmp_path / "d")
    payload = bytearray(gzip.decompress((MNIST / TEST_FILES[1]).read_bytes()))
    payload[8] = (payload[8] + 1) % 10  # a valid IDX file, one label changed
    (d / TEST_FILES[1]).write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(DataError) as exc:
        load("mnist", "test", data_dir=d, download=False)
    message = str(exc.value)
    assert str(d / TEST_FILES[1]) in message and "does not match" in message
    assert DATASETS["mnist"].splits["test"].labels.sha256 in message
    assert "delete it and download it again" in message


@needs_mnist
def test_recompressed_copy_is_accepted_by_content_hash(tmp_path):
    # Like Debian's dataset-fashion-mnist: same IDX bytes, different gzip header, different .gz hash.
    d = tmp_path / "d"
    d.mkdir()
    for name in TEST_FILES:
        payload = gzip.decompress((MNIST / name).read_bytes())
        (d / name).write_bytes(gzip.compress(payload, compresslevel=1, mtime=0))
        ours, real = ((p / name).read_bytes() for p in (d, MNIST))
        assert hashlib.sha256(ours).hexdigest() != hashlib.sha256(real).hexdigest()
    assert load("mnist", "test", data_dir=d, download=False).labels[:5].tolist() == [7, 2, 1, 0, 4]


def tiny_registry(monkeypatch, directory: Path, images: np.ndarray, labels: np.ndarray, count: int) -> None:
    """A test-only data set whose checksums match the given arrays, to reach the checks behind them."""
    directory.mkdir(parents=True, exist_ok=True)
    specs = []
    for fname, array in (("img.gz", images), ("lbl.gz", labels)):
        raw = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape) + array.tobytes()
        blob = gzip.compress(raw, mtime=0)
        (directory / fname).write_bytes(blob)
        specs.append(FileSpec(fname, hashlib.sha256(blob).hexdigest()))
    spec = DatasetSpec("tiny", "Tiny", "none", (), {"test": SplitSpec(specs[0], specs[1], count)}, "make it")
    monkeypatch.setitem(DATASETS, "tiny", spec)


def test_count_mismatch_names_both_files(tmp_path, monkeypatch):
    d = tmp_path / "tiny"
    tiny_registry(monkeypatch, d, np.zeros((5, 28, 28), np.uint8), np.zeros(4, np.uint8), 5)
    with pytest.raises(DataError) as exc:
        load("tiny", "test", data_dir=d, download=False)
    assert str(d / "img.gz") in str(exc.value) and str(d / "lbl.gz") in str(exc.value)
    assert "5 images" in str(exc.value) and "4 labels" in str(exc.value)


def test_label_out_of_range(tmp_path, monkeypatch):
    d = tmp_path / "tiny"
    tiny_registry(monkeypatch, d, np.zeros((3, 28, 28), np.uint8), np.array([1, 10, 2], np.uint8), 3)
    with pytest.raises(DataError, match=r"label 10 at index 1 is outside 0\.\.9"):
        load("tiny", "test", data_dir=d, download=False)


def test_wrong_image_shape_and_expected_count(tmp_path, monkeypatch):
    d = tmp_path / "tiny"
    tiny_registry(monkeypatch, d, np.zeros((3, 28, 27), np.uint8), np.zeros(3, np.uint8), 3)
    with pytest.raises(DataError, match=r"shape \(N, 28, 28\)"):
        load("tiny", "test", data_dir=d, download=False)
    tiny_registry(monkeypatch, d, np.zeros((3, 28, 28), np.uint8), np.zeros(3, np.uint8), 7)
    with pytest.raises(DataError, match="expected 7 examples, found 3"):
        load("tiny", "test", data_dir=d, download=False)


def test_unknown_name_and_split():
    with pytest.raises(DataError, match="known: fashion-mnist, mnist"):
        load("cifar", "test")
    with pytest.raises(DataError, match="unknown split 'valid'"):
        load("mnist", "valid")


# ---------------------------------------------------------------- downloads


class Server:
    """http.server on 127.0.0.1:<ephemeral>; `routes` maps a path to (status, body, declared length)."""

    def __init__(self):
        self.routes: dict[str, tuple[int, bytes, int | None]] = {}
        self.hits: list[str] = []
        routes, hits = self.routes, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                status, body, length = routes.get(self.path, (404, b"not found", None))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)  # when length > len(body), the connection just closes early
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def serve(self, prefix: str, files: dict[str, bytes]) -> str:
        for name, body in files.items():
            self.routes[f"/{prefix}/{name}"] = (200, body, None)
        return f"{self.url}/{prefix}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def real_files():
    return {name: (MNIST / name).read_bytes() for name in TEST_FILES}


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"  # nothing listens there now


@needs_mnist
def test_download_lands_in_cache_and_loads(tmp_path, server, real_files):
    cache = tmp_path / "cache"
    mirror = server.serve("good", real_files)
    ds = load("mnist", "test", mirrors=[mirror], cache_dir=cache)
    assert ds.source == str(cache / "mnist")
    assert ds.labels[:5].tolist() == [7, 2, 1, 0, 4] and ds.images.shape == (10000, 28, 28)
    assert leftovers(cache / "mnist") == sorted(TEST_FILES)
    for name in TEST_FILES:
        assert (cache / "mnist" / name).read_bytes() == real_files[name]
    # Now it is found locally: no second download, even with downloading off.
    hits = len(server.hits)
    assert load("mnist", "test", download=False, cache_dir=cache).source == str(cache / "mnist")
    assert len(server.hits) == hits


@needs_mnist
def test_bad_checksum_leaves_nothing(tmp_path, server, real_files):
    cache = tmp_path / "cache"
    altered = dict(real_files)
    altered[TEST_FILES[0]] = real_files[TEST_FILES[0]][:-1] + bytes([real_files[TEST_FILES[0]][-1] ^ 1])
    mirror = server.serve("bad", altered)
    with pytest.raises(DataError) as exc:
        load("mnist", "test", mirrors=[mirror], cache_dir=cache)
    message = str(exc.value)
    url = mirror + TEST_FILES[0]
    assert f"{url}: checksum mismatch" in message
    assert DATASETS["mnist"].splits["test"].images.sha256 in message
    assert hashlib.sha256(altered[TEST_FILES[0]]).hexdigest() in message
    assert TEST_FILES[0] not in leftovers(cache / "mnist")
    assert not [n for n in leftovers(cache / "mnist") if n.endswith(".part")]


@needs_mnist
def test_interrupted_transfer_leaves_nothing(tmp_path, server, real_files):
    cache = tmp_path / "cache"
    mirror = server.serve("cut", real_files)
    body = real_files[TEST_FILES[0]]
    server.routes[f"/cut/{TEST_FILES[0]}"] = (200, body[: len(body) // 3], len(body))
    with pytest.raises(DataError) as exc:
        load("mnist", "test", mirrors=[mirror], cache_dir=cache)
    assert f"transfer interrupted after {len(body) // 3} of {len(body)} bytes" in str(exc.value)
    assert TEST_FILES[0] not in leftovers(cache / "mnist")
    assert not [n for n in leftovers(cache / "mnist") if n.endswith(".part")]


@needs_mnist
@pytest.mark.parametrize("first", ["refused", "404"])
def test_falls_back_to_the_second_mirror(tmp_path, server, real_files, first):
    cache = tmp_path / "cache"
    good = server.serve("good", real_files)
    down = refused_url() if first == "refused" else f"{server.url}/missing/"
    ds = load("mnist", "test", mirrors=[down, good], cache_dir=cache)
    assert ds.source == str(cache / "mnist") and len(ds) == 10000
    if first == "404":
        assert f"/missing/{TEST_FILES[0]}" in server.hits
    assert leftovers(cache / "mnist") == sorted(TEST_FILES)


@needs_mnist
def test_all_mirrors_failing_reports_each(tmp_path, server):
    down = refused_url()
    missing = f"{server.url}/missing/"
    with pytest.raises(DataError) as exc:
        load("mnist", "test", mirrors=[down, missing], cache_dir=tmp_path / "cache")
    message = str(exc.value)
    assert down + TEST_FILES[0] in message
    assert f"{missing}{TEST_FILES[0]}: HTTP 404" in message
    assert leftovers(tmp_path / "cache" / "mnist") == []


def test_offline_fashion_mnist_lists_places_and_apt(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    (tmp_path / "explicit").mkdir()  # there, but empty (a folder that is not there is its own error)
    kwargs = dict(data_dir=tmp_path / "explicit", cache_dir=tmp_path / "cache")
    for attempt in (dict(download=False), dict(download=True, mirrors=[refused_url()])):
        with pytest.raises(DataError) as exc:
            load("fashion-mnist", "train", **kwargs, **attempt)
        message = str(exc.value)
        places = searched_places("fashion-mnist", **kwargs)
        assert places[0] == tmp_path / "explicit" and places[-1] == tmp_path / "cache" / "fashion-mnist"
        assert tmp_path / "env" / "fashion-mnist" in places and tmp_path / "system" / "fashion-mnist" in places
        for place in places:
            assert f"  {place}" in message
        assert "apt-get install -y dataset-fashion-mnist" in message
        assert "train-images-idx3-ubyte.gz" in message
    assert "Downloading into" in message and "train-images-idx3-ubyte.gz" in message
    assert leftovers(tmp_path / "cache" / "fashion-mnist") == []


def test_offline_mnist_names_mirrors_and_data_dir(tmp_path):
    with pytest.raises(DataError) as exc:
        load("mnist", "train", download=False, cache_dir=tmp_path / "cache")
    message = str(exc.value)
    for mirror in DATASETS["mnist"].mirrors:
        assert mirror in message
    assert "`data_dir`" in message and datasets.ENV_VAR in message  # the setting; train.py shows --data-dir
    assert str(tmp_path / "cache" / "mnist") in message


# ---------------------------------------------------------------- the real Fashion-MNIST


# MD5 of the decompressed files as published alongside the dataset (e.g. torchvision-style
# raw_data lists); the Debian .gz files are re-compressed, so only the payload can match.
FASHION_PAYLOAD_MD5 = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"{FASHION} absent (apt-get install -y dataset-fashion-mnist)")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", (FASHION.parent,))
    spec = DATASETS["fashion-mnist"]
    for split, count in (("train", 60000), ("test", 10000)):
        ds = load("fashion-mnist", split, download=False)
        assert ds.source == str(FASHION)
        assert ds.images.shape == (count, 28, 28) and ds.labels.shape == (count,)
        assert np.bincount(ds.labels).tolist() == [count // 10] * 10  # published: balanced classes
        for f in spec.splits[split].files:
            raw = (FASHION / f.filename).read_bytes()
            payload = gzip.decompress(raw)
            assert hashlib.md5(payload).hexdigest() == FASHION_PAYLOAD_MD5[f.filename]
            digests = hashlib.sha256(raw).hexdigest(), hashlib.sha256(payload).hexdigest()
            assert digests[0] == f.sha256 or digests[1] == f.content_sha256
