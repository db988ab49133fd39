"""The membership core: members, events, consent, lifecycle, tiers, points, benefits.

Imports nothing from Flask or app/: the web layer, the workers and the tests call it.
"""
