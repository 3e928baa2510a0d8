"""One "did you mean" for every name jobsys suggests (newuser L8): a shared namespace
does not make unrelated dotted names look alike."""

from __future__ import annotations

import pytest

from jobsys.errors import close_matches, did_you_mean, suggestion

TASKS = [
    "demo.ai_face_match",
    "demo.ai_metadata",
    "demo.ai_ocr",
    "demo.ai_visual_tags",
    "demo.process_account",
    "demo.refresh_profile",
    "demo.scan_recent_profile_posts",
    "demo.send_story_auto_replies",
    "demo.story.download",
    "demo.story.faces",
    "demo.story.ocr",
    "demo.sync_avatar",
    "jobsys.purge_retention",
    "jobsys.reap",
]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("demo.nosuch", []),
        ("demo.nosuch_task", []),
        ("demo.story.nosuch", []),
        ("demo.download_story", ["demo.story.download"]),
        ("demo.stroy.download", ["demo.story.download"]),
        ("demo.story.downlaod", ["demo.story.download"]),
        ("demo.story_ocr", ["demo.story.ocr"]),
        ("demo.ai.ocr", ["demo.ai_ocr"]),
        ("demo.refresh_profil", ["demo.refresh_profile"]),
        ("demo.send_story_auto_reply", ["demo.send_story_auto_replies"]),
        ("refresh_profile", ["demo.refresh_profile"]),
        ("jobsys.reep", ["jobsys.reap"]),
    ],
)
def test_dotted_names_are_compared_past_their_namespace(word: str, expected: list[str]) -> None:
    assert close_matches(word, TASKS) == expected


@pytest.mark.parametrize(
    ("word", "best"),
    [
        ("profils", "profiles"),
        ("sycn", "sync"),
        ("bse", "base"),
        ("ai_fase_queue", "ai_face_queue"),
    ],
)
def test_plain_names_still_match_as_before(word: str, best: str) -> None:
    names = ["sync", "profiles", "base", "ai_face_queue", "ai_ocr_queue", "avatars"]
    assert close_matches(word, names)[0] == best


def test_the_two_forms() -> None:
    assert did_you_mean("demo.nosuch", TASKS) == ""
    assert suggestion("demo.nosuch", TASKS) is None
    assert did_you_mean("jobsys.reep", TASKS) == " (did you mean 'jobsys.reap'?)"
    assert suggestion("jobsys.reep", TASKS) == "Did you mean 'jobsys.reap'?"
