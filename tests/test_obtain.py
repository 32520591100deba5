"""Obtaining datasets: sources, checksums, safe and idempotent extraction, resumable downloads."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from clusteralign.data import obtain
from clusteralign.data.obtain import checksum, download, extracted
from clusteralign.data.errors import (
    ArchiveError,
    ArchiveLimitError,
    ChecksumMismatchError,
    DatasetRootMissingError,
    DownloadError,
    DownloadNotAllowedError,
    LayoutError,
    SourceConfigError,
    UnsafeArchiveError,
)
from clusteralign.data.market1501 import read_market1501
from clusteralign.data.obtain import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_SIZE_GB,
    MARKER_NAME,
    DatasetSource,
    obtain_dataset,
    read_marker,
    safe_extract,
)
from fixtures import make_market1501, tar_folder, zip_folder

MARKET_DIR = "Market-1501-v15.09.15"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def tree(folder: Path) -> set[str]:
    """Every path under ``folder`` (files, folders, links), relative."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.fixture()
def market_zip(tmp_path: Path) -> tuple[Path, object]:
    """A tiny Market-1501 packed like the real Market-1501-v15.09.15.zip."""
    fake = make_market1501(tmp_path / "src" / MARKET_DIR)
    return zip_folder(fake.root, tmp_path / "downloads" / f"{MARKET_DIR}.zip"), fake


# --------------------------------------------------------------------------- DatasetSource


def test_source_needs_exactly_one_origin() -> None:
    with pytest.raises(SourceConfigError, match="exactly one of path.*got none of them"):
        DatasetSource()
    with pytest.raises(SourceConfigError, match="got path and url"):
        DatasetSource(path="data/x", url="https://example.org/x.zip")
    with pytest.raises(SourceConfigError, match="^url: expected an http"):
        DatasetSource(url="ftp://example.org/x.zip")
    with pytest.raises(SourceConfigError, match="^sha256: expected 64 hexadecimal digits, got 'abc'"):
        DatasetSource(archive="x.zip", sha256="abc")
    with pytest.raises(SourceConfigError, match="^md5: expected 32"):
        DatasetSource(archive="x.zip", md5="z" * 32)
    with pytest.raises(SourceConfigError, match="not a folder"):
        DatasetSource(path="data/x", md5="0" * 32)
    for bad in ("../up", "/abs", "a/../..", ""):
        with pytest.raises(SourceConfigError, match="^subdir: expected a relative folder"):
            DatasetSource(archive="x.zip", subdir=bad)
    with pytest.raises(SourceConfigError, match="^filename: expected a plain file name"):
        DatasetSource(url="https://example.org/get", filename="../x.zip")
    with pytest.raises(SourceConfigError, match="^filename: expected a plain file name, got ''"):
        DatasetSource(url="https://example.org/get", filename="")
    with pytest.raises(SourceConfigError, match="^path: expected path \\| null, got ''"):
        DatasetSource(path="")
    with pytest.raises(SourceConfigError, match="^allow_download: expected bool, got 'yes'"):
        DatasetSource(url="https://example.org/x.zip", allow_download="yes")
    source = DatasetSource(archive="data/x.zip", sha256="AB" * 32, subdir="./Market/")
    assert source.archive == Path("data/x.zip") and source.sha256 == "ab" * 32 and source.subdir == "Market"
    assert source.kind == "archive"


