"""Every asset materialised with the asset checks left out: issue 14's "within 1.2x with checks left out".

    LAKEHOUSE_HOME=... DAGSTER_HOME=... python bench/materialize_without_checks.py

What `dagster asset materialize --select '*'` runs (in process, on the instance DAGSTER_HOME names, with the same
step log), selected with `AssetSelection.all().without_checks()`: the steps skip their in-step checks, nothing
else changes. For measuring only; a user's runs always carry the checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # noqa: E402

from lakehouse_assets.definitions import defs  # noqa: E402


def main() -> int:
    selection = dg.AssetSelection.all().without_checks()
    job = dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job("all_without_checks", selection)]))
    with dg.DagsterInstance.get() as instance:
        result = job.resolve_job_def("all_without_checks").execute_in_process(instance=instance, raise_on_error=False)
    checked = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    if checked:
        raise SystemExit(f"{len(checked)} checks ran: the selection did not leave them out")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
