"""Marketing preferences: Mailchimp interests and Dynamics preference subscriptions, kept in step both ways.

catalog.py   the interest catalog and the subscription rows in Dataverse (read, mirror, write)
scanning.py  what a scan asks: a member's chosen interests, the run's catalog, the rows changed
steps.py     the reconcile step: plan each person's pairs, write both sides, settle the base, audit
schema.py    the tables, lookups and views `provision` creates
The rule per (person, interest) pair is pure and lives in shared/rules/preferences.py.
"""
