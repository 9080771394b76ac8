"""Sensors: the landing-zone sensor, which starts runs by itself when files land, and the table-growth sensor,
which compacts the tables those runs grew."""

import dagster as dg

from lakehouse.settings import load_settings
from sensors.landing import build_landing_sensor
from sensors.table_growth import build_table_growth_sensor

_settings = load_settings()
defs = dg.Definitions(sensors=[build_landing_sensor(_settings), build_table_growth_sensor(_settings)])
