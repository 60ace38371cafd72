"""`download`: fetching the four .gz files from a mirror and checking their content.

The mirror is a local HTTP server on 127.0.0.1 serving a folder; no test
reaches the internet.
"""

import functools
import gzip
import hashlib
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import engine.data
from engine.data import FILES, download, load_split
from engine.data import main as data_main
from engine.errors import PixelCNNError


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves a folder, records the paths asked for, writes nothing to stderr."""

    def do_GET(self):
        self.server.requested.append(self.path)
        super().do_GET()

    def log_message(self, format, *args):
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """(folder served, its URL, the list of paths requested so far)."""
    # a proxy from the environment must not see requests meant for localhost
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    served = tmp_path / "mirror"
    served.mkdir()
    handler = functools.partial(QuietHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requested = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/mnist/", server.requested
    server.shutdown()
    server.server_close()
    thread.join()


def serve_under_mnist(served):
    folder = served / "mnist"
    folder.mkdir(exist_ok=True)
    return folder


def fake_files(folder) -> dict[str, tuple[int, str]]:
    """Writes four small valid .gz IDX files; returns FILES with their own sums."""
    rng = np.random.default_rng(0)
    sums = {}
    for stem, (magic, _) in FILES.items():
        count = 6 if stem.startswith("train") else 3
        if "images" in stem:
            array, header = rng.integers(0, 256, (count, 28, 28)), [count, 28, 28]
        else:
            array, header = rng.integers(0, 10, count), [count]
        content = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in header)
        content += array.astype(np.uint8).tobytes()
        (folder / f"{stem}.gz").write_bytes(gzip.compress(content))
        sums[stem] = (magic, hashlib.md5(content).hexdigest())
    return sums


@pytest.fixture
def fake_mirror(mirror, monkeypatch):
    """A mirror of small made-up MNIST files, and FILES holding their sums."""
    served, url, requested = mirror
    folder = serve_under_mnist(served)
    monkeypatch.setattr(engine.data, "FILES", fake_files(folder))
    return folder, url, requested


def test_real_files_served_as_they_are_pass_the_official_checksums(mirror, mnist_path, tmp_path):
    served, url, _ = mirror
    folder = serve_under_mnist(served)
    for stem in FILES:
        shutil.copy(mnist_path / f"{stem}.gz", folder)

    target = download(tmp_path / "fetched", mirror=url)

    for stem in FILES:
        assert (target / f"{stem}.gz").read_bytes() == (mnist_path / f"{stem}.gz").read_bytes()
    assert len(load_split(target, train=False)) == 10_000


def test_download_fetches_the_four_files_into_the_folder(fake_mirror, tmp_path):
    served, url, requested = fake_mirror

    target = download(tmp_path / "fetched", mirror=url)

    assert sorted(p.name for p in target.iterdir()) == sorted(f"{s}.gz" for s in FILES)
    for stem in FILES:
        assert (target / f"{stem}.gz").read_bytes() == (served / f"{stem}.gz").read_bytes()
    assert sorted(requested) == sorted(f"/mnist/{stem}.gz" for stem in FILES)
    assert len(load_split(target, train=True)) == 6


def test_files_already_there_and_intact_are_not_fetched_again(fake_mirror, tmp_path):
    _, url, requested = fake_mirror
    download(tmp_path / "fetched", mirror=url)
    requested.clear()

    download(tmp_path / "fetched", mirror=url)

    assert requested == []


def test_a_damaged_file_already_there_is_fetched_again(fake_mirror, tmp_path):
    served, url, requested = fake_mirror
    target = tmp_path / "fetched"
    target.mkdir()
    stem = "t10k-labels-idx1-ubyte"
    (target / f"{stem}.gz").write_bytes(b"\x1f\x8bnot really gzip")

    download(target, mirror=url)

    assert (target / f"{stem}.gz").read_bytes() == (served / f"{stem}.gz").read_bytes()
    assert f"/mnist/{stem}.gz" in requested


def test_a_file_that_fails_its_checksum_is_refused_and_not_kept(fake_mirror, tmp_path):
    served, url, _ = fake_mirror
    stem = "train-labels-idx1-ubyte"
    content = bytearray(gzip.decompress((served / f"{stem}.gz").read_bytes()))
    content[-1] = (content[-1] + 1) % 10
    (served / f"{stem}.gz").write_bytes(gzip.compress(bytes(content)))
    target = tmp_path / "fetched"

    with pytest.raises(PixelCNNError, match="checksum") as caught:
        download(target, mirror=url)

    assert f"{stem}.gz" in str(caught.value)
    # the file before it arrived; the bad one and any temporary file did not
    assert [p.name for p in target.iterdir()] == ["train-images-idx3-ubyte.gz"]


def test_a_damaged_gzip_served_is_refused_and_not_kept(fake_mirror, tmp_path):
    served, url, _ = fake_mirror
    stem = "train-images-idx3-ubyte"
    (served / f"{stem}.gz").write_bytes((served / f"{stem}.gz").read_bytes()[:100])
    target = tmp_path / "fetched"

    with pytest.raises(PixelCNNError, match="damaged gzip"):
        download(target, mirror=url)

    assert list(target.iterdir()) == []


def test_a_file_missing_on_the_mirror_is_reported_with_its_url(fake_mirror, tmp_path):
    served, url, _ = fake_mirror
    (served / "t10k-images-idx3-ubyte.gz").unlink()

    with pytest.raises(PixelCNNError, match="could not fetch") as caught:
        download(tmp_path / "fetched", mirror=url)

    assert f"{url}t10k-images-idx3-ubyte.gz" in str(caught.value)
    assert not (tmp_path / "fetched" / "t10k-images-idx3-ubyte.gz").exists()


def test_download_command_exits_zero_and_names_the_folder(fake_mirror, tmp_path, capsys):
    _, url, _ = fake_mirror
    target = tmp_path / "fetched"

    code = data_main(["download", "--dir", str(target), "--mirror", url])

    assert code == 0
    assert str(target) in capsys.readouterr().out


def test_download_command_exits_two_with_one_error_line(fake_mirror, tmp_path, capsys):
    served, url, _ = fake_mirror
    (served / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not mnist"))

    code = data_main(["download", "--dir", str(tmp_path / "fetched"), "--mirror", url])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "checksum" in err
    assert "Traceback" not in err
