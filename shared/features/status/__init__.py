"""Sync status in Dynamics: a `cbr_synclink` row per link (last run, outcome, counts in words, first error, next
run), "Sync now", and the facts `GET /api/status` and `status` answer.

schema.py  the table, its columns and the "Sync links" view (provision)
board.py   StatusBoard: the RunObserver that writes the rows, the sync-now check, the status facts
words.py   counts in words and errors a person can act on
"""
