"""A `datasets:` entry is checked before any image is rendered, extracted or read."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from clusteralign.config import ConfigError
from clusteralign.data.dataset_config import DatasetConfig
from clusteralign.data.errors import SourceConfigError
from clusteralign.data.obtain import MARKER_NAME, DatasetSource
from clusteralign.data.readers import READERS
from clusteralign.data.synthetic import SyntheticSpec
from clusteralign.pipeline.prepare import check_archive_available, extraction_dir, prepare_dataset

GENERATE = {"num_train_ids": 4, "num_test_ids": 4}


@pytest.mark.parametrize("cfg, message", [
    ({"reader": "market1501", "source": {"path": "m"}, "reader_options": {"foo": 1}},
     "datasets.d.reader_options: unknown option(s) foo; reader market1501 accepts none"),
    ({"reader": "msmt17", "source": {"path": "m"}, "reader_options": {"combine_vall": False}},
     "unknown option(s) combine_vall; reader msmt17 accepts combine_val"),
    ({"reader": "msmt17", "source": {"path": "m"}, "reader_options": {"num_workers": 8}},
     "the processes that verify images are the prepare_dataset job's threads"),
    ({"reader": "market1501", "source": {"path": "m"}, "reader_options": {"verify_images": True}},
     "verify_images and drop_bad are keys of the dataset itself"),
    ({"reader": "market1501", "source": {"path": "m"}, "reader_options": ["combine_val"]},
     "datasets.d.reader_options: expected a mapping"),
    ({"reader": "synthetic", "source": {"path": "m"}},
     "datasets.d.reader_options: reader synthetic needs num_cameras here (or a `generate:` section)"),
    ({"reader": "market1501", "generate": GENERATE},
     "datasets.d: `generate:` renders a synthetic set, read by reader synthetic, not 'market1501'"),
    ({"reader": "market1501", "source": {"path": "m"}, "drop_bad": True},
     "datasets.d.drop_bad: needs `verify_images: true`"),
    ({"reader": "market", "source": {"path": "m"}}, "datasets.d.reader: unknown reader 'market'"),
    ({"reader": "market1501", "path": "m"}, "datasets.d: unknown key(s) path"),
    ({"reader": "market1501"}, "datasets.d: give either `generate:` (synthetic) or `source:`"),
    ({"reader": "synthetic", "generate": GENERATE, "source": {"path": "m"}}, "not both"),
    ({"reader": "market1501", "source": {"path": "m"}, "verify_images": "no"},
     "datasets.d.verify_images: expected bool, got 'no'"),
    ({"reader": "market1501", "source": None},
     "datasets.d.source: expected a mapping with one of path, archive or url, got None"),
    ({"reader": "market1501", "source": {"path": "m", "subdir": None}},
     "datasets.d.source.subdir: got null (an empty value); give a value or leave the key out"),
    ({"reader": "synthetic", "generate": None}, "datasets.d.generate: expected a mapping of settings, got null"),
    ({"source": {"path": "m"}}, "datasets.d: missing required key 'reader'"),
    ({"reader": "synthetic", "generate": {**GENERATE, "num_train_idz": 3}},
     "datasets.d.generate: unknown key(s) num_train_idz; allowed: background_clutter, "),
    ({"reader": "synthetic", "generate": {**GENERATE, "num_train_ids": 0}},
     "datasets.d.generate.num_train_ids: must be in [1, 9998], got 0"),
    ({"reader": "synthetic", "generate": {**GENERATE, "camera_cast": "strong"}},
     "datasets.d.generate.camera_cast: expected float, got 'strong'"),
    ({"reader": "synthetic", "generate": {**GENERATE, "num_cameras": 2, "max_cameras_per_id": 3}},
     "datasets.d.generate.max_cameras_per_id: must not exceed num_cameras (2), as an identity appears"),
    ({"reader": "synthetic", "generate": ["seed"]}, "datasets.d.generate: expected a mapping"),
    ({"reader": "cuhk03_raw_labeled", "source": {"path": "c"}, "reader_options": {"protocol_dir": 3}},
     "datasets.d.reader_options.protocol_dir: expected a file or folder path, got 3"),
])
def test_bad_entries_name_the_key(cfg, message):
    with pytest.raises(ConfigError) as err:
        DatasetConfig.from_mapping("d", cfg)
    assert message in str(err.value)


def test_the_job_threads_verify_the_images():
    # prepare_dataset passes its threads to whichever reader the entry names.
    assert [name for name, reader in READERS.items() if "num_workers" not in inspect.signature(reader).parameters] == []
    dataset = DatasetConfig.from_mapping("d", {"reader": "msmt17", "source": {"path": "m"}, "verify_images": True})
    assert dataset.reader_arguments(workers=3)["num_workers"] == 3
    assert "num_workers" not in dataset.to_mapping().get("reader_options", {})  # never a reason to prepare again


def test_a_bad_source_names_its_key():
    with pytest.raises(SourceConfigError, match=r"datasets\.d\.source: unknown key\(s\) folder"):
        DatasetConfig.from_mapping("d", {"reader": "market1501", "source": {"folder": "m"}})


def test_good_entries_are_typed_with_their_reader_arguments():
    generated = DatasetConfig.from_mapping("d", {"reader": "synthetic", "generate": GENERATE})
    assert generated.generate == SyntheticSpec(**GENERATE) and generated.source is None
    # A generated set fixes the reader's camera count.
    assert generated.reader_arguments() == {"verify_images": False, "drop_bad": False, "num_workers": None,
                                            "num_cameras": generated.generate.num_cameras}
    folder = DatasetConfig.from_mapping("d", {"reader": "synthetic", "source": {"path": "s"},
                                              "reader_options": {"num_cameras": 6}})
    assert folder.source.kind == "path" and folder.reader_arguments()["num_cameras"] == 6
    cuhk = DatasetConfig.from_mapping("d", {"reader": "cuhk03_raw_labeled", "source": {"path": "c"},
                                            "verify_images": True, "drop_bad": True,
                                            "reader_options": {"protocol_dir": "p"}})
    assert cuhk.reader_arguments(2) == {"protocol_dir": "p", "verify_images": True, "drop_bad": True,
                                        "num_workers": 2}


@pytest.mark.parametrize("cfg, inputs", [
    ({"reader": "market1501", "source": {"archive": "data/m.zip"}}, []),
    ({"reader": "market1501", "source": {"path": "/data/Market"}}, ["/data/Market"]),
    ({"reader": "market1501", "source": {"url": "https://example.org/m.zip", "allow_download": True}}, []),
    ({"reader": "synthetic", "generate": GENERATE}, []),
    ({"reader": "cuhk03_raw_detected", "source": {"archive": "c.zip"},
      "reader_options": {"protocol_dir": "data/protocol", "images_dir": "out"}}, ["data/protocol"]),
])
def test_local_inputs_are_what_every_preparation_reads(cfg, inputs):
    # The workflow's inputs of prepare_dataset. Not an archive (it may be deleted once extracted),
    # a download, a generated set, or images_dir (written, not read).
    assert DatasetConfig.from_mapping("d", cfg).local_inputs() == [Path(p) for p in inputs]


def test_a_missing_archive_is_named_unless_it_was_extracted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = DatasetConfig.from_mapping("d", {"reader": "market1501", "source": {"archive": "m.zip", "md5": MD5}})
    with pytest.raises(FileNotFoundError, match=r"datasets\.d\.source\.archive: m\.zip does not exist, and "
                                                r"resources/datasets/m-65005ab7d12e holds no extraction of it"):
        check_archive_available(dataset)
    (tmp_path / "m.zip").write_bytes(b"")
    check_archive_available(dataset)
    (tmp_path / "m.zip").unlink()
    extraction_dir(dataset).mkdir(parents=True)
    (extraction_dir(dataset) / MARKER_NAME).write_text("{}")
    check_archive_available(dataset)


MD5 = "65005ab7d12ec1c44de4eeafe813e68a"


@pytest.mark.parametrize("implicit, explicit", [
    ({"reader": "synthetic", "generate": GENERATE},
     {"reader": "synthetic", "generate": {**GENERATE, "seed": 0, "num_cameras": 6}, "verify_images": False}),
    ({"reader": "msmt17", "source": {"path": "m"}},
     {"reader": "msmt17", "source": {"path": "./m", "allow_download": False}, "drop_bad": False,
      "reader_options": {"combine_val": True}}),
    ({"reader": "market1501", "source": {"archive": "a.zip", "md5": MD5.upper()}},
     {"reader": "market1501", "source": {"archive": "a.zip", "md5": MD5, "allow_download": False}}),
])
def test_defaults_written_out_give_the_same_mapping(implicit, explicit):
    # The workflow's rerun parameter: stating a default must not rerun the dataset.
    mapping = DatasetConfig.from_mapping("d", implicit).to_mapping()
    assert DatasetConfig.from_mapping("d", explicit).to_mapping() == mapping
    assert DatasetConfig.from_mapping("d", mapping).to_mapping() == mapping
    assert mapping != DatasetConfig.from_mapping("d", {**implicit, "verify_images": True}).to_mapping()


def test_an_entry_built_in_code_needs_exactly_one_of_generate_and_source():
    with pytest.raises(ConfigError, match=r"^give either `generate:` \(synthetic\) or `source:`"):
        DatasetConfig("d", "market1501")
    with pytest.raises(ConfigError, match="not both"):
        DatasetConfig("d", "synthetic", generate=SyntheticSpec(**GENERATE), source=DatasetSource(path=Path("s")))


def test_a_missing_source_folder_is_named_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = DatasetConfig.from_mapping("d", {"reader": "market1501", "source": {"path": "absent"}})
    with pytest.raises(FileNotFoundError, match=r"datasets\.d\.source\.path: dataset folder absent does not exist"):
        prepare_dataset(dataset, tmp_path / "work", tmp_path / "m.csv")
    assert not (tmp_path / "work").exists() and not (tmp_path / "m.csv").exists()
