"""Queue names, most urgent first: a worker listening on all of them drains them in order."""

HIGH = "high"  # messages due now
DEFAULT = "default"
LOW = "low"  # recomputes, rollups, housekeeping

ALL = (HIGH, DEFAULT, LOW)
