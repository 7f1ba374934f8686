"""`benchmarks.server_load`'s client lag: which interims it times, and from which packet."""

from __future__ import annotations

from benchmarks.load_clients import timed_packet

SOLO = {"we": 4, "we measure": 11, "we measured the": 19}  # text -> packet it came after, alone


def test_an_interim_is_timed_from_the_packet_its_text_came_after_in_the_solo_run():
    assert timed_packet(SOLO, "we", -1) == 4
    assert timed_packet(SOLO, "we measure", 4) == 11
    assert timed_packet(SOLO, "we measure", 11) == 11  # the same text again: still that packet


def test_a_text_the_solo_run_never_showed_or_showed_earlier_is_not_timed():
    assert timed_packet(SOLO, "wee", -1) is None
    # after "we measured the" (packet 19) the text went back to "we": timed from packet 4 it
    # would read as 15 packets (300 ms) of lag that no audio waited for
    assert timed_packet(SOLO, "we", 19) is None
