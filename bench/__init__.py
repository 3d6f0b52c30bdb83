"""The benchmark of the status sync: ``python -m bench [--records N] [--scale 4] [--json]``.

For N records and then scale x N, on a fresh local world each time (Azurite and both emulators as
separate processes): seed one static contact list linked to one audience, then measure four runs,
each as its own process: the initial run, the settling run that re-reads the initial run's own
writes, an incremental run after 1 % of the records and 1 % of the members changed, and a run with
nothing changed. For each: API calls per endpoint on both sides against the efficiency model's
minimum (design.md), storage requests, wall time, records per second and the sync process's peak RSS.
"""
