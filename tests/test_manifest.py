"""The manifest contract: building, relabelling, CSV round trip and every validation error."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from clusteralign.data.errors import DatasetError, ManifestError, ManifestMissingError
from clusteralign.data.manifest import (
    COLUMNS,
    build_manifest,
    log_summary,
    read_manifest,
    summarize,
    write_manifest,
)

TRAIN = [
    ("d/t/0011_a.jpg", 11, 1),
    ("d/t/0002_a.jpg", 2, 3),
    ("d/t/0011_b.jpg", 11, 2),
    ("d/t/0007_a.jpg", 7, 1),
]
QUERY = [("d/q/0003_a.jpg", 3, 1), ("d/q/0005_a.jpg", 5, 2)]
GALLERY = [
    ("d/g/0003_b.jpg", 3, 2),
    ("d/g/0005_b.jpg", 5, 4),
    ("d/g/0000_a.jpg", 0, 1),
    ("d/g/0000_b.jpg", 0, 6),
]

HEADER = "path,pid,camid,split,label\n"
GOOD_ROWS = [
    "a/1.jpg,2,1,train,0",
    "a/2.jpg,7,2,train,1",
    "a/3.jpg,2,3,train,0",
    "b/1.jpg,3,1,query,-1",
    "c/1.jpg,3,2,gallery,-1",
    "c/2.jpg,0,4,gallery,-1",
]


def write_csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text(header + "\n".join(rows) + "\n")
    return path


def replaced(row: int, line: str) -> list[str]:
    rows = list(GOOD_ROWS)
    rows[row] = line
    return rows


def test_build_relabels_train_in_sorted_pid_order() -> None:
    df = build_manifest(TRAIN, QUERY, GALLERY)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == len(TRAIN) + len(QUERY) + len(GALLERY)
    train = df[df["split"] == "train"]
    assert dict(zip(train["pid"], train["label"])) == {2: 0, 7: 1, 11: 2}
    # Record order is kept within each split.
    assert train["path"].tolist() == [p for p, _, _ in TRAIN]
    assert (df.loc[df["split"] != "train", "label"] == -1).all()
    assert df["split"].tolist() == ["train"] * 4 + ["query"] * 2 + ["gallery"] * 4
    for column in ("pid", "camid", "label"):
        assert df[column].dtype == "int64"


def test_build_rejects_junk_and_misplaced_distractors() -> None:
    with pytest.raises(ManifestError, match=r"pid.*junk.*\[d/g/x\.jpg\]: pid=-1"):
        build_manifest(TRAIN, QUERY, GALLERY + [("d/g/x.jpg", -1, 1)])
    with pytest.raises(ManifestError, match=r"distractors.*gallery.*d/q/0000\.jpg"):
        build_manifest(TRAIN, QUERY + [("d/q/0000.jpg", 0, 1)], GALLERY)
    with pytest.raises(ManifestError, match=r"distractors.*d/t/0000\.jpg"):
        build_manifest(TRAIN + [("d/t/0000.jpg", 0, 1)], QUERY, GALLERY)


def test_build_rejects_empty_split_and_bad_camera() -> None:
    with pytest.raises(ManifestError, match="'query' split has no rows"):
        build_manifest(TRAIN, [], GALLERY)
    with pytest.raises(ManifestError, match=r"camid.*1-based.*d/q/c0\.jpg\]: camid=0"):
        build_manifest(TRAIN, QUERY + [("d/q/c0.jpg", 3, 0)], GALLERY)


def test_build_rejects_a_test_set_where_no_query_can_be_evaluated() -> None:
    same_camera = [("d/g/0003_b.jpg", 3, 1), ("d/g/0005_b.jpg", 5, 2), ("d/g/0000_a.jpg", 0, 1)]
    other_ids = [("d/g/0004_b.jpg", 4, 2), ("d/g/0006_b.jpg", 6, 4)]
    for gallery in (same_camera, other_ids):
        with pytest.raises(ManifestError, match=r"none of the 2 query images has a gallery image of its identity "
                                                r"from another camera"):
            build_manifest(TRAIN, QUERY, gallery)
    # One query that can be evaluated is enough (the ranker skips the others, with a warning).
    assert len(build_manifest(TRAIN, QUERY, same_camera + [("d/g/0005_c.jpg", 5, 3)])) == 10


def test_round_trip_is_exact_and_leaves_no_temporary(tmp_path: Path) -> None:
    df = build_manifest(TRAIN, QUERY, GALLERY)
    target = tmp_path / "out" / "manifest.csv"
    write_manifest(df, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["manifest.csv"]
    back = read_manifest(target)
    pd.testing.assert_frame_equal(back, df)
    assert target.read_text().splitlines()[0] == "path,pid,camid,split,label"


def test_write_validates_before_touching_the_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.csv"
    write_manifest(build_manifest(TRAIN, QUERY, GALLERY), target)
    before = target.read_bytes()
    bad = build_manifest(TRAIN, QUERY, GALLERY)
    bad.loc[0, "label"] = 5
    with pytest.raises(ManifestError, match=str(target)):
        write_manifest(bad, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]


def test_read_good_csv(tmp_path: Path) -> None:
    df = read_manifest(write_csv(tmp_path / "m.csv", GOOD_ROWS))
    assert df["label"].tolist() == [0, 1, 0, -1, -1, -1]
    assert df["path"].tolist()[0] == "a/1.jpg"
    # Columns in another order in the file come back in contract order.
    shuffled = ["pid,path,label,split,camid"] + [
        ",".join([r.split(",")[1], r.split(",")[0], r.split(",")[4], r.split(",")[3], r.split(",")[2]])
        for r in GOOD_ROWS
    ]
    again = read_manifest(write_csv(tmp_path / "s.csv", shuffled[1:], header=shuffled[0] + "\n"))
    pd.testing.assert_frame_equal(again, df)


def test_read_missing_file_and_empty_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(ManifestMissingError, match="nope.csv.*does not exist") as info:
        read_manifest(missing)
    assert isinstance(info.value, FileNotFoundError)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ManifestError, match="empty.csv.*is empty"):
        read_manifest(empty)


def test_read_wrong_columns(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "m.csv", [r.rsplit(",", 1)[0] for r in GOOD_ROWS], header="path,pid,camid,split\n"
    )
    with pytest.raises(ManifestError, match=r"m\.csv.*missing \['label'\]"):
        read_manifest(path)
    path = write_csv(
        tmp_path / "x.csv", [r + ",1" for r in GOOD_ROWS], header="path,pid,camid,split,label,frame\n"
    )
    with pytest.raises(ManifestError, match=r"x\.csv.*unexpected \['frame'\]"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("row", "line", "pattern"),
    [
        (1, "a/2.jpg,seven,2,train,1", r"column 'pid'.*integer.*row 1 \(line 3\) \[a/2\.jpg\]: pid='seven'"),
        (4, "c/1.jpg,3,2.5,gallery,-1", r"column 'camid'.*integer.*row 4 \(line 6\)"),
        (
            3,
            "b/1.jpg,3,1,probe,-1",
            r"column 'split'.*\['train', 'query', 'gallery'\].*row 3 \(line 5\) \[b/1\.jpg\]: split='probe'",
        ),
        (3, "b/1.jpg,3,0,query,-1", r"column 'camid'.*>= 1.*row 3"),
        (3, "b/1.jpg,-1,1,query,-1", r"column 'pid'.*junk.*row 3"),
        (
            3,
            "b/1.jpg,0,1,query,-1",
            r"column 'pid'.*distractors \(pid 0\) may only appear in the gallery.*row 3",
        ),
        (4, "c/1.jpg,3,2,gallery,0", r"column 'label'.*label -1.*row 4"),
        (1, "a/2.jpg,7,2,train,2", r"column 'label'.*0\.\.1.*row 1"),
        (1, "a/2.jpg,7,2,train,0", r"train label 0 maps to several pids"),
        (2, "a/3.jpg,2,3,train,1", r"train pid 2 maps to several labels"),
        (1, ",7,2,train,1", r"column 'path'.*non-empty.*row 1"),
        (2, "a/1.jpg,2,3,train,0", r"same image is listed twice.*row 2.*a/1\.jpg"),
    ],
)
def test_read_bad_values_name_file_column_and_row(tmp_path: Path, row: int, line: str, pattern: str) -> None:
    path = write_csv(tmp_path / "bad.csv", replaced(row, line))
    with pytest.raises(ManifestError, match=pattern) as info:
        read_manifest(path)
    assert str(path) in str(info.value)


def test_read_labels_must_be_a_bijection_onto_0_to_n(tmp_path: Path) -> None:
    rows = ["a/1.jpg,2,1,train,0", "a/2.jpg,7,2,train,2", "a/3.jpg,9,3,train,1"] + GOOD_ROWS[3:]
    read_manifest(write_csv(tmp_path / "ok.csv", rows))  # any bijection onto 0..N-1 is accepted
    rows = ["a/1.jpg,2,1,train,0", "a/2.jpg,7,2,train,2"] + GOOD_ROWS[3:]
    with pytest.raises(ManifestError, match=r"gap\.csv.*0\.\.1.*a/2\.jpg\]: label=2"):
        read_manifest(write_csv(tmp_path / "gap.csv", rows))
    rows = ["a/1.jpg,2,1,train,0", "a/2.jpg,7,2,train,0"] + GOOD_ROWS[3:]
    with pytest.raises(ManifestError, match="several pids"):
        read_manifest(write_csv(tmp_path / "dup.csv", rows))


def test_read_empty_split(tmp_path: Path) -> None:
    rows = [r for r in GOOD_ROWS if ",query," not in r]
    with pytest.raises(ManifestError, match=r"e\.csv.*'query' split has no rows"):
        read_manifest(write_csv(tmp_path / "e.csv", rows))


def test_errors_are_value_errors() -> None:
    assert issubclass(ManifestError, DatasetError) and issubclass(DatasetError, ValueError)


def test_summarize_and_log(caplog: pytest.LogCaptureFixture) -> None:
    df = build_manifest(TRAIN, QUERY, GALLERY)
    table = summarize(df)
    assert table.index.tolist() == ["train", "query", "gallery"]
    assert table.loc["train"].to_dict() == {"identities": 3, "images": 4, "cameras": 3, "distractors": 0}
    assert table.loc["query"].to_dict() == {"identities": 2, "images": 2, "cameras": 2, "distractors": 0}
    assert table.loc["gallery"].to_dict() == {"identities": 2, "images": 4, "cameras": 4, "distractors": 2}
    logger = logging.getLogger("test.manifest")
    with caplog.at_level(logging.INFO, logger="test.manifest"):
        log_summary(df, logger, "tiny")
    text = caplog.text
    assert "tiny: 10 images" in text and "identities" in text and "gallery" in text
