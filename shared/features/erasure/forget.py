"""The right to erasure: forget one address everywhere the product reaches, keeping only a tombstone of its hash.

Order of work, so that a failure part-way leaves nothing half-forgotten silently and a second run finishes:

1. the tombstone (hash only), first: from then on no run adds the address again (rule 12), whatever fails next;
2. Mailchimp: delete-permanent in every linked audience (absent or already forgotten is done);
3. the product's own state: bases and aliases in the identity map, waiting and claimed batch payloads and
   dry-run plans in SyncRuns, dead-letter retry rows and campaign causes in SyncState;
4. a ``forgotten`` ConsentAudit row per link (hash only);
5. the Dynamics records that still hold the address, listed: deleting them is the CRM owner's process.

What a failing service leaves undone is returned in ``Forgetting.remaining``; nothing is retried silently.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared.adapters.dataverse import DataverseError
from shared.adapters.mailchimp import MailchimpError
from shared.adapters.ports import DataversePort, MailchimpPort, Services, StoragePort
from shared.adapters.storage import BATCHES_QUEUE, SYNC_STATE
from shared.model.kinds import KINDS
from shared.model.times import now
from shared.rules.addresses import member_hash, normalize_email
from shared.rules.audit import AuditEntry
from shared.settings import Link
from shared.state.aliases import AliasIndex
from shared.state.audit import AuditLog
from shared.state.identity import BaseRow, IdentityMap
from shared.state.ledger import Ledger
from shared.state.tombstones import EVERYWHERE, Tombstones

log = logging.getLogger("consent_bridge.erasure")

RULE = "forgotten"


class AddressError(ValueError):
    """The text given is not an address Mailchimp could hold."""


@dataclass
class Forgetting:
    """What forgetting one address did (or, with dry_run, would do)."""

    member_hash: str
    dry_run: bool = False
    already_forgotten: bool = False  # a tombstone covering every link was there before this call
    deleted_in: list[str] = field(default_factory=list)  # links whose audience held the member
    scrubbed: list[str] = field(default_factory=list)  # what was removed from the product's state, in words
    records: list[tuple[str, str]] = field(default_factory=list)  # (kind, id) still holding the address
    remaining: list[str] = field(default_factory=list)  # what a service refused: run forget again

    @property
    def done(self) -> bool:
        return not self.remaining


def address_of(text: str) -> str:
    """The address as Mailchimp keys it, or AddressError saying why not (without repeating it)."""
    email = normalize_email(text)
    if not email:
        raise AddressError("not an email address Mailchimp could hold (expected name@domain.tld)")
    return email


def forget(ctx: Services, text: str, *, dry_run: bool = False, reason: str = "forget") -> Forgetting:
    """Forgets the address in every linked audience and in the product's state; see the module's docstring."""
    email = address_of(text)
    hashed = member_hash(email)
    result = Forgetting(hashed, dry_run)
    stones = Tombstones(ctx.storage)
    result.already_forgotten = any(stone.scope == EVERYWHERE for stone in stones.of(hashed))
    if not dry_run:
        try:
            stones.add(hashed, reason=reason)
        except HttpResponseError as exc:  # Mailchimp's own refusal of re-imports still holds meanwhile
            result.remaining.append(f"the tombstone of member {hashed} in table SyncState ({exc.status_code})")
    result.records = records_holding(ctx.dataverse, email, result.remaining)
    holding = [record_id for _, record_id in result.records]  # the scan may have indexed them before any base
    identity = IdentityMap(ctx.storage)
    for link in ctx.settings.links:
        base = identity.load(link.name, [hashed]).get(hashed)
        changed, contact_id = _forget_member(ctx.mailchimp, link, hashed, result)
        changed |= _scrub_link(ctx.storage, identity, link, hashed, base, (holding, contact_id), result)
        if not dry_run and (changed or not result.already_forgotten):
            entry = AuditEntry(
                hashed,
                RULE,
                [record_id for record_id, _ in base.records] if base else [],
                detail=f"erased on request ({reason}): "
                + ("deleted permanently in Mailchimp" if link.name in result.deleted_in else "not in the audience")
                + "; removed from Consent Bridge's state",
            )
            try:
                AuditLog(ctx.storage).write(link.name, f"forget-{now():%Y%m%d%H%M%S}", [entry])
            except HttpResponseError as exc:
                result.remaining.append(f"link {link.name}: the erasure's audit row ({exc.status_code})")
    log.info(
        "member %s %s: deleted in %d audience(s), %d record(s) in Dynamics still hold the address%s",
        hashed,
        "would be forgotten" if dry_run else "forgotten",
        len(result.deleted_in),
        len(result.records),
        f"; {len(result.remaining)} step(s) remain" if result.remaining else "",
    )
    return result


def _forget_member(mailchimp: MailchimpPort, link: Link, hashed: str, result: Forgetting) -> tuple[bool, str | None]:
    """Deletes the member permanently; (whether it was there, its Mailchimp contact id, which the alias index
    may hold). The member is read first because the contact id goes with the delete."""
    try:
        found = mailchimp.member(link.audience_id, hashed, fields=["contact_id"])
        if not result.dry_run and not mailchimp.delete_member_permanently(link.audience_id, hashed):
            found = None
    except MailchimpError as exc:
        result.remaining.append(
            f"link {link.name}: Mailchimp audience {link.audience_id} refused the permanent delete ({exc})"
        )
        return False, None
    if found is not None:
        result.deleted_in.append(link.name)
        return True, found.get("contact_id")
    return False, None


def _scrub_link(
    storage: StoragePort,
    identity: IdentityMap,
    link: Link,
    hashed: str,
    base: BaseRow | None,
    keys: tuple[list[str], str | None],
    result: Forgetting,
) -> bool:
    """Removes the person from the link's state; True when something was there."""
    found: list[str] = []
    try:
        if base is not None:
            found.append(f"link {link.name}: the identity map's base")
            if not result.dry_run:
                identity.save(link.name, {hashed: None})
        holding, contact_id = keys
        record_ids = {record_id for record_id, _ in base.records} | set(holding) if base else set(holding)
        contact_ids = {c for c in (contact_id, base.contact_id if base else None) if c}
        for kind, aliases in (("records", record_ids), ("contacts", contact_ids)):
            index = AliasIndex(storage, link.name, kind)
            pointing = [key for key, value in index.get(sorted(aliases)).items() if value == hashed]
            if pointing:
                found.append(f"link {link.name}: {len(pointing)} {kind} alias(es)")
                if not result.dry_run:
                    index.remove(pointing)
        held, rewritten = Ledger(storage).scrub_member(link.name, hashed, dry_run=result.dry_run)
        found += held
        for run_id, batch_id in rewritten:  # its waiting invocation may have let its message go: point again
            storage.send(BATCHES_QUEUE, {"link": link.name, "run": run_id, "batch": batch_id})
        cause = storage.get(SYNC_STATE, f"{link.name}|causes", hashed)
        if cause is not None:
            found.append(f"link {link.name}: a campaign cause")
            if not result.dry_run:
                with contextlib.suppress(ResourceNotFoundError):
                    storage.table(SYNC_STATE).delete_entity(f"{link.name}|causes", hashed)
    except (HttpResponseError, RuntimeError) as exc:
        result.remaining.append(f"link {link.name}: Consent Bridge's own state ({type(exc).__name__}: {exc})"[:300])
    result.scrubbed += found
    return bool(found)


