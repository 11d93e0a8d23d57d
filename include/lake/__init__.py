"""The lake: S3 buckets and the layout of what the stream and compaction write there."""
