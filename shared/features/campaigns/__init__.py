"""Campaign activity: campaigns sent to a linked audience and each record's engagement, mirrored into Dynamics;
the campaign that made someone unsubscribe or bounce becomes the cause in their consent audit (core.py)."""
