"""What `check` verifies about FIELD_MAP and what `provision` creates for it.

`check`: each mapped column exists on each record kind it applies to (Dataverse metadata), and each merge field
exists in every linked audience with a type that can hold the column's values; one line per mismatch.
`provision`: creates the merge fields an audience lacks, with the type that fits the column; an existing merge
field is never changed (its type cannot change without losing its values)."""

from __future__ import annotations

from shared.adapters.mailchimp import MailchimpError
from shared.adapters.ports import DataversePort, MailchimpPort
from shared.errors import ConsentBridgeError
from shared.rules import fields
from shared.rules.fields import MergeDefinition
from shared.settings import FieldMapping, Settings


def _attribute_type(dataverse: DataversePort, mapping: FieldMapping) -> str | None:
    """The Dataverse type of the mapped column on the first kind that has it (None: none has it)."""
    for kind in fields.kinds_of(mapping):
        found = dataverse.attribute_definition(kind, fields.columns_read(mapping.column)[0])
        if found is not None:
            return str(found.get("AttributeType") or "String")
    return None


def check_fields(settings: Settings, mailchimp: MailchimpPort | None, dataverse: DataversePort | None) -> list[str]:
    """One line per problem with FIELD_MAP: a column missing on a kind, a merge field missing or of the wrong type."""
    problems: list[str] = []
    types: dict[int, str | None] = {}
    for index, mapping in enumerate(settings.field_map):
        where = f"FIELD_MAP[{index}] ({mapping.column} -> {mapping.merge_field})"
        if dataverse is None:
            continue
        for kind in fields.kinds_of(mapping):
            columns = fields.columns_read(mapping.column)
            missing = [c for c in columns if dataverse.attribute_definition(kind, c) is None]
            if missing:
                problems.append(
                    f"{where}: {kind} has no column {', '.join(missing)}; "
                    "correct the column or limit the mapping's kinds"
                )
        types[index] = _attribute_type(dataverse, mapping)
    if mailchimp is None:
        return problems
    for link in settings.links:
        try:
            existing = {str(m["tag"]): MergeDefinition.of(m) for m in mailchimp.merge_fields(link.audience_id)}
        except MailchimpError as exc:
            problems.append(f"link {link.name}: the merge fields of audience {link.audience_id} cannot be read: {exc}")
            continue
        for index, mapping in enumerate(settings.field_map):
            where = f"FIELD_MAP[{index}] ({mapping.column} -> {mapping.merge_field})"
            definition = existing.get(mapping.merge_field)
            if definition is None:
                problems.append(
                    f"{where}: audience {link.audience_id} of link {link.name} has no merge field "
                    f"{mapping.merge_field}; `provision` creates it"
                )
            elif not fields.compatible(definition, mapping.column, types.get(index)):
                wanted = fields.fitting_type(mapping.column, types.get(index)).type
                problems.append(
                    f"{where}: merge field {mapping.merge_field} of audience {link.audience_id} is of type "
                    f"{definition.type}, which cannot hold the column's values ({wanted} expected); "
                    "map another merge field"
                )
    return problems


def provision_merge_fields(settings: Settings, mailchimp: MailchimpPort, dataverse: DataversePort) -> list[str]:
    """Creates every mapped merge field an audience lacks, of the type that fits its column; idempotent."""
    done: list[str] = []
    audiences = sorted({link.audience_id for link in settings.links})
    types = {m.merge_field: _attribute_type(dataverse, m) for m in settings.field_map}
    for audience_id in audiences:
        existing = {str(m["tag"]) for m in mailchimp.merge_fields(audience_id)}
        for mapping in settings.field_map:
            if mapping.merge_field in existing:
                continue  # never changed: its type is the audience owner's
            fitting = fields.fitting_type(mapping.column, types.get(mapping.merge_field))
            body: dict[str, object] = {
                "tag": mapping.merge_field,
                "name": mapping.merge_field.title(),
                "type": fitting.type,
                "required": False,
            }
            if fitting.date_format:
                body["options"] = {"date_format": fitting.date_format}
            try:
                mailchimp.create_merge_field(audience_id, body)
            except MailchimpError as exc:
                raise ConsentBridgeError(
                    f"merge field {mapping.merge_field} of audience {audience_id}",
                    f"Mailchimp refused to create it ({exc})",
                    "create it in the audience's settings, or map another merge field in FIELD_MAP",
                ) from None
            existing.add(mapping.merge_field)
            done.append(f"created merge field {mapping.merge_field} ({fitting.type}) in audience {audience_id}")
    return done
