"""The three-way merge, pure: no database, no Django."""

import pytest

from customersync.core.merge import merge

BASE = {"email": "a@example.com", "name": "Ann", "metadata": {"k": "1"}, "address": {"city": "Paris"}}


def state(**changes):
    return {**BASE, **changes}


def test_a_change_only_stripe_made_is_taken():
    result = merge(state(), state(name="Stripe Ann"), BASE)
    assert result.state["name"] == "Stripe Ann"
    assert (result.kept, result.conflicts) == ([], [])


def test_an_edit_only_made_here_is_kept():
    result = merge(state(email="local@example.com"), state(), BASE)
    assert result.state["email"] == "local@example.com"
    assert result.kept == ["email"] and result.conflicts == []


@pytest.mark.parametrize("remote_wins, expected", [(False, {"k": "local"}), (True, {"k": "remote"})])
def test_both_sides_changed_is_a_conflict_resolved_by_the_policy(remote_wins, expected):
    local, remote = state(metadata={"k": "local"}), state(metadata={"k": "remote"})
    result = merge(local, remote, BASE, remote_wins=remote_wins)
    assert result.conflicts == [("metadata", {"k": "local"}, {"k": "remote"})]
    assert result.state["metadata"] == expected


def test_both_sides_made_the_same_change_is_no_conflict():
    result = merge(state(name="Bo"), state(name="Bo"), BASE)
    assert (result.state["name"], result.kept, result.conflicts) == ("Bo", [], [])


def test_without_a_base_local_values_are_kept_and_nothing_conflicts():
    result = merge(state(name="Local"), state(name="Remote"), None)
    assert result.state["name"] == "Local" and result.kept == ["name"] and result.conflicts == []


def test_stripes_values_arrive_as_the_mirror_stores_them():
    remote = {"email": None, "metadata": None, "preferred_locales": None, "tax_exempt": None, "address": None}
    result = merge({}, remote, {})
    assert result.state["email"] == ""
    assert result.state["metadata"] == {} and result.state["preferred_locales"] == []
    assert result.state["tax_exempt"] == "none" and result.state["address"] is None


def test_a_local_value_equal_to_the_base_in_python_but_not_as_stripe_reads_it_is_an_edit():
    # True == 1 in Python, but Stripe is sent "True", not "1": an edit made here, and Stripe changed it too.
    result = merge(state(metadata={"k": True}), state(metadata={"k": "2"}), state(metadata={"k": 1}))
    assert result.conflicts == [("metadata", {"k": True}, {"k": "2"})]
