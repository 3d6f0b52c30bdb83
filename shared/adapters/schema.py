"""Creates what the product needs and is not there yet: storage tables and queues, Dataverse tables,
columns, lookups and views. Every ``ensure_*`` is idempotent and returns True when it created something.

Metadata builders (plain dicts in the Web API's metadata shape):

    table_metadata(schema_name, display, plural_display, primary_name_schema, primary_name_display, description)
    string_column(schema, display, max_length=100)        memo_column(schema, display, max_length=2000)
    boolean_column(schema, display)                        integer_column(schema, display)
    datetime_column(schema, display)                       choice_column(schema, display, options: dict[int, str])

Idempotent creators:

    ensure_table(dataverse, metadata) -> bool
    ensure_column(dataverse, table_logical, metadata) -> bool
    ensure_lookup(dataverse, referencing_table, referenced_table, lookup_schema_name, display,
                  relationship_schema_name) -> bool
    ensure_view(dataverse, table_logical, name, fetchxml, layoutxml) -> bool

A lookup's navigation property (the name ``@odata.bind`` takes) is its SchemaName, case included:
``{"cbr_Campaign@odata.bind": "/cbr_mailchimpcampaigns(<id>)"}``; reads return it as ``_cbr_campaign_value``.

The solution: ``ensure_solution(dataverse, prefix)`` creates the publisher (customization prefix
``DATAVERSE_PREFIX``) and the unmanaged solution ``ConsentBridge``; ``InSolution(dataverse)`` is the
same port with every metadata call and view create sent with ``MSCRM.SolutionUniqueName``, so that every
component the product creates lands in that solution.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shared.adapters.dataverse import DataverseError
from shared.adapters.ports import DataversePort
from shared.errors import ConfigurationError, ConsentBridgeError

SOLUTION = "ConsentBridge"
PUBLISHER = "ConsentBridgePublisher"
# option values are <option value prefix><4 digits>: the contract's choice values (100000000...) are prefix 10000
OPTION_VALUE_PREFIX = 10000


@dataclass(frozen=True)
class PrefixedNames:
    """Column, lookup and navigation names of a product table under the publisher prefix (DATAVERSE_PREFIX)."""

    prefix: str

    def column(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def navigation(self, kind: str) -> str:
        """The lookup's navigation property (its SchemaName), as ``@odata.bind`` takes it."""
        return f"{self.prefix}_{kind.title()}"

    def lookup_value(self, kind: str) -> str:
        return f"_{self.prefix}_{kind}_value"


def label(text: str) -> dict[str, Any]:
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.Label",
        "LocalizedLabels": [
            {"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": text, "LanguageCode": 1033}
        ],
    }


# ---- metadata builders ----------------------------------------------------------------------------


def _required(level: str = "None") -> dict[str, Any]:
    return {"Value": level, "CanBeChanged": True, "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"}


def _column(kind: str, schema: str, display: str, description: str) -> dict[str, Any]:
    return {
        "@odata.type": f"Microsoft.Dynamics.CRM.{kind}AttributeMetadata",
        "AttributeType": kind,
        "AttributeTypeName": {"Value": f"{kind}Type"},
        "SchemaName": schema,
        "DisplayName": label(display),
        "Description": label(description or display),
        "RequiredLevel": _required(),
    }


def table_metadata(
    schema_name: str,
    display: str,
    plural_display: str,
    primary_name_schema: str,
    primary_name_display: str,
    description: str,
    *,
    primary_name_length: int = 200,
    ownership: str = "OrganizationOwned",
    change_tracking: bool = False,
) -> dict[str, Any]:
    """A custom table with its primary name column; other columns are added with ensure_column."""
    primary = string_column(primary_name_schema, primary_name_display, primary_name_length)
    primary["IsPrimaryName"] = True
    primary["RequiredLevel"] = _required("ApplicationRequired")
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
        "SchemaName": schema_name,
        "DisplayName": label(display),
        "DisplayCollectionName": label(plural_display),
        "Description": label(description),
        "OwnershipType": ownership,
        "IsActivity": False,
        "HasActivities": False,
        "HasNotes": False,
        "ChangeTrackingEnabled": change_tracking,
        "Attributes": [primary],
    }


def string_column(schema: str, display: str, max_length: int = 100, *, description: str = "") -> dict[str, Any]:
    return {**_column("String", schema, display, description), "MaxLength": max_length, "FormatName": {"Value": "Text"}}


