"""The daemon: the claim loop and its rounds (``process``), the worker that embeds and writes
a round, requests from SQL (``actions``), cron schedules, the provider probe and lease keeping."""