def records_holding(dataverse: DataversePort, email: str, problems: list[str]) -> list[tuple[str, str]]:
    """(kind, record id) of every contact, lead and account whose emailaddress1 is the address (case aside);
    a table Dataverse would not search is added to ``problems``."""
    quoted = email.replace("'", "''")
    found: list[tuple[str, str]] = []
    for kind in KINDS.values():
        try:
            for page in dataverse.iter_pages(
                kind.entity_set, select=[kind.id_attribute], filter=f"emailaddress1 eq '{quoted}'"
            ):
                found += [(kind.name, str(row[kind.id_attribute])) for row in page]
        except DataverseError as exc:
            problems.append(f"Dynamics {kind.entity_set}: could not be searched for the address ({exc})")
    return found


def describe_forgetting(done: Forgetting) -> list[str]:
    """What the forget command prints: what was erased, the records still holding the address, what remains."""
    would = "would be " if done.dry_run else ""
    lines = [f"member {done.member_hash}: " + ("already forgotten; " if done.already_forgotten else "")]
    lines[0] += (
        f"{would}deleted permanently in {len(done.deleted_in)} audience(s)"
        + (f" ({', '.join(done.deleted_in)})" if done.deleted_in else "")
        + f"; {would or 'is now '}kept as a tombstone (member hash only): no run adds the address again"
    )
    lines += [f"  {would}removed: {what}" for what in done.scrubbed]
    if done.records:
        lines.append(
            f"{len(done.records)} Dynamics record(s) still hold the address; deleting them is the CRM owner's process:"
        )
        lines += [f"  {kind} {record_id}" for kind, record_id in done.records]
    else:
        lines.append("no Dynamics contact, lead or account holds the address")
    if done.remaining:
        lines.append("NOT DONE (run forget again once the service answers):")
        lines += [f"  {what}" for what in done.remaining]
    return lines
