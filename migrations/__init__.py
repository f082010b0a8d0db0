"""The ledger's schema migrations: numbered, forward-only `NNNN_name.sql` files, one concern each.

The `.sql` files are package data (pyproject.toml), so they ship in the wheel and `ledger migrate`
finds them through `importlib.resources`, wherever the package is installed. No Python code here.
"""
