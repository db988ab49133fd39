"""RQ job functions, queue names and the periodic schedule: thin wrappers around the engines."""
