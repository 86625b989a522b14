"""The hourly price and carbon series of the decision step: one construction for the live
platform and the twin, so that both price by the same time of use and the same carbon.

* **Energy price**: each hour's multiplier of the site's electricity price, from its province's
  time-of-use windows (`catalog.tariffs.tou_schedule(province).hourly(month)`); flat (1.0) for
  a province without published windows.
* **Carbon intensity**: the site's annual grid factor times a documented daily shape
  (`carbon_shape`), because no hourly carbon data for China's provinces is public here: in the
  west (Inner Mongolia, Ningxia, Gansu, Guizhou, Sichuan, Chongqing) the intensity dips by up
  to 25% around solar noon (a cosine between 07:00 and 19:00) and rises at night so that the
  day's mean equals the annual factor; eastern sites are flat. Where the operator feeds a
  province's observed intensity, the live platform replaces its sites' carbon with the
  observations and their forecast (`services.carbon`).

Series start at local midnight (China Standard Time, UTC+8): `series_start(clock_s)` gives the
midnight at or before a scheduler-clock moment, the local hour there (0) and the month whose
tariff applies. Pure: no I/O beyond the catalog's shipped data, no clock of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np

from suanli.catalog import Site
from suanli.catalog.tariffs import tou_schedule
from suanli.scheduler.model import FloatArray, SiteSeries

WEST_PROVINCES = frozenset({"内蒙古", "宁夏", "甘肃", "贵州", "四川", "重庆"})
SOLAR_DIP = 0.25  # the western midday dip of carbon intensity: an ESTIMATE
SERIES_DAYS = 2  # the engine repeats a series with its own length
CHINA_UTC_OFFSET_S = 8 * 3600  # China Standard Time, no daylight saving
DAY_S = 86400


def carbon_shape(province: str, hours: int = 24) -> FloatArray:
    """Multipliers of the annual factor for each hour of a day (mean exactly 1)."""
    if province not in WEST_PROVINCES:
        return np.ones(hours)
    h = np.arange(hours) % 24
    sun = np.where((h >= 7) & (h < 19), np.cos((h - 13) / 6 * (math.pi / 2)), 0.0)
    sun = np.clip(sun, 0.0, None)
    dip = 1.0 - SOLAR_DIP * sun
    shaped: FloatArray = dip / dip.mean()
    return shaped


def site_series(site: Site, month: int, days: int = SERIES_DAYS) -> SiteSeries:
    """`days` x 24 hourly values from local midnight of a day in `month` (1..12)."""
    province = site.provinces[0]
    schedule = tou_schedule(province)
    energy = np.tile(schedule.hourly(month), days) if schedule is not None else np.ones(24 * days)
    carbon = site.grid_kgco2_per_kwh * carbon_shape(province, 24 * days)
    return SiteSeries(energy, carbon)


def network_series(
    sites: Mapping[str, Site], month: int, days: int = SERIES_DAYS
) -> dict[str, SiteSeries]:
    """Site id -> its series (`site_series`)."""
    return {sid: site_series(site, month, days) for sid, site in sites.items()}


def series_start(clock_s: float) -> tuple[float, float, int]:
    """(series_start_s, local_hour_at_start, month) for a scheduler-clock moment (seconds since
    the Unix epoch, UTC): the local (UTC+8) midnight at or before it, hour 0, and that day's
    month, whose tariff the series use."""
    local_s = clock_s + CHINA_UTC_OFFSET_S
    midnight_local = math.floor(local_s / DAY_S) * DAY_S
    month = datetime.fromtimestamp(midnight_local, UTC).month
    return float(midnight_local - CHINA_UTC_OFFSET_S), 0.0, month