def test_source_from_mapping_names_the_config_key() -> None:
    key = "datasets.market1501.source"
    source = DatasetSource.from_mapping({"archive": "data/m.zip", "md5": "0" * 32, "subdir": MARKET_DIR}, key)
    assert source == DatasetSource(archive=Path("data/m.zip"), md5="0" * 32, subdir=MARKET_DIR)
    with pytest.raises(SourceConfigError,
                       match=rf"^{re.escape(key)}: unknown key\(s\) sha1; allowed: allow_download, archive"):
        DatasetSource.from_mapping({"archive": "m.zip", "sha1": "x"}, key)
    with pytest.raises(SourceConfigError, match=rf"^{re.escape(key)}\.sha256: expected 64"):
        DatasetSource.from_mapping({"archive": "m.zip", "sha256": "x"}, key)
    with pytest.raises(SourceConfigError, match=rf"^{re.escape(key)}: a dataset source needs exactly one"):
        DatasetSource.from_mapping({"subdir": "x"}, key)
    with pytest.raises(SourceConfigError, match=rf"^{re.escape(key)}\.allow_download: expected bool, got .yes.$"):
        DatasetSource.from_mapping({"url": "https://example.org/m.zip", "allow_download": "yes"}, key)


def test_source_schema_agrees_with_the_dataclass() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(obtain.source_schema())
    good = [
        {"path": "data/market"},
        {"archive": "data/m.zip", "md5": "0" * 32, "subdir": MARKET_DIR},
        {"url": "https://example.org/m.zip", "allow_download": True, "sha256": "a" * 64, "filename": "m.zip"},
        {"archive": "data/m.tar.gz", "max_entries": 10**6, "max_size_gb": 64},
        {"archive": "data/m.tar.gz", "max_size_gb": 0.5},
    ]
    bad = [{}, {"path": "a", "archive": "b"}, {"archive": "m.zip", "sha1": "x"}, {"archive": "m.zip", "md5": "x"},
           {"url": "ftp://example.org/m.zip"}, {"url": "https://example.org/m.zip", "allow_download": "yes"},
           {"archive": "m.zip", "max_entries": 0}, {"archive": "m.zip", "max_size_gb": 0},
           {"archive": "m.zip", "max_entries": 2.5}]
    for mapping in good:
        assert validator.is_valid(mapping), mapping
        DatasetSource.from_mapping(mapping)
    for mapping in bad:
        assert not validator.is_valid(mapping), mapping
        with pytest.raises(SourceConfigError):
            DatasetSource.from_mapping(mapping)


def test_url_filename() -> None:
    assert obtain.url_filename("https://host/a/Market-1501-v15.09.15.zip?dl=1") == "Market-1501-v15.09.15.zip"
    assert obtain.url_filename("https://host/a/My%20Data.tar.gz") == "My Data.tar.gz"
    with pytest.raises(SourceConfigError, match="set source.filename"):
        obtain.url_filename("https://host/")


# --------------------------------------------------------------------------- local folder


def test_path_source_is_used_in_place(tmp_path: Path) -> None:
    fake = make_market1501(tmp_path / "data" / MARKET_DIR)
    before = tree(tmp_path)
    root = obtain_dataset(DatasetSource(path=tmp_path / "data", subdir=MARKET_DIR), tmp_path / "unused")
    assert root == fake.root
    assert tree(tmp_path) == before  # nothing written
    assert obtain_dataset(DatasetSource(path=fake.root), tmp_path / "unused") == fake.root
    with pytest.raises(DatasetRootMissingError, match=r"absent.*\(source\.path\) does not exist"):
        obtain_dataset(DatasetSource(path=tmp_path / "absent"), tmp_path / "unused")
    with pytest.raises(LayoutError, match=rf"no sub-folder 'Market'.*\['{MARKET_DIR}/'\]"):
        obtain_dataset(DatasetSource(path=tmp_path / "data", subdir="Market"), tmp_path / "unused")


