"""Pure method code: zero-shot scores, memory mapping, the text classifier, CoMC, scoring, decisions.

Nothing here opens a catalog, knows a workspace or imports Ray; a test holds that line.
"""
