"""`loaded_instance`: a model instance from hand-selected columns, the same as Django would load it."""

import pytest
from django.db import connection
from django.db.models import signals

from flows.models import Flow
from langrun.db import loaded_instance

pytestmark = pytest.mark.django_db

SELECTED = ("id", "user_id", "timeout", "max_attempts")


def _loaded(flow: Flow) -> Flow:
    return loaded_instance(Flow, **{name: getattr(flow, name) for name in SELECTED})


def test_it_is_the_row_django_would_load_with_only_those_fields(flow):
    mine = _loaded(flow)
    djangos = Flow.objects.only(*SELECTED).get(pk=flow.pk)
    assert type(mine) is Flow and mine == djangos
    assert mine.get_deferred_fields() == djangos.get_deferred_fields() != set()
    assert {name: getattr(mine, name) for name in SELECTED} == {name: getattr(djangos, name) for name in SELECTED}
    assert (mine._state.adding, mine._state.db) == (False, connection.alias)


def test_a_field_it_was_not_given_loads_with_a_query_of_its_own(flow, django_assert_num_queries):
    mine = _loaded(flow)
    with django_assert_num_queries(1):
        assert mine.name == flow.name
    with django_assert_num_queries(0):
        assert mine.name == flow.name
    with django_assert_num_queries(1):
        assert mine.user == flow.user  # a relation through its *_id


def test_saving_it_updates_the_row_and_never_inserts(flow):
    mine = _loaded(flow)
    mine.timeout = 7
    mine.save(update_fields=["timeout"])
    assert Flow.objects.count() == 1
    flow.refresh_from_db()
    assert flow.timeout == 7


def test_a_name_that_is_no_field_is_refused():
    with pytest.raises(TypeError, match="Flow has no field nmae"):
        loaded_instance(Flow, id=1, nmae="typo")


@pytest.mark.parametrize("signal", [signals.pre_init, signals.post_init])
def test_init_receivers_of_the_model_still_run(flow, signal):
    seen = []

    def receiver(sender, **kwargs):
        seen.append(sender)

    signal.connect(receiver, sender=Flow)
    try:
        mine = _loaded(flow)
    finally:
        signal.disconnect(receiver, sender=Flow)
    assert seen == [Flow]
    assert mine == flow and mine.timeout == flow.timeout and mine.get_deferred_fields() >= {"name"}
