"""The console: the `ledger` command, its commands and their rendering (tables, charts, AsyncAPI).

The top floor: it may import every package below it, and nothing imports it (docs/design.md).
"""
