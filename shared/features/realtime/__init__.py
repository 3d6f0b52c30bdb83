"""The real-time path: webhook deliveries from Mailchimp and Dataverse become small events on ``sync-events``, and
the events handler reconciles the member hashes they name through the same pipeline as a run.

deliveries.py    checking a delivery (secret, signature) and reading what it names, before anything is queued
events.py        the event message on ``sync-events``: small and versioned
receive.py       the routes' core: check, parse, enqueue, answer
handler.py       the ``sync-events`` handler: coalesce a burst, read again, reconcile one unit per link
announced.py     what events announced (and what the product wrote), per link, for the sweep's "missed" count
registration.py  ``webhooks register|status|remove``: the Mailchimp webhooks and the Dataverse endpoint and steps
"""
