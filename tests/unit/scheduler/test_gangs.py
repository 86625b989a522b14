"""Gang tasks: `devices` split over `nodes` distinct nodes of one pool, placed whole or not at
all, on pools whose node size is known (`Pool.devices_per_node`)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from suanli.errors import InvalidValue
from suanli.scheduler import POLICIES, Action, Capacity, PoolCapacity, QueuedTask, decide, place
from suanli.scheduler.tasks import engine_task
from suanli.specs import MAX_DEVICES, check_task_spec, total_devices
from tests.builders import a_pool_at, a_snapshot, a_task

COST = POLICIES["cost"]


def nodes_of(pool, per_node: int):
    return replace(pool, devices_per_node=per_node)


def gang(ident: str, nodes: int, per_node: int):
    return replace(a_task(ident).gpus(nodes * per_node).work(1e15).build(), nodes=nodes)


def test_a_gang_goes_only_where_it_fits_node_by_node() -> None:
    # 'cheap' has 16 GPUs as one node of 16 (a gang of 2 cannot span it); 'dear' two nodes of 4
    snapshot = a_snapshot(
        nodes_of(a_pool_at("cheap", "ZJK", "H800", 16, 100), 16),
        nodes_of(a_pool_at("dear", "YRD_DEMO", "H800", 8, 300), 4),
    )
    plan = place([gang("g", 2, 4)], snapshot, COST, 0.0)
    (placement,) = plan.placements
    assert placement.pool == "dear"  # the dearer pool: the cheaper has one node
    # the same 8 GPUs on one node fit only the 16-GPU node
    plan = place([gang("one", 1, 8)], snapshot, COST, 0.0)
    assert [p.pool for p in plan.placements] == ["cheap"]


def test_a_gang_larger_than_every_pool_is_unplaced_with_the_reason() -> None:
    # both pools hold 12 GPUs or more, but neither has 3 nodes of 4
    snapshot = a_snapshot(
        nodes_of(a_pool_at("a", "ZJK", "H800", 16, 100), 8),
        nodes_of(a_pool_at("b", "YRD_DEMO", "H800", 12, 300), 12),
    )
    plan = place([gang("g", 3, 4)], snapshot, COST, 0.0)
    (unplaced,) = plan.unplaced
    assert unplaced.reasons == {"nodes": 2}
    assert "on 3 nodes (4 each)" in unplaced.sentence and "nodes ruled out 2" in unplaced.sentence


def test_decide_queues_a_gang_no_pool_can_hold_and_places_one_that_fits() -> None:
    snapshot = a_snapshot(nodes_of(a_pool_at("p", "ZJK", "H800", 8, 100), 4))
    free = Capacity({"p": PoolCapacity(8)})
    too_big, fits = gang("big", 4, 4), gang("fits", 2, 4)
    decisions = decide([QueuedTask(too_big, 0.0), QueuedTask(fits, 0.0)], snapshot, free, COST, 0)
    by_task = {d.task: d for d in decisions}
    assert by_task["fits"].action is Action.PLACE and by_task["fits"].pool == "p"
    assert by_task["big"].action is Action.QUEUE and by_task["big"].pool is None
    assert "nodes" in by_task["big"].reason


def test_a_gang_waits_while_its_pool_has_too_few_free_devices() -> None:
    snapshot = a_snapshot(nodes_of(a_pool_at("p", "ZJK", "H800", 8, 100), 4))
    (d,) = decide(
        [QueuedTask(gang("g", 2, 4), 0.0)],
        snapshot,
        Capacity({"p": PoolCapacity(8, held=1)}),
        COST,
        0,
    )
    assert d.action is Action.QUEUE and "free capacity" in d.reason


def test_pools_without_a_node_size_take_a_gang_whole_as_before() -> None:
    snapshot = a_snapshot(a_pool_at("p", "ZJK", "H800", 8, 100))
    assert [p.pool for p in place([gang("g", 2, 4)], snapshot, COST, 0.0).placements] == ["p"]


def test_nodes_must_divide_the_devices_and_a_node_size_fit_its_pool() -> None:
    with pytest.raises(InvalidValue, match="nodes"):
        replace(a_task().gpus(6).build(), nodes=4)
    with pytest.raises(InvalidValue, match="nodes"):
        replace(a_task().gpus(2).build(), nodes=0)
    with pytest.raises(InvalidValue, match="devices_per_node"):
        nodes_of(a_pool_at("p", "ZJK", "H800", 8, 100), 9)


def _spec(**resources: object) -> dict[str, object]:
    return {
        "executors": [{"command": ["true"]}],
        "resources": {"device_kind": "gpu", "precision": "fp16", **resources},
    }


def test_a_spec_asks_devices_on_each_node() -> None:
    spec = _spec(devices=4, nodes=2)
    check_task_spec(spec)
    assert total_devices(spec) == 8
    task = engine_task("g", spec, 0.0)
    assert (task.devices, task.nodes) == (8, 2)
    # the default is one node, as before
    single = _spec(devices=4)
    check_task_spec(single)
    assert total_devices(single) == 4 and engine_task("s", single, 0.0).nodes == 1


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"devices": 1, "nodes": 0}, "nodes"),
        ({"devices": 1, "nodes": 1025}, "nodes"),
        ({"devices": MAX_DEVICES, "nodes": 2}, "resources"),
    ],
)
def test_a_spec_with_bad_nodes_is_refused_by_name(resources, field) -> None:
    with pytest.raises(InvalidValue) as caught:
        check_task_spec(_spec(**resources))
    assert field in str(caught.value)
