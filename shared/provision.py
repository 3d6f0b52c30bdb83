"""`provision`: creates what the product needs and is not there yet, from storage to Dataverse.

The metadata builders and idempotent creators it uses are in shared/adapters/schema.py.
"""

from __future__ import annotations

from typing import Any

from shared.adapters.ports import DataversePort, MailchimpPort, StoragePort
from shared.adapters.schema import InSolution, attribute_exists, ensure_solution, label
from shared.errors import ConfigurationError
from shared.features.campaigns import core as campaigns
from shared.features.fields import schema as field_schema
from shared.features.memberships import schema as membership_schema
from shared.features.preferences import schema as preference_schema
from shared.features.status import schema as status_schema
from shared.rules.consent import SUBSCRIBER_STATUS_CODES
from shared.settings import Settings

STATUS_LABELS = {
    "subscribed": "Subscribed",
    "unsubscribed": "Unsubscribed",
    "cleaned": "Cleaned",
    "pending": "Pending",
    "transactional": "Transactional",
    "archived": "Archived",
}
RECORD_TABLES = ("contact", "lead", "account")


def status_column_metadata(logical_name: str) -> dict[str, Any]:
    """A local choice column with the contract's option values."""
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        "AttributeType": "Picklist",
        "AttributeTypeName": {"Value": "PicklistType"},
        "SchemaName": logical_name,
        "SourceTypeMask": 0,
        "DisplayName": label("Subscriber Status"),
        "Description": label("Mailchimp subscription status, written by Consent Bridge"),
        "RequiredLevel": {
            "Value": "None",
            "CanBeChanged": True,
            "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
        },
        "OptionSet": {
            "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata",
            "IsGlobal": False,
            "OptionSetType": "Picklist",
            "Options": [
                {"Value": code, "Label": label(STATUS_LABELS[status])}
                for status, code in SUBSCRIBER_STATUS_CODES.items()
            ],
        },
    }


def provision(
    settings: Settings, storage: StoragePort, dataverse: DataversePort, mailchimp: MailchimpPort | None = None
) -> list[str]:
    """Idempotent: returns a line per thing it created (nothing on a second call). Every Dataverse component
    lands in the product's unmanaged solution, whose publisher carries DATAVERSE_PREFIX. With ``mailchimp``, the
    mapped merge fields (FIELD_MAP) an audience lacks are created too."""
    done = [f"created {name}" for name in storage.ensure()]
    dataverse = InSolution(dataverse)  # the same port: components go into the solution, refusals name them
    done += ensure_solution(dataverse, settings.dataverse_prefix)
    column = settings.subscriber_status_column
    if column:
        if not column.startswith(f"{settings.dataverse_prefix}_"):
            raise ConfigurationError(
                "SUBSCRIBER_STATUS_COLUMN",
                f"{column!r} must start with the publisher prefix '{settings.dataverse_prefix}_' "
                "(DATAVERSE_PREFIX) to be created",
                "rename the column or empty the setting to leave the column out",
            )
        for table in RECORD_TABLES:
            if not attribute_exists(dataverse, table, column):
                dataverse.create_attribute(table, status_column_metadata(column))
                done.append(f"created column {column} on {table}")
    done += campaigns.provision_schema(dataverse, settings.dataverse_prefix)
    done += preference_schema.provision_schema(dataverse, settings.dataverse_prefix)
    done += status_schema.provision_schema(dataverse, settings.dataverse_prefix)
    done += membership_schema.provision_schema(dataverse, settings.dataverse_prefix)
    if mailchimp is not None:
        done += field_schema.provision_merge_fields(settings, mailchimp, dataverse)
    return done
