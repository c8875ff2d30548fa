"""`make chaos`: three workers on a real broker under continuous input and faults.

See chaos/README.md for what it injects, what it checks, and how to read its summary.
"""
