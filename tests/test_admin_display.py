"""The pending-changes panel's rows: the parts of an object that change, a note for the rest, lists in one row."""

from __future__ import annotations

from customersync.admin_params import Row, change_rows, sent_lines
from customersync.params import Role

ADDRESS = {"city": "Paris", "country": "FR", "line1": "1 rue de Rivoli", "postal_code": "75001"}


def test_an_object_sent_whole_shows_the_parts_that_change_and_names_the_others():
    confirmed = {"address": {**ADDRESS, "line2": "Apt 4"}}
    params = {
        "address": {"city": "Lyon", "country": "FR", "line1": "1 rue de Rivoli", "line2": "", "postal_code": "75001"}
    }
    assert change_rows(confirmed, params) == [
        Row("address[city]", "Paris", "Lyon"),
        Row("address[line2]", "Apt 4", ""),
        Row("address", None, None, whole=["country", "line1", "postal_code"]),
    ]


def test_nested_objects_lists_metadata_and_write_once_values():
    confirmed = {
        "shipping": {"name": "Ann", "address": {"city": "Paris", "country": "FR"}},
        "preferred_locales": ["en"],
        "metadata": {"a": "1"},
    }
    params = {
        "shipping": {"name": "Ann", "address": {"city": "Lyon", "country": "FR"}},
        "preferred_locales": ["fr", "en"],
        "metadata": {"a": ""},
        "tax": {"ip_address": "192.0.2.1"},
    }
    assert change_rows(confirmed, params) == [
        Row("shipping[address][city]", "Paris", "Lyon"),
        Row("shipping", None, None, whole=["name", "address[country]"]),
        Row("preferred_locales", ["en"], ["fr", "en"]),
        Row("metadata[a]", "1", ""),
        Row("tax[ip_address]", None, "192.0.2.1", Role.WRITE_ONCE),
    ]
    assert change_rows({"address": ADDRESS}, {"address": ""}) == [Row("address", ADDRESS, "")]
    assert sent_lines(params) == [
        ("shipping", params["shipping"], True),
        ("preferred_locales", ["fr", "en"], False),
        ("metadata[a]", "", False),
        ("tax[ip_address]", "192.0.2.1", False),
    ]
