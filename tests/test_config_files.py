"""Config files are read strictly before Snakemake reads them: plain data, every key once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clusteralign.pipeline.config_files import ConfigFileError, check_config_file, check_config_files

ROOT = Path(__file__).resolve().parents[1]


def refused(tmp_path: Path, text: str, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigFileError) as err:
        check_config_file(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_the_projects_own_config_files_pass():
    for path in [ROOT / "config.yaml", ROOT / "tests/config/tiny.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]:
        check_config_file(path)


def test_a_key_given_twice_is_refused_naming_it_and_both_lines(tmp_path):
    # PyYAML, and with it Snakemake, keeps the last value without a word.
    text = "experiments:\n  tiny:\n    stage1:\n      epochs: 2\n      seed: 1\n      epochs: 200\n"
    assert yaml.safe_load(text)["experiments"]["tiny"]["stage1"]["epochs"] == 200
    message = refused(tmp_path, text)
    assert "experiments.tiny.stage1.epochs is given twice, on lines 4 and 6" in message


def test_equal_keys_in_different_mappings_and_merge_overrides_are_fine(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("a: &base {lr: 1, seed: 2}\nb:\n  <<: *base\n  lr: 3\nc: {lr: 1}\n")
    check_config_file(path)


def test_keys_that_read_as_the_same_value_are_the_same_key(tmp_path):
    # 0x10 and 16 are both the integer 16 once read.
    assert "16 is given twice, on line 1" in refused(tmp_path, "{16: a, 0x10: b}\n")


def test_a_json_key_given_twice_is_refused(tmp_path):
    message = refused(tmp_path, '{"report": {"title": "a", "title": "b"}}', "config.json")
    assert "report.title is given twice, on line 1, columns 13 and 27" in message


def test_json_that_yaml_cannot_read_is_still_checked(tmp_path):
    # A tab before a value is fine in JSON, not in YAML 1.1.
    path = tmp_path / "config.json"
    path.write_text('{\n\t"report":\t{"title": "a"}\n}')
    check_config_file(path)
    path.write_text('{\n\t"report":\t{"title": "a", "title": "b"}\n}')
    with pytest.raises(ConfigFileError, match="'title' is given twice in one object"):
        check_config_file(path)


@pytest.mark.parametrize("tag, line", [
    ('!!python/object/apply:os.system ["echo hi"]', "!!python/object/apply:os.system"),
    ("!!python/name:os.system", "!!python/name:os.system"),
    ("!!python/tuple [1, 2]", "!!python/tuple"),
    ("!custom 3", "!custom"),
])
def test_tags_beyond_plain_data_are_refused_naming_the_tag_and_line(tmp_path, tag, line):
    message = refused(tmp_path, f"report:\n  retrieval_examples: 3\n  title: {tag}\n")
    assert f"line 3: report.title has the tag {line}, which is not allowed" in message


def test_yaml_own_types_written_as_tags_are_fine(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("report: {title: !!str 12, retrieval_examples: !!int '3'}\n")
    check_config_file(path)


def test_yte_templating_is_refused_before_anything_is_evaluated(tmp_path):
    marker = tmp_path / "ran"
    text = (f"__use_yte__: true\nreport:\n  title: ?__import__('pathlib').Path({str(marker)!r}).touch()\n")
    message = refused(tmp_path, text)
    assert "line 1: __use_yte__ turns on Snakemake's YTE templating" in message
    assert not marker.exists()
    # Switched off, the key does nothing (YTE removes it); the typed check then names it.
    path = tmp_path / "off.yaml"
    path.write_text("__use_yte__: false\nreport: {title: t}\n")
    check_config_file(path)


@pytest.mark.parametrize("text, needle", [
    ("a:\n\tb: 1\n", "line 2, column 1: not valid YAML: found character '\\t' that cannot start any token"),
    ("a: [1, 2\n", "not valid YAML"),
    ("a: 1\n---\nb: 2\n", "not valid YAML: but found another document"),
    ("", "expected a mapping of datasets, models and experiments at the top level, got nothing"),
    ("- 1\n", "at the top level, got a list"),
    ("just text\n", "at the top level, got the value 'just text'"),
])
def test_syntax_errors_and_other_top_levels_are_one_line(tmp_path, text, needle):
    assert needle in refused(tmp_path, text)


def test_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"title: \xff\n")
    with pytest.raises(ConfigFileError, match="cannot be read as UTF-8 text"):
        check_config_file(path)


def test_aliases_are_visited_once(tmp_path):
    # "Billion laughs": nine levels of ten aliases each would be 10**9 visits if followed.
    lines = ["l0: &l0 [x]"] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    check_config_file(path)


def test_check_config_files_leaves_a_missing_file_to_snakemake(tmp_path):
    check_config_files([tmp_path / "absent.yaml"])
    (tmp_path / "bad.yaml").write_text("a: 1\na: 2\n")
    with pytest.raises(ConfigFileError):
        check_config_files([tmp_path / "absent.yaml", tmp_path / "bad.yaml"])
