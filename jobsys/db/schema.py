"""The schema revision this code expects, as constants (no Alembic import needed).

A test checks these against ``migrations/versions`` so they cannot drift.
"""

from jobsys.engine.schema import INSTALL_REVISION

HEAD_REVISION = "0031_muted_resolved_issues"
KNOWN_REVISIONS = (
    INSTALL_REVISION,
    "0002_jobsys_core",
    "0003_schedule",
    "0004_retry",
    "0005_live_read_indexes",
    "0006_failures_filters",
    "0007_runtime_worker_ids",
    "0008_fanout_item_jobs",
    "0009_workers_failure_search",
    "0010_job_search_bulk",
    "0011_queue_pauses",
    "0012_claim_at_depth",
    "0013_unique_jobs",
    "0014_schedule_entry_issues",
    "0015_flow_starts",
    "0016_failures_kind_pairs",
    "0017_drop_args_text_trgm",
    "0018_lane_worker_ids",
    "0019_outage_replays",
    "0020_failures_pair_statistics",
    "0021_job_search_side_table",
    "0022_flow_claim_function",
    "0023_search_text_inlined",
    "0024_statement_job_triggers",
    "0025_defer_function",
    "0026_lane_claim_function",
    "0027_claim_functions_index_only",
    "0028_tick_already_queued",
    "0029_events_without_foreign_key",
    "0030_events_delete_as_owner",
    "0031_muted_resolved_issues",
)
