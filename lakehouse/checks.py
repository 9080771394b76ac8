"""What every check returns (`CheckOutcome`) and the marks the checks keep on the tables they check: how far an
incremental check has verified, and an operator's acceptance of a failure. The checks themselves live with their
layer's step (lakehouse/{bronze,silver,gold}_layer.py); `lakehouse_assets/` turns outcomes into
`AssetCheckResult`s.

The checks read table metadata where it answers the question (snapshot summaries, the ingestion log) and scan
only the columns they need otherwise; their cost is reported in the benchmarks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from pyspark.sql import DataFrame, SparkSession

from lakehouse import tables
from lakehouse.clock import utcnow

if TYPE_CHECKING:
    from lakehouse import silver_layer

log = logging.getLogger(__name__)
SAMPLE_ROWS = 5
# What a check has verified, kept as a table property of the table it checks: the expensive checks look at
# what changed since they last passed (a failure is looked at again next time), or at everything when asked
# for a full pass (the nightly `full_quality_checks` job) or when they have never passed.
VERIFIED_PREFIX = "lakehouse.verified."


@dataclass
class CheckOutcome:
    passed: bool
    summary: str  # one line a data engineer reads in the UI
    metrics: dict[str, Any] = field(default_factory=dict)
    sample: list[dict] = field(default_factory=list)  # offending rows, at most SAMPLE_ROWS
    sample_columns: list[str] = field(default_factory=list)
    # Incremental checks: the (table, position name) they keep and the position this evaluation reached; moved
    # on a pass, or when an operator accepts the failure (the accepted range leaves the scope).
    mark: tuple[str, str] | None = None
    through: str | None = None
    # Checks that look at a fixed scope (the latest batch, a schema): what the failure is, to tell an accepted
    # failure from a new one. None: the summary and the sample say it.
    fingerprint: str | None = None

    def failure_id(self) -> str:
        """A stable identity of this failure (accepted failures are matched by it)."""
        basis = self.fingerprint or json.dumps([self.summary, self.sample], default=str, sort_keys=True)
        return hashlib.sha256(basis.encode()).hexdigest()[:16]


def verified(spark: SparkSession, table: str, check: str, full: bool) -> str | None:
    """How far `check` has verified `table` (None: never, or a full pass is asked for)."""
    return None if full else tables.table_properties(spark, table).get(VERIFIED_PREFIX + check)


def record_verified(spark: SparkSession, table: str, check: str, outcomes: list[CheckOutcome], through: Any) -> None:
    """Move the check's mark forward when every outcome passed; a failed range stays in scope until it is fixed
    (or an operator accepts it: `lakehouse accept`)."""
    for outcome in outcomes:
        outcome.mark, outcome.through = (table, check), (None if through is None else str(through))
    if all(o.passed for o in outcomes) and through is not None:
        with _deferring:
            pending = _deferred.get(id(spark._jsparkSession))
            if pending is not None:
                pending.setdefault(table, {})[VERIFIED_PREFIX + check] = str(through)
                return
        tables.set_properties(spark, table, {VERIFIED_PREFIX + check: str(through)})


# A step's checks move their marks in one commit per table once they have all been evaluated (`marks_together`),
# not one commit each. Keyed by session: a step's check threads share its session.
_deferred: dict[int, dict[str, dict[str, str]]] = {}
_deferring = threading.Lock()


@contextmanager
def marks_together(spark: SparkSession) -> Iterator[None]:
    """Within this block, the checks' marks on a table are written together at its end, one commit per table. A
    block that raises writes none: the ranges are verified again next time (never skipped)."""
    key = id(spark._jsparkSession)
    with _deferring:
        _deferred[key] = {}
    try:
        yield
        with _deferring:
            pending = _deferred.pop(key)
        for table, props in pending.items():
            tables.set_properties(spark, table, props)
    finally:
        with _deferring:
            _deferred.pop(key, None)


# An operator's acceptance of a failing check, kept on the table the check looks at.
ACCEPTED_PREFIX = "lakehouse.accepted."


def acceptance(spark: SparkSession, table: str, check: str, outcome: CheckOutcome) -> dict | None:
    """The operator's acceptance of exactly this failure (who, when, why), if one is recorded; None otherwise.

    A failure other than the accepted one is not covered: it fails as it would have."""
    if outcome.passed:
        return None
    raw = tables.table_properties(spark, table).get(ACCEPTED_PREFIX + check)
    accepted = json.loads(raw) if raw else None
    return accepted if accepted and accepted.get("failure") == outcome.failure_id() else None


# --- holds: a gate's failure holds the checked table's readers on every path -------------------------------------
#
# Dagster skips the assets below a failing blocking check in the run that evaluated it, and only there. A gate check
# (Bronze's blocking checks) also keeps its standing failure on the table it checks (`lakehouse.held.<check>`: the
# failure's id and summary, since when, and the table's snapshot the failing evaluation read), so that a reader in
# any other run, a catch-up run, a hand-made materialisation or a job outside Dagster reads no further (Silver:
# `silver_layer.bronze_range`) until an evaluation passes, or an operator accepts exactly that failure
# (`lakehouse accept`: the acceptance releases it at once, the next evaluation clears it).
HELD_PREFIX = "lakehouse.held."


def _json(raw: str | None) -> dict | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def standing_holds(properties: dict[str, str]) -> list[dict]:
    """The holds in force among a table's properties (read by Spark or pyiceberg): recorded and not accepted since.
    Each is the recorded hold with its `check` name; oldest first."""
    holds = []
    for key, raw in properties.items():
        if not key.startswith(HELD_PREFIX):
            continue
        check = key[len(HELD_PREFIX):]
        hold = _json(raw) or {"failure": None, "summary": f"(an unreadable hold: {raw!r})"}
        accepted = _json(properties.get(ACCEPTED_PREFIX + check))
        if accepted and hold.get("failure") is not None and accepted.get("failure") == hold["failure"]:
            continue
        holds.append({"check": check, **hold})
    return sorted(holds, key=lambda h: (str(h.get("since")), h["check"]))


def holds_on(spark: SparkSession, table: str) -> list[dict]:
    return standing_holds(tables.table_properties(spark, table))


def record_gates(spark: SparkSession, table: str, verdicts: list[tuple[str, CheckOutcome, bool]], at: int | None,
                 run_id: str | None = None) -> None:
    """Keep each gate's verdict on `table`: (check, outcome, accepted). A failure not accepted holds the table's
    readers (`since` stays that of the hold it continues); a pass or an accepted failure releases them. One
    metadata commit, none when nothing changes."""
    props = tables.table_properties(spark, table)
    put: dict[str, str] = {}
    drop: list[str] = []
    for check, outcome, accepted in verdicts:
        key = HELD_PREFIX + check
        if outcome.passed or accepted:
            if key in props:
                drop.append(key)
            continue
        before = _json(props.get(key)) or {}
        hold = {"failure": outcome.failure_id(), "summary": outcome.summary,
                "since": before.get("since") or utcnow().isoformat(timespec="seconds"),
                "at": None if at is None else str(at), "run_id": run_id}
        if _json(props.get(key)) != hold:
            put[key] = json.dumps(hold)
    if put or drop:
        # Through Iceberg's API: a failure's summary holds file names, quotes and all, never put in SQL text.
        tables.set_properties(spark, table, put | dict.fromkeys(drop))
        for key in (k for k in put if k not in props):
            log.warning("%s is held: %s failed (%s); its readers read no further until it passes or is accepted",
                        table, key[len(HELD_PREFIX):], json.loads(put[key])["summary"])
        for key in drop:
            log.info("%s: %s released", table, key)


class Held(RuntimeError):
    """A reader that did not read its source past a gate's standing failure (the run fails and says why)."""


def held_message(reader: str, table: str, holds: list[dict], through: Any) -> str:
    """What a reader held back by `holds` on `table` tells the operator: which gate, since when, and what to do."""
    asset = table.replace(".", "/")
    gates = "; ".join(f"{asset} {h['check']} failed ({h['summary']}), holding it since {h.get('since')}"
                      for h in holds)
    return (f"{reader} read {table} no further than snapshot {through}: {gates}. Fix the data and let the check "
            f"pass (the entity's next run, or a run of the check alone), or accept that failure: "
            f"lakehouse accept {asset} {holds[0]['check']} --why '...'")


def scope(changes: "silver_layer.Changes") -> str:
    return "full" if changes.since is None else "changed since last verified"


def sample(df: DataFrame, columns: list[str]) -> list[dict]:
    return [r.asDict() for r in df.select(*columns).limit(SAMPLE_ROWS).collect()]


