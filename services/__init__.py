"""The services: long-running processes and whole-store jobs built on the ledger and projections.

Ingest, relay, signal watch, follow and audit. They import `ledger` and `projections`, never
`dispatcher` or `console` (docs/design.md).
"""
