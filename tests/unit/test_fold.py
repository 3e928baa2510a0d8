"""``_output.fold``: text longer than the terminal broken at spaces, never mid-word."""

from __future__ import annotations

from jobsys.cli._output import fold


def test_not_a_terminal_keeps_lines_whole() -> None:
    text = "word " * 40
    assert fold(text, None) == text


def test_breaks_at_spaces_with_a_hanging_indent() -> None:
    text = "failure 4 (job 3): skipped_authentication: retrying would burn the account"
    lines = fold(text, 30).split("\n")
    assert lines == [
        "failure 4 (job 3):",
        "  skipped_authentication:",
        "  retrying would burn the",
        "  account",
    ]
    assert all(len(line) <= 30 for line in lines)


def test_an_indented_line_hangs_under_itself_and_a_row_under_its_value() -> None:
    sample = "  sample: alpha bravo charlie delta echo foxtrot golf"
    assert fold(sample, 40) == "  sample: alpha bravo charlie delta echo\n    foxtrot golf"
    row = "title   one two three four five six seven eight nine ten"
    assert fold(row, 40, indent=8) == (
        "title   one two three four five six\n        seven eight nine ten"
    )


def test_a_word_longer_than_the_line_stays_whole() -> None:
    long = "x" * 50
    assert fold(f"see {long} here", 20) == f"see\n  {long}\n  here"


def test_short_lines_and_line_breaks_are_kept() -> None:
    assert fold("a b\n\nc  d", 80) == "a b\n\nc  d"


def test_a_deep_indent_gives_way_to_the_text() -> None:
    lines = fold("k" * 60 + " " + "one two three four five six seven", 70, indent=62)
    assert lines.split("\n")[1:] == ["  three four five six seven"]


def test_wide_characters_count_as_two_cells() -> None:
    assert fold("名前名前 名前名前", 10) == "名前名前\n  名前名前"