# --------------------------------------------------------------------------- archives


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz", ".tgz"])
def test_archive_is_verified_extracted_and_readable(tmp_path: Path, suffix: str) -> None:
    fake = make_market1501(tmp_path / "src" / MARKET_DIR)
    pack = zip_folder if suffix == ".zip" else tar_folder
    archive = pack(fake.root, tmp_path / f"{MARKET_DIR}{suffix}")
    dest = tmp_path / "data" / "market1501"
    source = DatasetSource(archive=archive, sha256=sha256_of(archive), md5=md5_of(archive), subdir=MARKET_DIR)

    root = obtain_dataset(source, dest)

    assert root == dest / MARKET_DIR
    assert tree(root) == tree(fake.root)
    for path in fake.root.rglob("*.jpg"):
        assert (root / path.relative_to(fake.root)).read_bytes() == path.read_bytes()
    marker = read_marker(dest)
    assert marker is not None
    assert marker["archive"] == archive.name and marker["size"] == archive.stat().st_size
    assert marker["sha256"] == sha256_of(archive) and marker["md5"] == md5_of(archive)
    # Only the dataset and the marker: no temporary folders left beside or inside it.
    assert sorted(os.listdir(dest.parent)) == ["market1501"]
    assert sorted(os.listdir(dest)) == sorted([MARKER_NAME, MARKET_DIR])
    assert len(read_market1501(root)) == len(read_market1501(fake.root))


def test_second_call_does_no_work(tmp_path: Path, market_zip, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, _ = market_zip
    dest = tmp_path / "data" / "market1501"
    with_sum = DatasetSource(archive=archive, sha256=sha256_of(archive), subdir=MARKET_DIR)
    without_sum = DatasetSource(archive=archive, subdir=MARKET_DIR)
    root = obtain_dataset(with_sum, dest)
    marker_bytes = (dest / MARKER_NAME).read_bytes()

    def must_not_run(*args, **kwargs):
        raise AssertionError("the archive was read again although the marker records it")

    monkeypatch.setattr(extracted, "safe_extract", must_not_run)
    monkeypatch.setattr(checksum, "file_digests", must_not_run)
    assert obtain_dataset(with_sum, dest) == root
    assert obtain_dataset(without_sum, dest) == root
    # Deleting the archive after extraction (to save space) keeps the extraction usable.
    archive.unlink()
    assert obtain_dataset(with_sum, dest) == root
    assert (dest / MARKER_NAME).read_bytes() == marker_bytes


def test_sources_of_one_checksummed_archive_share_an_extraction_folder() -> None:
    md5 = "728939E58AD9F0FF53E521857DD8FB43"
    labeled = DatasetSource(archive="data/cuhk03_release.zip", md5=md5)
    detected = DatasetSource(archive="elsewhere/cuhk03_release.zip", md5=md5.lower())
    assert labeled.extraction_name() == detected.extraction_name() == "cuhk03_release-728939e58ad9"
    url = DatasetSource(url="https://example.org/x/Market.tar.gz", sha256="ab" * 32)
    assert url.extraction_name() == "Market-" + "ab" * 6
    # Without a checksum, archives of one name cannot be told apart: no sharing.
    assert DatasetSource(archive="data/cuhk03_release.zip").extraction_name() is None


def test_concurrent_callers_extract_once(tmp_path: Path, market_zip, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, _ = market_zip
    dest = tmp_path / "data" / "shared"
    source = DatasetSource(archive=archive, md5=md5_of(archive), subdir=MARKET_DIR)
    extracting = threading.Event()
    calls = []
    real_extract = obtain.safe_extract

    def slow_extract(*args, **kwargs):
        calls.append(args)
        extracting.set()
        # Long enough for the second caller to reach the lock while this one holds it.
        threading.Event().wait(0.5)
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(extracted, "safe_extract", slow_extract)
    roots: list[Path] = []
    first = threading.Thread(target=lambda: roots.append(obtain_dataset(source, dest)))
    first.start()
    assert extracting.wait(30)
    second = obtain_dataset(source, dest)
    first.join(30)
    assert len(calls) == 1
    assert roots == [second] == [dest / MARKET_DIR]
    assert len(read_market1501(second)) > 0


def test_changed_archive_is_extracted_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = make_market1501(tmp_path / "v1" / MARKET_DIR)
    archive = zip_folder(first.root, tmp_path / "m.zip")
    dest = tmp_path / "data" / "market1501"
    obtain_dataset(DatasetSource(archive=archive, subdir=MARKET_DIR), dest)
    old = {p.name for p in (dest / MARKET_DIR / "bounding_box_test").iterdir()}

    second = make_market1501(tmp_path / "v2" / MARKET_DIR, num_cameras=3, junk=0, distractors=5)
    zip_folder(second.root, archive)
    os.utime(archive, ns=(1, 1))  # a different file, even if the size happened to be equal
    root = obtain_dataset(DatasetSource(archive=archive, sha256=sha256_of(archive), subdir=MARKET_DIR), dest)
    new = {p.name for p in (root / "bounding_box_test").iterdir()}
    assert new == {p.name for p in second.split_dir("gallery").iterdir()} and new != old
    assert read_marker(dest)["sha256"] == sha256_of(archive)
    assert sorted(os.listdir(dest.parent)) == ["market1501"]


def test_checksum_mismatch_names_both_hashes_and_keeps_the_users_archive(tmp_path: Path, market_zip) -> None:
    archive, _ = market_zip
    dest = tmp_path / "data" / "market1501"
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError) as info:
        obtain_dataset(DatasetSource(archive=archive, sha256=wrong, subdir=MARKET_DIR), dest)
    message = str(info.value)
    assert str(archive) in message and f"expected sha256 {wrong}, got {sha256_of(archive)}" in message
    assert "left in place" in message
    assert archive.is_file() and not dest.exists() and not (tmp_path / "data").exists()
    with pytest.raises(ChecksumMismatchError, match=f"expected md5 {'f' * 32}, got {md5_of(archive)}"):
        obtain_dataset(DatasetSource(archive=archive, md5="F" * 32), dest)


def test_missing_or_bad_archive(tmp_path: Path, market_zip) -> None:
    archive, _ = market_zip
    dest = tmp_path / "out"
    with pytest.raises(DatasetRootMissingError, match=r"absent\.zip' does not exist"):
        obtain_dataset(DatasetSource(archive=tmp_path / "absent.zip"), dest)
    with pytest.raises(LayoutError) as info:
        obtain_dataset(DatasetSource(archive=archive, subdir="Market-1501"), dest)
    assert "no folder 'Market-1501'" in str(info.value) and f"['{MARKET_DIR}/']" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["downloads", "src"]  # no destination, no temporary folder
    garbage = tmp_path / "broken.zip"
    garbage.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(ArchiveError, match="broken.zip.*damaged or not a zip"):
        obtain_dataset(DatasetSource(archive=garbage), dest)
    unknown = tmp_path / "data.rar"
    unknown.write_bytes(b"Rar!\x1a\x07\x00 nope")
    with pytest.raises(ArchiveError, match="not a zip or tar archive"):
        obtain_dataset(DatasetSource(archive=unknown), dest)
    assert not dest.exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".out")]


