"""scripts/loop_figures.py's own parts: domain B, the doc table and the plot (the loop itself
is tested end to end in tests/integration/test_loop.py)."""

from __future__ import annotations

from pathlib import Path

from scripts.loop_figures import BAD, GOOD, domain_b, plot, table


def test_domain_b_is_distinct_balanced_and_labelled_by_its_phrase() -> None:
    rows = domain_b(400, seed=1400)
    assert len({r["text"] for r in rows}) == 400
    assert sum(r["label"] == "positive" for r in rows) == 200
    for row in rows:
        phrases = GOOD if row["label"] == "positive" else BAD
        assert any(f": {p}." in row["text"] for p in phrases), row
    assert domain_b(400, seed=1400) == rows
    assert not {r["text"] for r in domain_b(50, seed=9)} & {r["text"] for r in rows}


FIGURES = {
    "runs": [
        {
            "n": 200,
            "outcome": "promoted",
            "loop_wall_s": 600.0,
            "sets": {
                "test": {
                    "examples": 1275,
                    "champion": 82.0,
                    "candidate": 81.5,
                    "gain": -0.5,
                    "ci_low": -1.5,
                    "ci_high": 0.5,
                    "verdict": "pass",
                },
                "feedback_test": {
                    "examples": 41,
                    "champion": 60.0,
                    "candidate": 95.0,
                    "gain": 35.0,
                    "ci_low": 20.0,
                    "ci_high": 50.0,
                    "verdict": "pass",
                },
            },
            "swap": {"served": 700, "failed": 0},
        },
        {
            "n": 50,
            "outcome": "refused",
            "loop_wall_s": 90.0,
            "sets": {},
            "swap": {"served": 10, "failed": 1},
        },
    ]
}


def test_table_has_one_row_per_size_in_order_of_n() -> None:
    lines = table(FIGURES).splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| 50 |") and lines[2].endswith("| refused | 1.5 min | 10 / 1 |")
    assert "n=41, 60.0 → 95.0, +35.0 [+20.0, +50.0] (pass)" in lines[3]
    assert "82.0 → 81.5, -0.5 [-1.5, +0.5] (pass)" in lines[3]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "plots" / "gain.png"
    plot(FIGURES, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
