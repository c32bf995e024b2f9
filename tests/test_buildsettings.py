"""Bulk-load settings of a building index and what goes back before the swap (pure)."""

from __future__ import annotations

from replay.buildsettings import building_body, restored


def test_a_build_has_no_replicas_and_no_refresh_whatever_the_mapping_says():
    for settings in ({}, {"number_of_replicas": 2}, {"index": {"number_of_replicas": 2, "refresh_interval": "5s"}},
                     {"index.number_of_replicas": "2"}):
        body, _ = building_body({"settings": settings, "mappings": {}})
        assert body["settings"] == {"index": {"refresh_interval": "-1", "number_of_replicas": 0}}


def test_the_mapping_wins_then_the_replaced_index_then_the_cluster_default():
    _, asked = building_body({"settings": {"index": {"number_of_replicas": 2, "refresh_interval": "5s"}}})
    assert restored(asked, {"number_of_replicas": "1"}) == {"index": {"refresh_interval": "5s", "number_of_replicas": 2}}
    _, silent = building_body({})
    assert restored(silent, {"number_of_replicas": "3", "refresh_interval": "9s"}) == \
        {"index": {"refresh_interval": None, "number_of_replicas": "3"}}
    assert restored(silent, None) == {"index": {"refresh_interval": None, "number_of_replicas": None}}


def test_the_callers_body_is_not_changed():
    mine = {"settings": {"number_of_replicas": 2}}
    building_body(mine)
    assert mine == {"settings": {"number_of_replicas": 2}}
