"""The sans-IO core: pure, synchronous exchange logic with no trio and no IO.

Everything here is driven by plain function calls, so it can be unit- and property-tested
directly and replayed exactly from a journal.
"""