def test_refuses_to_replace_a_folder_it_did_not_make(tmp_path: Path, market_zip) -> None:
    archive, _ = market_zip
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("precious")
    with pytest.raises(SourceConfigError, match=f"not empty and has no {re.escape(MARKER_NAME)}"):
        obtain_dataset(DatasetSource(archive=archive), dest)
    assert os.listdir(dest) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert obtain_dataset(DatasetSource(archive=archive, subdir=MARKET_DIR), empty).is_dir()


# --------------------------------------------------------------------------- malicious archives


def zip_with(path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    """A zip from (name, data, unix mode) entries; mode 0 leaves the type unset."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def tar_with(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    """A tar from TarInfo headers (links, devices) and (name, data) regular files."""
    with tarfile.open(path, "w") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def tar_link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def tar_device(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info


def malicious_zips(work: Path) -> dict[str, list[tuple[str, bytes, int]]]:
    ok = ("data/ok.txt", b"fine", stat.S_IFREG | 0o644)
    return {
        "absolute path": [ok, (str(work / "outside" / "abs.txt"), b"evil", 0)],
        "'..' component": [ok, ("data/../../evil.txt", b"evil", 0)],
        "'..' with backslashes": [ok, ("data\\..\\..\\evil.txt", b"evil", 0)],
        "link to the absolute path": [ok, ("data/link", str(work).encode(), stat.S_IFLNK | 0o777)],
        "outside the extraction folder": [ok, ("data/link", b"../../outside", stat.S_IFLNK | 0o777)],
        "device file": [ok, ("data/null", b"", stat.S_IFCHR | 0o666)],
    }


def malicious_tars(work: Path) -> dict[str, list]:
    ok = ("data/ok.txt", b"fine")
    return {
        "absolute path": [ok, (str(work / "outside" / "abs.txt"), b"evil")],
        "'..' component": [ok, ("data/../../evil.txt", b"evil")],
        "link to the absolute path": [ok, tar_link("data/link", str(work), tarfile.SYMTYPE)],
        "outside the extraction folder": [ok, tar_link("data/link", "../../outside", tarfile.SYMTYPE)],
        "hard link": [ok, tar_link("data/hard", "../outside.txt", tarfile.LNKTYPE)],
        "device file": [ok, tar_device("data/null", tarfile.CHRTYPE)],
        "FIFO": [ok, tar_device("data/pipe", tarfile.FIFOTYPE)],
        # Each link is harmless when made; together "a" ends up at the parent of the target.
        "link chain": [ok, tar_link("a", "b/..", tarfile.SYMTYPE), tar_link("b", ".", tarfile.SYMTYPE)],
        "write through a link": [
            ok,
            tar_link("a", "b/..", tarfile.SYMTYPE),
            tar_link("b", ".", tarfile.SYMTYPE),
            ("a/evil.txt", b"evil"),
        ],
    }


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_malicious_archives_are_refused_and_write_nothing_outside(tmp_path: Path, kind: str) -> None:
    work = tmp_path / "work"
    (work / "outside").mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("target of a hard link")
    cases = malicious_zips(work) if kind == "zip" else malicious_tars(work)
    for index, (why, entries) in enumerate(cases.items()):
        archive = tmp_path / "archives" / f"case{index}.{kind}"
        archive.parent.mkdir(exist_ok=True)
        (zip_with if kind == "zip" else tar_with)(archive, entries)
        before = tree(tmp_path)
        dest = work / f"dest{index}"
        with pytest.raises(UnsafeArchiveError) as info:
            obtain_dataset(DatasetSource(archive=archive), dest)
        message = str(info.value)
        assert str(archive) in message and ("refusing to extract" in message), why
        keyword = {"'..' with backslashes": "'..' component", "hard link": "link", "FIFO": "device file or FIFO", "device file": "device file",
                   "link chain": "outside", "write through a link": "outside"}.get(why, why)
        assert keyword in message, (why, message)
        assert tree(tmp_path) == before, why  # nothing written anywhere, not even the destination
        assert not (work / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def zeros_zip(path: Path, size: int) -> Path:
    """A zip holding one file of `size` zero bytes: a few KB on disk."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data/zeros.bin", bytes(size))
    return path


