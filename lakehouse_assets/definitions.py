"""The one Dagster entry point: merges each layer's definitions with the resources of the chosen environment."""

from __future__ import annotations

import dagster as dg

from lakehouse.settings import load_settings
from lakehouse_assets import bronze, checks, gold, maintenance, operations, silver
from resources import resources_for
import sensors

settings = load_settings()  # the environment is chosen here, from LAKEHOUSE_ENV, and nowhere else

defs = dg.Definitions.merge(
    bronze.defs,
    silver.defs,
    gold.defs,
    checks.defs,
    operations.defs,
    maintenance.defs,
    sensors.defs,
    dg.Definitions(
        resources=resources_for(settings),
        # One process per run: every asset shares one Spark session (start-up is paid once per run).
        executor=dg.in_process_executor,
    ),
)
