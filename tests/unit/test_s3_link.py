"""The chaos soak's S3 partition lever (devstack.services.S3Link), against a recorded API."""

from __future__ import annotations

from devstack.services import HEAL_TIMEOUT_S, PARTITION_TOXICS, STREAM_S3_LINK, S3Link


class Recorded(S3Link):
    def __init__(self, toxics: list[str]) -> None:
        self.toxics = toxics
        self.calls: list[tuple[str, str, float]] = []

    def api(self, ctx, method, path, body=None, timeout=5):  # type: ignore[override]
        self.calls.append((method, path, timeout))
        if method == "GET":
            return {STREAM_S3_LINK: {"toxics": [{"name": n} for n in self.toxics]}}
        return {}


def test_heal_lets_the_held_answers_go_before_the_held_requests_and_waits_for_the_flush():
    """Requests released first would be answered into the still-held downstream, and
    Toxiproxy stalls 5 s on each held chunk of a client that hung up: downstream goes first,
    and the API is given the time its flush takes."""
    link = Recorded([*PARTITION_TOXICS, "someone_elses"])
    link.heal(ctx=None)  # type: ignore[arg-type]
    deletes = [
        (path.rsplit("/", 1)[1], timeout) for m, path, timeout in link.calls if m == "DELETE"
    ]
    assert deletes == [
        ("partition_downstream", HEAL_TIMEOUT_S),
        ("partition_upstream", HEAL_TIMEOUT_S),
    ]


def test_heal_of_a_link_without_a_partition_deletes_nothing():
    link = Recorded(["someone_elses"])
    link.heal(ctx=None)  # type: ignore[arg-type]
    assert [m for m, _, _ in link.calls] == ["GET"]