def many_files_tar_gz(path: Path, count: int) -> Path:
    """A tar.gz of `count` empty files."""
    with tarfile.open(path, "w:gz") as tar:
        for i in range(count):
            tar.addfile(tarfile.TarInfo(f"data/{i:05d}.jpg"))
    return path


@pytest.mark.parametrize("archive_kind, limit", [("zip", "max_size_gb"), ("zip", "max_entries"),
                                                 ("tar.gz", "max_size_gb"), ("tar.gz", "max_entries")])
def test_archives_past_the_extraction_limits_are_refused_before_anything_is_written(
        tmp_path: Path, archive_kind: str, limit: str) -> None:
    # Unlimited, a 440 KB zip wrote 301 MB and a 225 KB tar.gz 30,000 files. Here: 2 MB of zeros
    # in a few KB, and 300 empty files, against limits of 1 MB and 100 entries.
    archive = tmp_path / "archives" / f"bomb.{archive_kind}"
    archive.parent.mkdir()
    if archive_kind == "zip":
        zeros_zip(archive, 2 * 10**6) if limit == "max_size_gb" else zip_with(
            archive, [(f"data/{i}.jpg", b"x", 0) for i in range(300)])
    else:
        many_files_tar_gz(archive, 300) if limit == "max_entries" else tar_with(
            archive, [("data/zeros.bin", bytes(2 * 10**6))])
    low = {"max_size_gb": 0.001, "max_entries": 100}[limit]
    dest = tmp_path / "work" / "dest"
    dest.parent.mkdir()
    before = tree(tmp_path)
    with pytest.raises(ArchiveLimitError) as info:
        obtain_dataset(DatasetSource(archive=archive, **{limit: low}), dest)
    message = str(info.value)
    assert message.startswith(f"refusing to extract {str(archive)!r}: it declares more than ")
    assert ("more than 0.001 GB of files" if limit == "max_size_gb" else "more than 100 entries") in message
    assert f"raise `{limit}` in the dataset's source; nothing was extracted" in message
    assert tree(tmp_path) == before  # not even a temporary folder is left
    # Raised above what the archive holds, it is extracted.
    obtain_dataset(DatasetSource(archive=archive, **{limit: low * 10}), dest)
    assert (dest / "data").is_dir()