def memo_column(schema: str, display: str, max_length: int = 2000, *, description: str = "") -> dict[str, Any]:
    return {**_column("Memo", schema, display, description), "MaxLength": max_length, "Format": "TextArea"}


def boolean_column(schema: str, display: str, *, description: str = "") -> dict[str, Any]:
    return {
        **_column("Boolean", schema, display, description),
        "DefaultValue": False,
        "OptionSet": {
            "@odata.type": "Microsoft.Dynamics.CRM.BooleanOptionSetMetadata",
            "TrueOption": {"Value": 1, "Label": label("Yes")},
            "FalseOption": {"Value": 0, "Label": label("No")},
            "OptionSetType": "Boolean",
        },
    }


def integer_column(
    schema: str, display: str, *, min_value: int = 0, max_value: int = 2_147_483_647, description: str = ""
) -> dict[str, Any]:
    return {
        **_column("Integer", schema, display, description),
        "Format": "None",
        "MinValue": min_value,
        "MaxValue": max_value,
    }


def datetime_column(schema: str, display: str, *, description: str = "") -> dict[str, Any]:
    return {
        **_column("DateTime", schema, display, description),
        "Format": "DateAndTime",
        "DateTimeBehavior": {"Value": "UserLocal"},
    }


def choice_column(schema: str, display: str, options: dict[int, str], *, description: str = "") -> dict[str, Any]:
    """A local choice (picklist) column; option values should carry the publisher's option value prefix."""
    return {
        **_column("Picklist", schema, display, description),
        "SourceTypeMask": 0,
        "OptionSet": {
            "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata",
            "IsGlobal": False,
            "OptionSetType": "Picklist",
            "Options": [{"Value": value, "Label": label(text)} for value, text in options.items()],
        },
    }


def lookup_relationship_metadata(
    referencing_table: str,
    referenced_table: str,
    lookup_schema_name: str,
    display: str,
    relationship_schema_name: str,
    *,
    delete: str = "RemoveLink",
) -> dict[str, Any]:
    """A one-to-many relationship whose lookup column ``lookup_schema_name`` goes on ``referencing_table``."""
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
        "SchemaName": relationship_schema_name,
        "ReferencedEntity": referenced_table,
        "ReferencingEntity": referencing_table,
        "CascadeConfiguration": {
            "Assign": "NoCascade",
            "Delete": delete,
            "Merge": "NoCascade",
            "Reparent": "NoCascade",
            "Share": "NoCascade",
            "Unshare": "NoCascade",
        },
        "AssociatedMenuConfiguration": {"Behavior": "UseCollectionName", "Group": "Details", "Order": 10000},
        "Lookup": {
            "@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata",
            "AttributeType": "Lookup",
            "AttributeTypeName": {"Value": "LookupType"},
            "SchemaName": lookup_schema_name,
            "DisplayName": label(display),
            "Description": label(display),
            "RequiredLevel": _required(),
        },
    }


# ---- idempotent creators ----------------------------------------------------------------------------


def ensure_table(dataverse: DataversePort, metadata: dict[str, Any]) -> bool:
    """Creates the table unless a table of that logical name exists."""
    if dataverse.entity_definition(metadata["SchemaName"].lower(), select=("LogicalName",)) is not None:
        return False
    dataverse.create_entity(metadata)
    return True


