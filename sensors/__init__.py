"""Sensors: the landing-zone sensor, which starts runs by itself when files land."""

import dagster as dg

from lakehouse.settings import load_settings
from sensors.landing import build_landing_sensor

defs = dg.Definitions(sensors=[build_landing_sensor(load_settings())])
