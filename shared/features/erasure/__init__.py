"""Privacy requests: forget an address (the right to erasure), explain what the product holds about a person,
and what a deletion in Dynamics does (ON_DYNAMICS_DELETE).

forget.py      the forget command: delete-permanent in every audience, the product's state scrubbed, a tombstone
explain.py     the explain command: one person's links, records, bases, tombstones and ConsentAudit history
steps.py       the reconcile step: a tombstoned hash is never added again (rule 12); Mailchimp's "Forgotten
               Email Not Subscribed" leaves a tombstone; the last record of an address deleted in Dynamics
"""
