"""`python -m console` is the `ledger` command (used by `ledger run all` to start its children)."""

from console.cli import main

main()
