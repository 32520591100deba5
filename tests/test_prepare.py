"""A `datasets:` entry is checked before any image is rendered, extracted or read."""

from __future__ import annotations

import pytest

from clusteralign.config import ConfigError
from clusteralign.pipeline.prepare import check_dataset_config, prepare_dataset

GENERATE = {"num_train_ids": 4, "num_test_ids": 4}


@pytest.mark.parametrize("cfg, message", [
    ({"reader": "market1501", "source": {"path": "m"}, "reader_options": {"foo": 1}},
     "datasets.d.reader_options: unknown option(s) foo; reader market1501 accepts none"),
    ({"reader": "msmt17", "source": {"path": "m"}, "reader_options": {"combine_vall": False}},
     "unknown option(s) combine_vall; reader msmt17 accepts combine_val, num_workers"),
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
])
def test_bad_entries_name_the_key(cfg, message):
    with pytest.raises(ConfigError) as err:
        check_dataset_config("d", cfg)
    assert message in str(err.value)


def test_good_entries_pass_with_their_options():
    assert check_dataset_config("d", {"reader": "synthetic", "generate": GENERATE}) == {}
    assert check_dataset_config("d", {"reader": "synthetic", "source": {"path": "s"},
                                      "reader_options": {"num_cameras": 6}}) == {"num_cameras": 6}
    assert check_dataset_config("d", {"reader": "cuhk03_raw_labeled", "source": {"path": "c"}, "verify_images": True,
                                      "drop_bad": True, "reader_options": {"protocol_dir": "p"}}) == {"protocol_dir": "p"}


def test_nothing_is_rendered_for_a_bad_entry(tmp_path):
    with pytest.raises(ConfigError, match="generate"):
        prepare_dataset("d", {"reader": "market1501", "generate": GENERATE}, tmp_path / "work", tmp_path / "m.csv")
    assert not (tmp_path / "work").exists() and not (tmp_path / "m.csv").exists()