def test_the_default_limits_leave_room_for_msmt17(tmp_path: Path) -> None:
    # MSMT17 V1 (docs/datasets.md): 126,441 images, 4,101 identity folders, train/, test/, the lists.
    msmt17_entries = 126_441 + 4_101 + 2 + 4
    assert DEFAULT_MAX_ENTRIES > 3 * msmt17_entries and DEFAULT_MAX_SIZE_GB * 10**9 / 126_441 > 200_000
    assert DatasetSource(archive="m.tar.gz").extraction_limits() == (DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SIZE_GB * 10**9)
    raised = DatasetSource(archive="m.tar.gz", max_entries=10**6, max_size_gb=100)
    assert raised.extraction_limits() == (10**6, 100 * 10**9)
    # The defaults hold when safe_extract is called without limits too.
    archive = many_files_tar_gz(tmp_path / "ok.tar.gz", 10)
    (tmp_path / "out").mkdir()
    safe_extract(archive, tmp_path / "out")
    assert len(list((tmp_path / "out" / "data").iterdir())) == 10


@pytest.mark.parametrize("raw, needle", [
    ({"archive": "m.zip", "max_entries": 0}, "src.max_entries: must be at least 1, got 0"),
    ({"archive": "m.zip", "max_entries": True}, "src.max_entries: expected int | null, got True"),
    ({"archive": "m.zip", "max_entries": 1.5}, "src.max_entries: expected int | null, got 1.5"),
    ({"archive": "m.zip", "max_size_gb": 0}, "src.max_size_gb: must be greater than 0, got 0.0"),
    ({"archive": "m.zip", "max_size_gb": float("inf")}, "src.max_size_gb: expected float | null, got inf"),
    ({"archive": "m.zip", "max_size_gb": "big"}, "src.max_size_gb: expected float | null, got 'big'"),
    ({"path": "data/m", "max_entries": 10}, "src.max_entries: limits an archive's extraction"),
    ({"archive": "m.zip", "subdir": None}, "src.subdir: got null (an empty value)"),
])
def test_bad_extraction_limits_name_their_key(raw: dict, needle: str) -> None:
    with pytest.raises(SourceConfigError) as info:
        DatasetSource.from_mapping(raw, "src")
    assert needle in str(info.value)


