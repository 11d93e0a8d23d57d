from __future__ import annotations

import json

from spark_apps.progress import progress_row

PROGRESS = {
    "id": "8c7c2d9e-6a3c-4d36-9a38-0d1f1d2f1f11",
    "runId": "1f0f8c1e-2b3c-4d5e-8f90-a1b2c3d4e5f6",
    "name": "category_sales",
    "timestamp": "2026-11-24T12:00:00.000Z",
    "batchId": 7,
    "numInputRows": 1200,
    "inputRowsPerSecond": 100.5,
    "processedRowsPerSecond": 900.0,
    "durationMs": {"triggerExecution": 1333, "addBatch": 900},
    "eventTime": {"watermark": "2026-11-24T11:50:00.000Z"},
    "stateOperators": [
        {"numRowsTotal": 40, "numRowsDroppedByWatermark": 3},
        {"numRowsTotal": 10, "numRowsDroppedByWatermark": 2},
    ],
    "sources": [
        {
            "description": "KafkaV2[Subscribe[events]]",
            "startOffset": {"events": {"0": 10}},
            "endOffset": {"events": {"0": 1210}},
            "latestOffset": {"events": {"0": 1300}},
            "numInputRows": 1200,
            "metrics": {},
        }
    ],
    "observedMetrics": {"lake": {"landed": 1190, "irrelevant": 12}},
}


def test_progress_row_extracts_what_supervision_needs():
    row = progress_row(PROGRESS)
    assert row["batch_id"] == 7 and row["input_rows"] == 1200
    assert row["batch_duration_ms"] == 1333
    assert row["late_rows_dropped"] == 5 and row["state_rows"] == 50
    assert row["watermark"] == "2026-11-24T11:50:00.000Z"
    source = json.loads(row["sources"])[0]
    assert source["endOffset"] == {"events": {"0": 1210}}
    assert source["latestOffset"] == {"events": {"0": 1300}}  # lag = latest - end
    assert json.loads(row["observed"])["lake"]["landed"] == 1190


def test_progress_row_tolerates_an_idle_batch():
    row = progress_row({"id": "a", "runId": "b", "batchId": 0, "timestamp": "t", "name": None})
    assert row["input_rows"] == 0 and row["late_rows_dropped"] == 0 and row["query_name"] == ""
