"""Test builders that speak the domain: sites with known factors, pools, fleets."""

from __future__ import annotations

from dataclasses import dataclass

from suanli.catalog import Pool, find_site
from suanli.metering import find_device


@dataclass(frozen=True)
class SiteValues:
    """A site reduced to the factors metering needs, with hand-picked round numbers."""

    id: str = "TEST"
    pue: float = 1.25
    grid_kgco2_per_kwh: float = 0.5
    green_share: float = 0.0


def a_site(**overrides: float | str) -> SiteValues:
    return SiteValues(**overrides)  # type: ignore[arg-type]


def a_pool(pool_id: str, site: str, device: str, count: int, free: int | None = None) -> Pool:
    return Pool(
        pool_id, find_site(site).id, find_device(device), count, count if free is None else free
    )


# ------------------------------------------------------------------------------------------
# scheduler builders: a_task().gpus(8).precision("bf16").from_("上海")


class TaskBuilder:
    """Fluent builder of scheduler tasks with sensible defaults (1 GPU, fp16, batch, 北京)."""

    def __init__(self, task_id: str = "t1") -> None:
        from suanli.metering import DeviceKind, Precision, WorkloadClass
        from suanli.scheduler import LatencyTier

        self._fields: dict[str, object] = {
            "id": task_id,
            "devices": 1,
            "device_kind": DeviceKind.GPU,
            "precision": Precision.FP16,
            "work_flop": 1e18,
            "origin": "北京",
            "latency_tier": LatencyTier.BATCH,
            "workload": WorkloadClass.GENERAL,
        }

    def _set(self, **fields: object) -> TaskBuilder:
        self._fields.update(fields)
        return self

    def id(self, task_id: str) -> TaskBuilder:
        return self._set(id=task_id)

    def gpus(self, n: int) -> TaskBuilder:
        from suanli.metering import DeviceKind

        return self._set(devices=n, device_kind=DeviceKind.GPU)

    def npus(self, n: int) -> TaskBuilder:
        from suanli.metering import DeviceKind

        return self._set(devices=n, device_kind=DeviceKind.NPU)

    def cpus(self, n: int) -> TaskBuilder:
        from suanli.metering import DeviceKind

        return self._set(devices=n, device_kind=DeviceKind.CPU)

    def precision(self, name: str) -> TaskBuilder:
        from suanli.metering import parse_precision

        return self._set(precision=parse_precision(name))

    def work(self, flop: float) -> TaskBuilder:
        return self._set(work_flop=flop)

    def training(self) -> TaskBuilder:
        from suanli.metering import WorkloadClass

        return self._set(workload=WorkloadClass.TRAINING)

    def from_(self, place: str) -> TaskBuilder:
        return self._set(origin=place)

    def tier(self, name: str) -> TaskBuilder:
        from suanli.scheduler import LatencyTier

        return self._set(latency_tier=LatencyTier(name))

    def models(self, *names: str) -> TaskBuilder:
        from suanli.metering import match_devices

        return self._set(device_models=frozenset(d.id for n in names for d in match_devices(n)))

    def memory(self, gb: float) -> TaskBuilder:
        return self._set(memory_gb=gb)

    def data(self, gb: float) -> TaskBuilder:
        return self._set(data_gb=gb)

    def data_at(self, place: str) -> TaskBuilder:
        return self._set(data_origin=place)

    def deadline(self, s: float) -> TaskBuilder:
        return self._set(deadline_s=s)

    def max_price(self, fen: int) -> TaskBuilder:
        return self._set(max_price_fen=fen)

    def only_in(self, *provinces: str) -> TaskBuilder:
        return self._set(allowed_provinces=frozenset(provinces))

    def deferrable(self) -> TaskBuilder:
        return self._set(deferrable=True)

    def build(self):
        from suanli.catalog import find_point
        from suanli.scheduler import Task

        fields = dict(self._fields)
        fields["origin"] = find_point(str(fields["origin"]))
        if fields.get("data_origin") is not None:
            fields["data_origin"] = find_point(str(fields["data_origin"]))
        return Task(**fields)  # type: ignore[arg-type]


def a_task(task_id: str = "t1") -> TaskBuilder:
    return TaskBuilder(task_id)


def a_pool_at(
    pool_id: str,
    site: str,
    device: str,
    count: int,
    price: int,
    *,
    free: int | None = None,
    energy_billed: bool = False,
) -> Pool:
    return Pool(
        pool_id,
        find_site(site).id,
        find_device(device),
        count,
        count if free is None else free,
        price,
        energy_billed,
    )


def a_snapshot(*pools: Pool, **kwargs: object):
    from suanli.scheduler import Snapshot

    sites = {p.site_id: find_site(p.site_id) for p in pools}
    return Snapshot(tuple(pools), sites, **kwargs)  # type: ignore[arg-type]
