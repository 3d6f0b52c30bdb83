"""What people and users do between two syncs, on the emulators' admin APIs."""

from __future__ import annotations

from typing import Any

from demo import scenario as sc


def apply(world: Any, story: sc.Scenario) -> list[str]:
    mailchimp, dataverse = world.mailchimp_admin, world.dataverse_admin
    contact_by_email = {c["emailaddress1"]: c for c in story.contacts if c.get("emailaddress1")}
    in_newsletter = [
        m
        for m in story.mailchimp_members
        if m["list_id"] == sc.NEWSLETTER_AUDIENCE
        and m["email_address"] in contact_by_email
        and not contact_by_email[m["email_address"]].get("statecode")
    ]
    subscribed = [
        m
        for m in in_newsletter
        if m["status"] == "subscribed" and not contact_by_email[m["email_address"]]["donotbulkemail"]
    ]
    unsubscribed = [m for m in in_newsletter if m["status"] == "unsubscribed"]
    said = []

    for member in subscribed[:3]:
        mailchimp.call(
            "POST", "people/unsubscribe", {"list_id": sc.NEWSLETTER_AUDIENCE, "email_address": member["email_address"]}
        )
    said.append("3 people unsubscribed through the link in a Mailchimp newsletter")
    mailchimp.call(
        "POST",
        "people/bounce",
        {"list_id": sc.NEWSLETTER_AUDIENCE, "email_address": subscribed[3]["email_address"], "type": "hard"},
    )
    said.append("1 address hard-bounced, so Mailchimp cleaned it")
    mailchimp.call(
        "POST",
        "people/resubscribe",
        {"list_id": sc.NEWSLETTER_AUDIENCE, "email_address": unsubscribed[0]["email_address"]},
    )
    said.append("1 person who had unsubscribed signed up again through a Mailchimp form")

    opt_outs = [contact_by_email[m["email_address"]]["contactid"] for m in subscribed[4:7]]
    dataverse.call(
        "POST",
        "edit",
        {"entity": "contacts", "edits": [{"id": cid, "changes": {"donotbulkemail": True}} for cid in opt_outs]},
    )
    said.append("3 contacts were set to 'Do not allow Bulk Emails' in Dynamics")
    blocked = contact_by_email[unsubscribed[1]["email_address"]]["contactid"]
    dataverse.call(
        "POST",
        "edit",
        {"entity": "contacts", "edits": [{"id": blocked, "changes": {"donotbulkemail": False, "donotsendmm": False}}]},
    )
    said.append("1 contact who unsubscribed in Mailchimp was switched back to 'Allow' in Dynamics")

    new_contacts = [
        {
            "contactid": f"0000aaaa-0000-4000-8000-00000000000{n}",
            "firstname": "New",
            "lastname": f"Person{n}",
            "emailaddress1": f"new.person{n}@example.org",
        }
        for n in (1, 2)
    ]
    dataverse.seed({"contacts": new_contacts})
    dataverse.call("POST", "members", {"listid": sc.NEWSLETTER_LIST, "add": [c["contactid"] for c in new_contacts]})
    said.append("2 new contacts were added to the newsletter marketing list")
    return said
