"""`python -m demo`: the trading morning."""

from demo.morning import run

run()
