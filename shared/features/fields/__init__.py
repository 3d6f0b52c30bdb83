"""Mapped fields: chosen Dynamics columns and Mailchimp merge fields kept in step (FIELD_MAP, rule 11).

definitions.py  the audience's merge fields (type, date format, required), kept per link in SyncState
scanning.py     what a scan asks: the extra member `fields` and record columns, the values read
steps.py        the reconcile step: merge each person's fields, send merge fields in the batch subscribe and
                columns in the record PATCHes, settle a digest per field into the base, audit every change
schema.py       what `check` verifies and what `provision` creates (missing merge fields)
The conversions and the merge per field are pure and live in shared/rules/fields.py.
"""
