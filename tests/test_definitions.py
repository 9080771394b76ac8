"""The Dagster definitions load, and the graph is what users see in the UI: layers, lineage, kinds, docs."""

from __future__ import annotations

import dagster as dg

from lakehouse.contracts import Entity


def load_defs():
    from lakehouse_assets.definitions import defs

    return defs


def test_definitions_load_with_the_local_environment():
    defs = load_defs()
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "bronze/posts", "bronze/comments",
        "silver/posts", "silver/comments", "silver/posts_quarantine", "silver/comments_quarantine",
        "gold/posts", "gold/comments", "gold/subreddit_daily", "gold/post_engagement",
    }
    resources = defs.resources
    assert resources["lakehouse"].environment == "local"
    assert resources["spark"].spark_config["spark.sql.catalog.lakehouse.type"] == "jdbc"


def test_lineage_bronze_silver_gold_for_both_entities():
    graph = load_defs().resolve_asset_graph()

    def parents(key: str) -> set[str]:
        return {p.to_user_string() for p in graph.get(dg.AssetKey.from_user_string(key)).parent_keys}

    for e in Entity:
        assert parents(f"silver/{e.plural}") == {f"bronze/{e.plural}"}
        assert parents(f"silver/{e.plural}_quarantine") == {f"bronze/{e.plural}"}
        assert parents(f"gold/{e.plural}") == {f"silver/{e.plural}"}
    for agg in ("subreddit_daily", "post_engagement"):
        assert parents(f"gold/{agg}") == {"silver/posts", "silver/comments"}


def test_every_asset_has_group_kinds_and_description():
    graph = load_defs().resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        layer = key.path[0]
        assert node.group_name == layer
        assert {"spark", "iceberg"} <= set(node.kinds)
        assert node.description and len(node.description.splitlines()) == 1
        assert node.metadata["dagster/table_name"].startswith(f"lakehouse.{layer}.")


def test_runs_share_one_process_and_one_spark_session():
    job = load_defs().resolve_implicit_global_asset_job_def()
    assert job.executor_def.name == dg.in_process_executor.name


def test_table_contract_docs_are_current():
    from pathlib import Path

    from lakehouse.contracts import contracts_markdown

    doc = Path(__file__).resolve().parents[1] / "docs" / "tables.md"
    assert doc.read_text(encoding="utf-8") == contracts_markdown(), "run: lakehouse contracts > docs/tables.md"


def test_small_sensor_batches_get_a_quick_starting_jvm():
    from lakehouse.settings import load_settings
    from resources.spark import BATCH_BYTES_TAG, QUICK_JIT_MAX_BYTES, SparkResource

    auto = SparkResource.from_settings(load_settings({}))
    assert auto.quick_jit == "auto"
    for tags, quick in (({BATCH_BYTES_TAG: "4096"}, True),
                        ({BATCH_BYTES_TAG: str(QUICK_JIT_MAX_BYTES + 1)}, False),
                        ({}, False)):  # a manual materialisation of everything: full JIT
        auto._run_tags = tags
        assert auto._wants_quick_jit() is quick
    forced = SparkResource.from_settings(load_settings({"LAKEHOUSE_SPARK_QUICK_JIT": "off"}))
    forced._run_tags = {BATCH_BYTES_TAG: "1"}
    assert forced._wants_quick_jit() is False


def test_every_layer_is_checked_and_the_gates_block():
    graph = load_defs().resolve_asset_graph()
    specs = {(k.asset_key.to_user_string(), k.name): graph.get_check_spec(k) for k in graph.asset_check_keys}
    blocking = {k for k, s in specs.items() if s.blocking}
    for e in Entity:
        assert {(f"bronze/{e.plural}", n) for n in ("rows_match_file", "ingestion_metadata_complete")} <= blocking
        assert {(f"silver/{e.plural}", n) for n in ("primary_key_unique", "types_and_ranges",
                                                    "bronze_reconciled")} <= blocking
        assert (f"bronze/{e.plural}", "header_matches_contract") in set(specs) - blocking
        assert (f"silver/{e.plural}_quarantine", "quarantine_rate") in set(specs) - blocking
    assert ("silver/comments", "post_id_parsed") in blocking
    for table in ("posts", "comments", "subreddit_daily", "post_engagement"):
        assert {(f"gold/{table}", n) for n in ("schema_matches_contract", "reconciles_with_silver", "fresh")} <= set(specs)
    assert all(s.description for s in specs.values())


def test_a_nightly_job_runs_every_check_over_whole_tables():
    defs = load_defs()
    job = defs.resolve_job_def("full_quality_checks")
    graph = defs.resolve_asset_graph()
    assert job.tags["lakehouse/check_scope"] == "full"
    assert set(job.asset_layer.asset_graph.asset_check_keys) == set(graph.asset_check_keys)
    (schedule,) = [s for s in defs.schedules if s.job_name == "full_quality_checks"]
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.default_status is dg.DefaultScheduleStatus.RUNNING


def test_gold_tables_are_registered_once_and_an_unknown_name_fails_loudly():
    import pytest

    from lakehouse import gold_layer
    from lakehouse.contracts import GOLD
    from lakehouse.errors import UnknownTable

    graph = load_defs().resolve_asset_graph()
    for key, table in gold_layer.GOLD_TABLES.items():
        node = graph.get(dg.AssetKey(["gold", key]))
        # The asset says what the registration says: its description, and its Silver sources as its parents.
        assert node.description == table.description and table.contract is GOLD[key]
        assert {p.to_user_string() for p in node.parent_keys} == {f"silver/{e.plural}" for e in table.sources}
    with pytest.raises(UnknownTable, match="no Gold table 'daily'; there are: comments, post_engagement, posts, "
                                           "subreddit_daily"):
        gold_layer.gold_table("daily")
    with pytest.raises(UnknownTable, match="no Gold aggregate 'posts'"):
        gold_layer.update_gold_aggregate(None, "posts")  # before any Spark work


def test_a_local_run_process_does_not_import_the_aws_clients():
    """Every run process, CLI call and code server imports the definitions: dagster-aws alone took ~1.7 s of that,
    for clients only AWS mode uses (they are imported where it uses them)."""
    import os
    import subprocess
    import sys

    code = ("import sys, lakehouse_assets.definitions, sensors.landing, lakehouse.cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'dagster_aws', 'boto3', 'botocore'}))")
    env = {**os.environ, "LAKEHOUSE_ENV": "local"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
