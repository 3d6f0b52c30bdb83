"""Consent per audience: one membership row per record and linked audience, the opt-out columns as their roll-up
under OPT_OUT_ROLLUP, and a consent history row on the record for every consent change (see README.md here)."""