def test_safe_extract_keeps_harmless_links(tmp_path: Path) -> None:
    archive = tar_with(
        tmp_path / "ok.tar",
        [("data/real.txt", b"real"), tar_link("data/alias.txt", "real.txt", tarfile.SYMTYPE),
         tar_link("data/copy.txt", "data/real.txt", tarfile.LNKTYPE)],
    )
    target = tmp_path / "out"
    target.mkdir()
    safe_extract(archive, target)
    assert (target / "data" / "alias.txt").is_symlink()
    assert (target / "data" / "alias.txt").read_text() == "real"
    assert (target / "data" / "copy.txt").read_text() == "real"


# --------------------------------------------------------------------------- downloads


class _Server(ThreadingHTTPServer):
    files: dict[str, bytes]
    requests: list[str | None]
    honour_range: bool
    cut_after: int | None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        server = self.server
        server.requests.append(self.headers.get("Range"))
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404, "no such file")
            return
        start = 0
        wanted = self.headers.get("Range")
        if wanted and server.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_after is not None:
            # Simulate a dropped connection: announce everything, send only part of it.
            self.wfile.write(body[: server.cut_after])
            server.cut_after = None
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def http_server() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.files, server.requests, server.honour_range, server.cut_after = {}, [], True, None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def url_of(server: _Server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_download_needs_permission(tmp_path: Path, http_server: _Server, market_zip) -> None:
    archive, _ = market_zip
    http_server.files["/m.zip"] = archive.read_bytes()
    dest = tmp_path / "data" / "market1501"
    with pytest.raises(DownloadNotAllowedError) as info:
        obtain_dataset(DatasetSource(url=url_of(http_server, "/m.zip")), dest)
    message = str(info.value)
    assert "allow_download: true" in message and str(tmp_path / "data" / "m.zip") in message
    assert http_server.requests == [] and not (tmp_path / "data").exists()
    # A file put there by hand is used without any download.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "m.zip").write_bytes(archive.read_bytes())
    root = obtain_dataset(DatasetSource(url=url_of(http_server, "/m.zip"), subdir=MARKET_DIR), dest)
    assert (root / "query").is_dir() and http_server.requests == []


def test_download_verify_extract_and_no_second_download(tmp_path: Path, http_server: _Server, market_zip) -> None:
    archive, fake = market_zip
    http_server.files["/files/Market.zip"] = archive.read_bytes()
    dest = tmp_path / "data" / "market1501"
    source = DatasetSource(
        url=url_of(http_server, "/files/Market.zip"), allow_download=True, sha256=sha256_of(archive), subdir=MARKET_DIR
    )
    root = obtain_dataset(source, dest, progress=False)
    assert http_server.requests == [None]
    assert (tmp_path / "data" / "Market.zip").read_bytes() == archive.read_bytes()
    assert not (tmp_path / "data" / "Market.zip.part").exists()
    assert tree(root) == tree(fake.root)
    assert read_marker(dest)["url"] == source.url
    assert obtain_dataset(source, dest) == root and http_server.requests == [None]


def test_concurrent_downloads_of_one_url_fetch_it_once(tmp_path: Path, http_server: _Server, market_zip,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    archive, _ = market_zip
    http_server.files["/m.zip"] = archive.read_bytes()
    target = tmp_path / "data" / "m.zip"
    fetching = threading.Event()
    real_fetch = download._fetch

    def slow_fetch(*args, **kwargs):
        fetching.set()
        threading.Event().wait(0.5)  # long enough for the second caller to reach the lock
        return real_fetch(*args, **kwargs)

    monkeypatch.setattr(download, "_fetch", slow_fetch)
    digests: list[dict[str, str]] = []
    first = threading.Thread(target=lambda: digests.append(
        obtain.download_file(url_of(http_server, "/m.zip"), target, sha256=sha256_of(archive), progress=False)))
    first.start()
    assert fetching.wait(30)
    second = obtain.download_file(url_of(http_server, "/m.zip"), target, sha256=sha256_of(archive), progress=False)
    first.join(30)
    assert http_server.requests == [None]  # one request, no resumed or second download
    assert digests == [second] and second["sha256"] == sha256_of(archive)
    assert target.read_bytes() == archive.read_bytes() and not target.with_name("m.zip.part").exists()


def test_download_resumes_a_partial_file(tmp_path: Path, http_server: _Server, market_zip) -> None:
    archive, _ = market_zip
    data = archive.read_bytes()
    http_server.files["/m.zip"] = data
    http_server.cut_after = len(data) // 3
    source = DatasetSource(url=url_of(http_server, "/m.zip"), allow_download=True, md5=md5_of(archive))
    dest = tmp_path / "data" / "m"
    part = tmp_path / "data" / "m.zip.part"
    with pytest.raises(DownloadError, match=r"stopped after .*m\.zip\.part.*run again to resume"):
        obtain_dataset(source, dest, progress=False)
    assert part.read_bytes() == data[: len(data) // 3]
    assert not dest.exists()

    obtain_dataset(source, dest, progress=False)
    assert http_server.requests == [None, f"bytes={len(data) // 3}-"]
    assert (tmp_path / "data" / "m.zip").read_bytes() == data and not part.exists()


def test_download_restarts_when_the_server_ignores_range(tmp_path: Path, http_server: _Server, market_zip) -> None:
    archive, _ = market_zip
    data = archive.read_bytes()
    http_server.files["/m.zip"] = data
    http_server.honour_range = False
    target = tmp_path / "m.zip"
    (tmp_path / "m.zip.part").write_bytes(b"stale bytes from another file")
    digests = obtain.download_file(url_of(http_server, "/m.zip"), target, sha256=sha256_of(archive), progress=False)
    assert target.read_bytes() == data and digests["sha256"] == sha256_of(archive)
    assert http_server.requests == ["bytes=29-"]


def test_download_of_a_complete_part_file(tmp_path: Path, http_server: _Server) -> None:
    http_server.files["/x.bin"] = b"0123456789"
    (tmp_path / "x.bin.part").write_bytes(b"0123456789")
    obtain.download_file(url_of(http_server, "/x.bin"), tmp_path / "x.bin", progress=False)
    assert (tmp_path / "x.bin").read_bytes() == b"0123456789"
    assert http_server.requests == ["bytes=10-"]


@pytest.mark.parametrize("progress", [True, False, None])
def test_download_shows_a_byte_counter_only_when_asked_or_on_a_terminal(
        tmp_path: Path, http_server: _Server, capsys, progress) -> None:
    http_server.files["/x.bin"] = bytes(5000)
    obtain.download_file(url_of(http_server, "/x.bin"), tmp_path / "x.bin", progress=progress)
    err = capsys.readouterr().err
    # None follows stderr, which is not a terminal under pytest.
    assert ("x.bin.part" in err and "4.88k/4.88k" in err) is bool(progress)


def test_download_checksum_mismatch_removes_the_partial_file(tmp_path: Path, http_server: _Server) -> None:
    http_server.files["/m.zip"] = b"tampered content"
    actual = hashlib.sha256(b"tampered content").hexdigest()
    expected = "1" * 64
    source = DatasetSource(url=url_of(http_server, "/m.zip"), allow_download=True, sha256=expected)
    with pytest.raises(ChecksumMismatchError) as info:
        obtain_dataset(source, tmp_path / "data" / "m", progress=False)
    message = str(info.value)
    assert f"expected sha256 {expected}, got {actual}" in message and "removed" in message
    assert os.listdir(tmp_path / "data") == []


def test_download_http_error(tmp_path: Path, http_server: _Server) -> None:
    source = DatasetSource(url=url_of(http_server, "/missing.zip"), allow_download=True)
    with pytest.raises(DownloadError, match=r"missing\.zip failed: HTTP 404"):
        obtain_dataset(source, tmp_path / "data" / "m", progress=False)
    assert isinstance(DownloadError("x"), OSError)
    assert os.listdir(tmp_path / "data") == []
