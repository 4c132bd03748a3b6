"""The queue: entries claimed under a lease with ``FOR UPDATE SKIP LOCKED``, and the rows
that failed for good."""
