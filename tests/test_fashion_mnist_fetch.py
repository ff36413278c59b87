"""Where Fashion-MNIST comes from on a machine that may lack it: the lookup order over real IDX files built here,
torchvision's checksummed download against a real local HTTP server (a corrupt file is refused and nothing is
kept), an unreachable or silent mirror failing within the timeout, and a sweep that stops before submitting
anything with one line naming both remedies. Debian's folder is moved away by $PIRL_ABLATE_DEBIAN_DATA (the
package itself stays installed)."""

from __future__ import annotations

import functools
import gzip
import http.server
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from pirl_ablate.cli import main
from pirl_ablate.data import build_dataset
from pirl_ablate.data import fashion_mnist as fm
from pirl_ablate.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def write_idx_files(folder: Path, count: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The four gzipped IDX files, written by hand from the format (magic 0 0 8 ndim, big-endian dims, bytes)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        image_file, label_file = fm.FILES[split]
        (folder / image_file).write_bytes(gzip.compress(b"\0\0\x08\x03" + struct.pack(">3I", count, 28, 28)
                                                        + images.tobytes()))
        (folder / label_file).write_bytes(gzip.compress(b"\0\0\x08\x01" + struct.pack(">I", count)
                                                        + labels.tobytes()))
    return images, labels


@pytest.fixture
def bare_machine(tmp_path, monkeypatch):
    """No PIRL_ABLATE_DATA, no Debian package folder, an empty user cache, no apt, a mirror that refuses."""
    monkeypatch.delenv("PIRL_ABLATE_DATA", raising=False)
    monkeypatch.setenv("PIRL_ABLATE_DEBIAN_DATA", str(tmp_path / "no-debian-package"))
    monkeypatch.setenv("PIRL_ABLATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIRL_ABLATE_APT", "0")
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PIRL_ABLATE_FASHION_MNIST_MIRROR", f"http://127.0.0.1:{port}/")
    return tmp_path


def test_lookup_order_data_folder_then_debian_then_cache(bare_machine, monkeypatch):
    images, labels = write_idx_files(bare_machine / "cache" / "FashionMNIST" / "raw", count=4)
    assert fm.find_files() == fm.cached_dir()
    data = build_dataset("fashion_mnist", "train")
    assert np.array_equal(data.images[:, 0].numpy(), images) and data.labels.tolist() == labels.tolist()

    write_idx_files(bare_machine / "debian", count=6)
    monkeypatch.setenv("PIRL_ABLATE_DEBIAN_DATA", str(bare_machine / "debian"))
    assert fm.find_files() == bare_machine / "debian"

    write_idx_files(bare_machine / "mine" / "fashion-mnist", count=7)
    monkeypatch.setenv("PIRL_ABLATE_DATA", str(bare_machine / "mine"))
    assert fm.find_files() == bare_machine / "mine" / "fashion-mnist"
    assert len(build_dataset("fashion_mnist", "test")) == 7
    assert fm.find_files(bare_machine / "debian") == bare_machine / "debian"  # a bound root comes first


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_checks_torchvisions_checksums_and_keeps_nothing_corrupt(bare_machine, monkeypatch):
    write_idx_files(bare_machine / "mirror")  # right names, wrong bytes: not the upstream files
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_Quiet, directory=str(bare_machine / "mirror")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("PIRL_ABLATE_FASHION_MNIST_MIRROR", f"http://127.0.0.1:{server.server_port}/")
        with pytest.raises(DataError) as e:
            fm.find_files()
    finally:
        server.shutdown()
        server.server_close()
    assert "MD5 checksum mismatch" in str(e.value) and "8d4fb7e6c68d591d4c3dfef9ec88bf0d" in str(e.value)
    cache = bare_machine / "cache" / "FashionMNIST"
    assert not any(p.is_file() for p in cache.rglob("*"))  # neither the bad file nor a half download stays


def test_unreachable_mirror_fails_with_both_remedies_and_a_silent_one_times_out(bare_machine, monkeypatch):
    with pytest.raises(DataError) as e:
        fm.find_files()
    message = str(e.value)
    assert "\n" not in message and "download from http://127.0.0.1:" in message
    assert "apt-get install dataset-fashion-mnist" in message and "PIRL_ABLATE_DATA" in message

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("PIRL_ABLATE_FASHION_MNIST_MIRROR", f"http://127.0.0.1:{silent.getsockname()[1]}/")
        monkeypatch.setattr(fm, "DOWNLOAD_TIMEOUT_S", 0.2)
        with pytest.raises(DataError, match="timed out"):
            fm.find_files()
    with pytest.raises(DataError, match="download is off"):
        fm.find_files(download_missing=False)


def test_sweep_without_the_dataset_submits_nothing_and_prints_one_line(bare_machine, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    out = bare_machine / "runs"
    assert main(["sweep", "sweeps/lambda.gin", "--executor", "debug", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Fashion-MNIST IDX files not found"), err
    assert "apt-get install dataset-fashion-mnist" in err[0] and "PIRL_ABLATE_DATA" in err[0]
    assert not out.exists()  # no sweep.json, no run folder, nothing submitted