def ensure_tables(dataverse: DataversePort, tables: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[str]:
    """ensure_table and ensure_columns for (table metadata, columns) pairs; returns a line per thing created."""
    done: list[str] = []
    for metadata, columns in tables:
        logical = metadata["SchemaName"].lower()
        if ensure_table(dataverse, metadata):
            done.append(f"created table {logical}")
        done += [f"created column {name} on {logical}" for name in ensure_columns(dataverse, logical, columns)]
    return done


def ensure_column(dataverse: DataversePort, table_logical: str, metadata: dict[str, Any]) -> bool:
    """Adds the column to the table unless a column of that logical name exists."""
    if attribute_exists(dataverse, table_logical, metadata["SchemaName"].lower()):
        return False
    dataverse.create_attribute(table_logical, metadata)
    return True


def ensure_columns(dataverse: DataversePort, table_logical: str, columns: list[dict[str, Any]]) -> list[str]:
    """ensure_column for many columns of one table with one read; returns the logical names created."""
    existing = {
        item["LogicalName"]
        for item in dataverse.get(
            f"EntityDefinitions(LogicalName='{table_logical}')/Attributes", {"$select": "LogicalName"}
        ).get("value", [])
    }
    created: list[str] = []
    for metadata in columns:
        name = metadata["SchemaName"].lower()
        if name not in existing:
            dataverse.create_attribute(table_logical, metadata)
            created.append(name)
    return created


def ensure_lookup(
    dataverse: DataversePort,
    referencing_table: str,
    referenced_table: str,
    lookup_schema_name: str,
    display: str,
    relationship_schema_name: str,
    *,
    delete: str = "RemoveLink",
) -> bool:
    """Creates the one-to-many relationship and its lookup column unless the relationship or the column exists.

    ``delete`` is what deleting a ``referenced_table`` row does to the rows pointing at it: RemoveLink
    (clear the lookup), Cascade (delete them too) or Restrict (refuse the delete)."""
    if dataverse.relationship_definition(relationship_schema_name, select=("SchemaName",)) is not None:
        return False
    if attribute_exists(dataverse, referencing_table, lookup_schema_name.lower()):
        return False  # the column is there under another relationship name: nothing to add
    dataverse.create_relationship(
        lookup_relationship_metadata(
            referencing_table, referenced_table, lookup_schema_name, display, relationship_schema_name, delete=delete
        )
    )
    return True


def ensure_view(dataverse: DataversePort, table_logical: str, name: str, fetchxml: str, layoutxml: str) -> bool:
    """Creates a public system view of the table unless one of that name exists (publish afterwards)."""
    quoted = name.replace("'", "''")
    found = dataverse.get(
        "savedqueries",
        {
            "$select": "savedqueryid",
            "$filter": (f"name eq '{quoted}' and returnedtypecode eq '{table_logical}'"),
            "$top": "1",
        },
    ).get("value", [])
    if found:
        return False
    dataverse.create(
        "savedqueries",
        {
            "name": name,
            "returnedtypecode": table_logical,
            "fetchxml": fetchxml,
            "layoutxml": layoutxml,
            "querytype": 0,
            "isdefault": False,
        },
    )
    return True


def attribute_exists(dataverse: DataversePort, table: str, column: str) -> bool:
    return dataverse.attribute_definition(table, column, select=("LogicalName",)) is not None


def view_fetch(table: str, columns: list[str], *, newest_first: str, conditions: str = "", linked: str = "") -> str:
    """A saved view's FetchXML: ``columns`` of ``table`` newest first, filtered by ``conditions`` (condition
    elements, all of which must hold) and joined through ``linked`` (a link-entity element), when given."""
    attributes = "".join(f'<attribute name="{column}"/>' for column in columns)
    where = f'<filter type="and">{conditions}</filter>' if conditions else ""
    return (
        f'<fetch version="1.0" mapping="logical"><entity name="{table}">{attributes}'
        f'<order attribute="{newest_first}" descending="true"/>{where}{linked}</entity></fetch>'
    )


def view_layout(table: str, columns: list[str]) -> str:
    """A saved view's grid: one cell per column, the first one the jump column."""
    cells = "".join(f'<cell name="{column}" width="150"/>' for column in columns)
    return (
        f'<grid name="resultset" jump="{columns[0]}" select="1" icon="1" preview="1">'
        f'<row name="result" id="{table}id">{cells}</row></grid>'
    )


# ---- the solution -------------------------------------------------------------------------------------


def ensure_solution(dataverse: DataversePort, prefix: str) -> list[str]:
    """The publisher with customization prefix ``prefix`` and the unmanaged solution the product's components
    go into; a line per thing created. A publisher of that name with another prefix is a configuration error."""
    done: list[str] = []
    publishers = dataverse.get(
        "publishers",
        {"$select": "publisherid,customizationprefix", "$filter": f"uniquename eq '{PUBLISHER}'", "$top": "1"},
    ).get("value", [])
    if publishers:
        publisher_id = publishers[0]["publisherid"]
        if str(publishers[0].get("customizationprefix") or "").lower() != prefix.lower():
            raise ConfigurationError(
                "DATAVERSE_PREFIX",
                f"is '{prefix}' but the publisher {PUBLISHER} in Dataverse has the prefix "
                f"'{publishers[0].get('customizationprefix')}'",
                "set DATAVERSE_PREFIX to the publisher's prefix (the columns already created carry it)",
            )
    else:
        publisher_id = dataverse.create(
            "publishers",
            {
                "uniquename": PUBLISHER,
                "friendlyname": "Consent Bridge",
                "customizationprefix": prefix,
                "customizationoptionvalueprefix": OPTION_VALUE_PREFIX,
                "description": "Publisher of the tables, columns and views Consent Bridge creates",
            },
        )
        done.append(f"created publisher {PUBLISHER} (prefix {prefix})")
    solutions = dataverse.get(
        "solutions", {"$select": "solutionid", "$filter": f"uniquename eq '{SOLUTION}'", "$top": "1"}
    ).get("value", [])
    if not solutions:
        dataverse.create(
            "solutions",
            {
                "uniquename": SOLUTION,
                "friendlyname": "Consent Bridge",
                "version": "1.0.0.0",
                "publisherid@odata.bind": f"/publishers({publisher_id})",
                "description": "Everything Consent Bridge creates in Dataverse; remove it to remove them",
            },
        )
        done.append(f"created solution {SOLUTION}")
    return done


class InSolution:
    """The Dataverse port with every component it creates sent into ``solution``: tables, columns,
    relationships (``MSCRM.SolutionUniqueName``) and views. A refusal of any call becomes one
    ConsentBridgeError naming the table, column or view, the call, and what to grant or fix."""

    VIEW_SETS = frozenset({"savedqueries"})

    def __init__(self, dataverse: DataversePort, solution: str = SOLUTION) -> None:
        self.inner = dataverse
        self.solution = solution

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(
        self, path: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        with _refusal(_subject_of(path)):
            return self.inner.get(path, params, headers)

    def entity_definition(self, logical_name: str, select: Sequence[str] = ("LogicalName",)) -> dict[str, Any] | None:
        with _refusal(f"table {logical_name}"):
            return self.inner.entity_definition(logical_name, select)

    def attribute_definition(
        self, entity_logical_name: str, attribute_logical_name: str, select: Sequence[str] = ("LogicalName",)
    ) -> dict[str, Any] | None:
        with _refusal(f"column {attribute_logical_name} on {entity_logical_name}"):
            return self.inner.attribute_definition(entity_logical_name, attribute_logical_name, select)

    def relationship_definition(
        self, schema_name: str, select: Sequence[str] = ("SchemaName",)
    ) -> dict[str, Any] | None:
        with _refusal(f"relationship {schema_name}"):
            return self.inner.relationship_definition(schema_name, select)

    def create(self, entity_set: str, body: dict[str, Any], *, solution: str | None = None) -> str:
        in_solution = solution or (self.solution if entity_set in self.VIEW_SETS else None)
        if entity_set in self.VIEW_SETS:
            subject = f"view '{body.get('name')}' on {body.get('returnedtypecode')}"
        else:
            subject = f"{entity_set} row {body.get('uniquename') or ''}".strip()
        with _refusal(subject):
            return self.inner.create(entity_set, body, solution=in_solution)

    def create_entity(self, metadata: dict[str, Any], *, solution: str | None = None) -> None:
        with _refusal(f"table {str(metadata.get('SchemaName')).lower()}"):
            self.inner.create_entity(metadata, solution=solution or self.solution)

    def create_attribute(
        self, entity_logical_name: str, attribute_metadata: dict[str, Any], *, solution: str | None = None
    ) -> None:
        with _refusal(f"column {str(attribute_metadata.get('SchemaName')).lower()} on {entity_logical_name}"):
            self.inner.create_attribute(entity_logical_name, attribute_metadata, solution=solution or self.solution)

    def create_relationship(self, metadata: dict[str, Any], *, solution: str | None = None) -> None:
        lookup = str((metadata.get("Lookup") or {}).get("SchemaName")).lower()
        with _refusal(f"lookup {lookup} on {metadata.get('ReferencingEntity')}"):
            self.inner.create_relationship(metadata, solution=solution or self.solution)

    def publish(self, entity_logical_names: Sequence[str]) -> None:
        with _refusal(f"publishing the views of {', '.join(entity_logical_names)}"):
            self.inner.publish(entity_logical_names)


_DEFINITION = re.compile(
    r"^EntityDefinitions\(LogicalName='(?P<table>[^']*)'\)(?:/Attributes(?:\(LogicalName='(?P<column>[^']*)'\))?)?"
)


def _subject_of(path: str) -> str:
    """What a read concerns, for a refusal's first words: a table, a column, or an entity set."""
    found = _DEFINITION.match(path)
    if found and found.group("column"):
        return f"column {found.group('column')} on {found.group('table')}"
    if found:
        return f"table {found.group('table')}"
    return {"savedqueries": "views (savedqueries)"}.get(path, path.split("?")[0])


@contextmanager
def _refusal(subject: str) -> Iterator[None]:
    try:
        yield
    except DataverseError as exc:
        raise ConsentBridgeError(subject, str(exc)) from None
