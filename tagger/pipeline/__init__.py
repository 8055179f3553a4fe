"""The stages (sources, decode, encode, text, train, tag, nightly, search) and their drivers.

The only layer that imports Ray.
"""
