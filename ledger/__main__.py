"""`python -m ledger` is the `ledger` command (used by `ledger run all` to start its children)."""

from ledger.cli import main

main()
