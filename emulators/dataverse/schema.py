"""Table and column definitions: the out-of-box contact, lead, account, list and listmember tables,
custom tables and columns created through the metadata Web API, and their EntityMetadata JSON.

A ``Table`` is the ``EntityType`` that ``odata.py`` and ``fetchxml.py`` query against.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError

# Attribute types as the metadata API names them.
STRING, MEMO, BOOLEAN, INTEGER, BIGINT = "String", "Memo", "Boolean", "Integer", "BigInt"
DATETIME, GUID, PICKLIST = "DateTime", "Uniqueidentifier", "Picklist"
STATE, STATUS, LOOKUP = "State", "Status", "Lookup"
ENTITYNAME = "EntityName"

_METADATA_TYPES = {
    STRING: "StringAttributeMetadata",
    MEMO: "MemoAttributeMetadata",
    BOOLEAN: "BooleanAttributeMetadata",
    INTEGER: "IntegerAttributeMetadata",
    BIGINT: "BigIntAttributeMetadata",
    DATETIME: "DateTimeAttributeMetadata",
    GUID: "AttributeMetadata",
    PICKLIST: "PicklistAttributeMetadata",
    STATE: "StateAttributeMetadata",
    STATUS: "StatusAttributeMetadata",
    LOOKUP: "LookupAttributeMetadata",
    ENTITYNAME: "EntityNameAttributeMetadata",
}
_TYPE_BY_METADATA = {v: k for k, v in _METADATA_TYPES.items()}
CREATABLE_TYPES = {STRING, MEMO, BOOLEAN, INTEGER, BIGINT, DATETIME, PICKLIST}

MEMBER_TYPE_CODES = {1: "account", 2: "contact", 4: "lead"}  # list.createdfromcode
LIST_NAVIGATIONS = {
    "account": "listaccount_association",
    "contact": "listcontact_association",
    "lead": "listlead_association",
}


def label(text: str) -> dict[str, Any]:
    localized = {"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": text, "LanguageCode": 1033}
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.Label",
        "LocalizedLabels": [localized],
        "UserLocalizedLabel": localized,
    }


def label_text(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    user = value.get("UserLocalizedLabel")
    if isinstance(user, dict) and user.get("Label"):
        return str(user["Label"])
    for item in value.get("LocalizedLabels") or []:
        if isinstance(item, dict) and item.get("Label"):
            return str(item["Label"])
    return None


@dataclass
class Option:
    value: int
    label: str
    state: int | None = None  # statuscode options belong to one statecode


@dataclass
class Attribute:
    logical_name: str
    type: str
    display_name: str = ""
    schema_name: str = ""
    max_length: int | None = None
    options: list[Option] = field(default_factory=list)
    default: Any = None
    valid_for_create: bool = True
    valid_for_update: bool = True
    required_level: str = "None"
    targets: tuple[str, ...] = ()  # lookups
    is_custom: bool = False
    is_primary_id: bool = False
    is_primary_name: bool = False
    min_value: int | None = None
    max_value: int | None = None
    format: str | None = None
    metadata_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        if not self.schema_name:
            self.schema_name = self.logical_name
        if not self.display_name:
            self.display_name = self.logical_name

    @property
    def row_key(self) -> str:
        """The key in a row dict: lookups are stored as ``_<name>_value``."""
        return f"_{self.logical_name}_value" if self.type == LOOKUP else self.logical_name

    def option_label(self, value: Any) -> str | None:
        if self.type == BOOLEAN:
            for option in self.options:
                if option.value == int(bool(value)):
                    return option.label
            return None
        for option in self.options:
            if option.value == value:
                return option.label
        return None


def _bool(
    name: str, display: str, default: bool = False, true: str = "Do Not Allow", false: str = "Allow", **kw: Any
) -> Attribute:
    return Attribute(name, BOOLEAN, display, default=default, options=[Option(0, false), Option(1, true)], **kw)


def _string(name: str, display: str, max_length: int, **kw: Any) -> Attribute:
    return Attribute(name, STRING, display, max_length=max_length, **kw)


def _system(name: str, type_: str, display: str, **kw: Any) -> Attribute:
    return Attribute(name, type_, display, valid_for_create=False, valid_for_update=False, **kw)


@dataclass
class Navigation:
    """A collection-valued navigation property (N:N through listmember for marketing lists)."""

    name: str
    target: str  # logical name of the related table


@dataclass
class Table:
    logical_name: str
    schema_name: str
    entity_set_name: str
    primary_id: str
    primary_name: str
    display_name: str
    display_collection_name: str
    attributes: dict[str, Attribute]
    object_type_code: int
    change_tracking: bool = True
    is_custom: bool = False
    ownership: str = "UserOwned"
    is_intersect: bool = False
    can_retrieve: bool = True  # listmember supports Create, Delete and RetrieveMultiple only
    navigations: dict[str, Navigation] = field(default_factory=dict)
    bindings: dict[str, tuple[str, str]] = field(default_factory=dict)  # "<nav>@odata.bind" -> (lookup, target)
    read_only_states: frozenset[int] = frozenset()
    inactive_states: frozenset[int] = frozenset()
    metadata_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    lookup: Callable[[str], Table | None] | None = field(default=None, repr=False)  # set by the catalogue
    _by_row_key: dict[str, Attribute] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        self._by_row_key = {a.row_key: a for a in self.attributes.values()}

    def add_attribute(self, attribute: Attribute) -> None:
        self.attributes[attribute.logical_name] = attribute
        self.reindex()

    # ---- the EntityType protocol of odata.py / fetchxml.py ----------------------------------
    def attribute_type(self, name: str) -> str | None:
        attribute = self._by_row_key.get(name) or self.attributes.get(name)
        return attribute.type if attribute is not None else None

    def navigation(self, name: str) -> Table | None:
        nav = self.navigations.get(name)
        if nav is None or self.lookup is None:
            return None
        return self.lookup(nav.target)

    def single_navigation(self, name: str) -> tuple[str, Table] | None:
        """A lookup followed in a query path (``sdkmessageid/name``): its row key and the one table it targets."""
        attribute = self.attributes.get(name)
        if attribute is None or attribute.type != LOOKUP or len(attribute.targets) != 1 or self.lookup is None:
            return None
        target = self.lookup(attribute.targets[0])
        return None if target is None else (attribute.row_key, target)

    # ---- helpers -------------------------------------------------------------------------------
    def by_row_key(self, key: str) -> Attribute | None:
        return self._by_row_key.get(key)

    def row_keys(self) -> list[str]:
        return list(self._by_row_key)

    def state_attribute(self) -> Attribute | None:
        return self.attributes.get("statecode")

    def default_status(self, state: int) -> int | None:
        status = self.attributes.get("statuscode")
        if status is None:
            return None
        for option in status.options:
            if option.state == state:
                return option.value
        return None


def _state(options: list[tuple[int, str]]) -> Attribute:
    return Attribute(
        "statecode", STATE, "Status", options=[Option(v, t) for v, t in options], default=0, valid_for_create=False
    )


def _status(options: list[tuple[int, str, int]], default: int) -> Attribute:
    return Attribute(
        "statuscode", STATUS, "Status Reason", options=[Option(v, t, s) for v, t, s in options], default=default
    )


def _common(entity: str) -> list[Attribute]:
    return [
        _system("createdon", DATETIME, "Created On"),
        _system("modifiedon", DATETIME, "Modified On"),
        _system("versionnumber", BIGINT, "Version Number"),
        _system("createdby", LOOKUP, "Created By", targets=("systemuser",)),
        _system("modifiedby", LOOKUP, "Modified By", targets=("systemuser",)),
    ]


def _person_columns(entity: str) -> list[Attribute]:
    return [
        _string("emailaddress1", "Email", 100, format="Email"),
        _string("emailaddress2", "Email Address 2", 100, format="Email"),
        _string("emailaddress3", "Email Address 3", 100, format="Email"),
        _bool("donotbulkemail", "Do not allow Bulk Emails"),
        _bool("donotemail", "Do not allow Emails"),
        _bool(
            "donotsendmm",
            "Marketing Material" if entity == "lead" else "Send Marketing Materials",
            true="Do Not Send",
            false="Send",
        ),
        _bool("donotphone", "Do not allow Phone Calls"),
        _bool("donotfax", "Do not allow Faxes"),
        _bool("donotpostalmail", "Do not allow Mails"),
        _bool("donotbulkpostalmail", "Do not allow Bulk Mails", true="Yes", false="No"),
        _bool("followemail", "Follow Email Activity", default=True, true="Allow", false="Do Not Allow"),
        _string("telephone1", "Business Phone", 50),
        Attribute("description", MEMO, "Description", max_length=2000),
        *(
            column
            for n in (1, 2)
            for column in (
                _string(f"address{n}_line1", f"Address {n}: Street 1", 250),
                _string(f"address{n}_line2", f"Address {n}: Street 2", 250),
                _string(f"address{n}_city", f"Address {n}: City", 80),
                _string(f"address{n}_stateorprovince", f"Address {n}: State/Province", 50),
                _string(f"address{n}_postalcode", f"Address {n}: ZIP/Postal Code", 20),
                _string(f"address{n}_country", f"Address {n}: Country/Region", 80),
            )
        ),
    ]


def _table(
    logical: str,
    schema: str,
    entity_set: str,
    primary_id: str,
    primary_name: str,
    display: str,
    collection: str,
    otc: int,
    attributes: Iterable[Attribute],
    **kw: Any,
) -> Table:
    by_name = {a.logical_name: a for a in attributes}
    by_name[primary_id].is_primary_id = True
    by_name[primary_name].is_primary_name = True
    return Table(logical, schema, entity_set, primary_id, primary_name, display, collection, by_name, otc, **kw)


def builtin_tables() -> list[Table]:
    contact = _table(
        "contact",
        "Contact",
        "contacts",
        "contactid",
        "fullname",
        "Contact",
        "Contacts",
        2,
        [
            Attribute("contactid", GUID, "Contact", valid_for_update=False, required_level="SystemRequired"),
            _string("firstname", "First Name", 50, required_level="Recommended"),
            _string("lastname", "Last Name", 50, required_level="ApplicationRequired"),
            _string("middlename", "Middle Name", 50),
            _system("fullname", STRING, "Full Name", max_length=160),
            _string("jobtitle", "Job Title", 100),
            _bool("msdyn_disablewebtracking", "Disable Web Tracking", true="Yes", false="No"),
            Attribute("parentcustomerid", LOOKUP, "Company Name", targets=("account", "contact")),
            *_person_columns("contact"),
            _state([(0, "Active"), (1, "Inactive")]),
            _status([(1, "Active", 0), (2, "Inactive", 1)], 1),
            *_common("contact"),
        ],
        navigations={"listcontact_association": Navigation("listcontact_association", "list")},
        bindings={
            "parentcustomerid_account@odata.bind": ("parentcustomerid", "account"),
            "parentcustomerid_contact@odata.bind": ("parentcustomerid", "contact"),
        },
        inactive_states=frozenset({1}),
    )
    lead = _table(
        "lead",
        "Lead",
        "leads",
        "leadid",
        "fullname",
        "Lead",
        "Leads",
        4,
        [
            Attribute("leadid", GUID, "Lead", valid_for_update=False, required_level="SystemRequired"),
            _string("firstname", "First Name", 50, required_level="Recommended"),
            _string("lastname", "Last Name", 50, required_level="ApplicationRequired"),
            _system("fullname", STRING, "Name", max_length=160),
            _string("companyname", "Company Name", 100, required_level="Recommended"),
            _string("subject", "Topic", 300),
            _string("jobtitle", "Job Title", 100),
            _bool("msdyn_gdproptout", "GDPR Optout", true="Yes", false="No"),
            *_person_columns("lead"),
            _state([(0, "Open"), (1, "Qualified"), (2, "Disqualified")]),
            _status(
                [
                    (1, "New", 0),
                    (2, "Contacted", 0),
                    (3, "Qualified", 1),
                    (4, "Lost", 2),
                    (5, "Cannot Contact", 2),
                    (6, "No Longer Interested", 2),
                    (7, "Canceled", 2),
                ],
                1,
            ),
            *_common("lead"),
        ],
        navigations={"listlead_association": Navigation("listlead_association", "list")},
        read_only_states=frozenset({1, 2}),
    )
    account = _table(
        "account",
        "Account",
        "accounts",
        "accountid",
        "name",
        "Account",
        "Accounts",
        1,
        [
            Attribute("accountid", GUID, "Account", valid_for_update=False, required_level="SystemRequired"),
            _string("name", "Account Name", 160, required_level="ApplicationRequired"),
            _string("accountnumber", "Account Number", 20),
            _bool("msdyn_gdproptout", "GDPR Optout", true="Yes", false="No"),
            *_person_columns("account"),
            _state([(0, "Active"), (1, "Inactive")]),
            _status([(1, "Active", 0), (2, "Inactive", 1)], 1),
            *_common("account"),
        ],
        navigations={"listaccount_association": Navigation("listaccount_association", "list")},
        inactive_states=frozenset({1}),
    )
    marketing_list = _table(
        "list",
        "List",
        "lists",
        "listid",
        "listname",
        "Marketing List",
        "Marketing Lists",
        4300,
        [
            Attribute("listid", GUID, "List", valid_for_update=False, required_level="SystemRequired"),
            _string("listname", "Name", 128, required_level="SystemRequired"),
            Attribute(
                "type",
                BOOLEAN,
                "Type",
                default=False,
                valid_for_update=False,
                options=[Option(0, "Static"), Option(1, "Dynamic")],
            ),
            Attribute(
                "createdfromcode",
                PICKLIST,
                "Marketing List Member Type",
                valid_for_update=False,
                required_level="SystemRequired",
                options=[Option(1, "Account"), Option(2, "Contact"), Option(4, "Lead")],
            ),
            Attribute("membertype", INTEGER, "Member Type", valid_for_update=False),
            Attribute("query", MEMO, "Query", max_length=1073741823),
            Attribute("lockstatus", BOOLEAN, "Locked", default=False, options=[Option(0, "No"), Option(1, "Yes")]),
            _system("membercount", INTEGER, "Members Count"),
            Attribute(
                "donotsendonoptout",
                BOOLEAN,
                "Exclude Members Who Opt Out",
                default=True,
                options=[Option(0, "No"), Option(1, "Yes")],
            ),
            Attribute(
                "ignoreinactivelistmembers",
                BOOLEAN,
                "Exclude Inactive Members",
                default=True,
                options=[Option(0, "No"), Option(1, "Yes")],
            ),
            _string("purpose", "Purpose", 512),
            _string("source", "Source", 128),
            Attribute("description", MEMO, "Description", max_length=2000),
            _state([(0, "Active"), (1, "Inactive")]),
            _status([(0, "Active", 0), (1, "Inactive", 1)], 0),
            *_common("list"),
        ],
        navigations={nav: Navigation(nav, target) for target, nav in LIST_NAVIGATIONS.items()},
    )
    list_member = _table(
        "listmember",
        "ListMember",
        "listmembers",
        "listmemberid",
        "name",
        "Marketing List Member",
        "Marketing List Members",
        4301,
        [
            _system("listmemberid", GUID, "List Member"),
            _system("name", STRING, "Name", max_length=100),
            _system("listid", LOOKUP, "List", targets=("list",), required_level="SystemRequired"),
            _system(
                "entityid", LOOKUP, "Member", targets=("account", "contact", "lead"), required_level="SystemRequired"
            ),
            _system("entitytype", ENTITYNAME, "Entity Type"),
            _system(
                "entityidtypecode",
                PICKLIST,
                "Entity Type Code",
                options=[Option(1, "Account"), Option(2, "Contact"), Option(4, "Lead")],
            ),
            *_common("listmember"),
        ],
        ownership="None",
        is_intersect=True,
        can_retrieve=False,
    )
    saved_query = _table(
        "savedquery",
        "SavedQuery",
        "savedqueries",
        "savedqueryid",
        "name",
        "View",
        "Views",
        1039,
        [
            Attribute("savedqueryid", GUID, "View", valid_for_update=False, required_level="SystemRequired"),
            _string("name", "Name", 200, required_level="SystemRequired"),
            Attribute(
                "returnedtypecode",
                ENTITYNAME,
                "Returned Type Code",
                valid_for_update=False,
                required_level="SystemRequired",
            ),
            Attribute("fetchxml", MEMO, "Fetch Xml", max_length=1073741823),
            Attribute("layoutxml", MEMO, "Grid Layout", max_length=1073741823),
            Attribute("querytype", INTEGER, "Query Type", default=0, min_value=0, max_value=2147483647),
            Attribute("isdefault", BOOLEAN, "Is Default", default=False, options=[Option(0, "No"), Option(1, "Yes")]),
            Attribute("description", MEMO, "Description", max_length=2000),
            _state([(0, "Active"), (1, "Inactive")]),
            _status([(1, "Active", 0), (2, "Inactive", 1)], 1),
            *_common("savedquery"),
        ],
        ownership="OrganizationOwned",
        change_tracking=False,
    )
    publisher = _table(
        "publisher",
        "Publisher",
        "publishers",
        "publisherid",
        "friendlyname",
        "Publisher",
        "Publishers",
        7101,
        [
            Attribute("publisherid", GUID, "Publisher", valid_for_update=False, required_level="SystemRequired"),
            _string("uniquename", "Name", 256, required_level="SystemRequired", valid_for_update=False),
            _string("friendlyname", "Display Name", 256, required_level="SystemRequired"),
            _string("customizationprefix", "Prefix", 8, required_level="SystemRequired"),
            Attribute(
                "customizationoptionvalueprefix",
                INTEGER,
                "Option Value Prefix",
                min_value=10000,
                max_value=99999,
                required_level="SystemRequired",
            ),
            Attribute("description", MEMO, "Description", max_length=2000),
            *_common("publisher"),
        ],
        ownership="OrganizationOwned",
        change_tracking=False,
    )
    solution = _table(
        "solution",
        "Solution",
        "solutions",
        "solutionid",
        "friendlyname",
        "Solution",
        "Solutions",
        7100,
        [
            Attribute("solutionid", GUID, "Solution", valid_for_update=False, required_level="SystemRequired"),
            _string("uniquename", "Name", 65, required_level="SystemRequired", valid_for_update=False),
            _string("friendlyname", "Display Name", 256, required_level="SystemRequired"),
            _string("version", "Version", 256, required_level="SystemRequired"),
            Attribute("publisherid", LOOKUP, "Publisher", targets=("publisher",), required_level="SystemRequired"),
            _system(
                "ismanaged",
                BOOLEAN,
                "Package Type",
                default=False,
                options=[Option(0, "Unmanaged"), Option(1, "Managed")],
            ),
            Attribute("description", MEMO, "Description", max_length=2000),
            *_common("solution"),
        ],
        ownership="OrganizationOwned",
        change_tracking=False,
        bindings={"publisherid@odata.bind": ("publisherid", "publisher")},
    )
    return [contact, lead, account, marketing_list, list_member, saved_query, publisher, solution]


# ---- metadata created through the Web API ------------------------------------------------------

_SCHEMA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+$")


def metadata_error(message: str, code: str = "0x80040203") -> ApiError:
    return ApiError(400, code, message)


def check_schema_name(schema_name: Any, prefixes: Iterable[str], kind: str) -> str:
    """The SchemaName must carry a publisher's customization prefix: ``<prefix>_<Name>``."""
    if not isinstance(schema_name, str) or not schema_name:
        raise metadata_error(f"The SchemaName of the {kind} is required.")  # text unverified
    if not _SCHEMA_NAME.match(schema_name):
        raise metadata_error(
            f"Invalid schema name '{schema_name}' for the {kind}: it must start with a publisher "
            "customization prefix followed by '_'."
        )  # text unverified
    prefix = schema_name.split("_", 1)[0].lower()
    known = sorted(p.lower() for p in prefixes)
    if prefix not in known:
        raise metadata_error(
            f"The customization prefix '{prefix}' of '{schema_name}' does not match the prefix of "
            f"any publisher ({', '.join(known)})."
        )  # text unverified
    return schema_name


_PREFIX = re.compile(r"^[a-z][a-z0-9]{1,7}$")


def check_publisher(row: dict[str, Any]) -> None:
    """A publisher's customization prefix: 2 to 8 lower-case letters or digits, not starting with ``mscrm``."""
    prefix = str(row.get("customizationprefix") or "")
    if not _PREFIX.match(prefix) or prefix.startswith("mscrm"):
        raise metadata_error(
            f"The customization prefix '{prefix}' is not valid: use 2 to 8 lower-case letters or digits, "
            "starting with a letter and not with 'mscrm'."
        )  # text unverified


def _required_label(body: dict[str, Any], key: str, kind: str) -> str:
    text = label_text(body.get(key))
    if not text:
        raise metadata_error(f"The {key} of the {kind} is required and must be a Label with a LocalizedLabel.")
    return text


def attribute_from_metadata(body: Any, prefixes: Iterable[str]) -> Attribute:
    """An AttributeMetadata body (as POSTed to ``EntityDefinitions(...)/Attributes``) as an Attribute."""
    if not isinstance(body, dict):
        raise metadata_error("The request body must be an AttributeMetadata object.")
    odata_type = str(body.get("@odata.type") or "")
    type_ = _TYPE_BY_METADATA.get(odata_type.rsplit(".", 1)[-1]) if odata_type else None
    declared = body.get("AttributeType")
    if declared is not None and type_ is not None and declared != type_:
        raise metadata_error(f"AttributeType '{declared}' does not match @odata.type '{odata_type}'.")
    type_ = type_ or (declared if isinstance(declared, str) else None)
    if type_ not in CREATABLE_TYPES:
        raise metadata_error(
            f"The attribute type '{type_ or odata_type or 'missing'}' cannot be created with this "
            "emulator; use Boolean, Picklist, String, Memo, DateTime, Integer or BigInt."
        )
    schema_name = check_schema_name(body.get("SchemaName"), prefixes, "attribute")
    display = _required_label(body, "DisplayName", "attribute")
    required = body.get("RequiredLevel")
    level = required.get("Value", "None") if isinstance(required, dict) else "None"
    attribute = Attribute(
        schema_name.lower(), type_, display, schema_name=schema_name, is_custom=True, required_level=level
    )
    if type_ in (STRING, MEMO):
        max_length = body.get("MaxLength", 100 if type_ == STRING else 2000)
        limit = 4000 if type_ == STRING else 1048576
        if not isinstance(max_length, int) or not 1 <= max_length <= limit:
            raise metadata_error(f"MaxLength must be a whole number between 1 and {limit}.")
        attribute.max_length = max_length
        attribute.format = (
            body.get("FormatName", {}).get("Value") if isinstance(body.get("FormatName"), dict) else body.get("Format")
        )
    elif type_ == BOOLEAN:
        option_set = body.get("OptionSet") or {}
        true_label = label_text((option_set.get("TrueOption") or {}).get("Label")) or "Yes"
        false_label = label_text((option_set.get("FalseOption") or {}).get("Label")) or "No"
        attribute.options = [Option(0, false_label), Option(1, true_label)]
        default = body.get("DefaultValue", False)
        if not isinstance(default, bool):
            raise metadata_error("DefaultValue of a Boolean attribute must be true or false.")
        attribute.default = default
    elif type_ == PICKLIST:
        option_set = body.get("OptionSet")
        if (
            not isinstance(option_set, dict)
            or not isinstance(option_set.get("Options"), list)
            or not option_set["Options"]
        ):
            raise metadata_error(
                "A Picklist attribute needs an OptionSet with at least one option "
                "(global option sets are not supported by this emulator)."
            )
        seen: set[int] = set()
        for item in option_set["Options"]:
            value = item.get("Value") if isinstance(item, dict) else None
            if not isinstance(value, int) or isinstance(value, bool) or value in seen:
                raise metadata_error("Every option needs a distinct whole-number Value.")
            seen.add(value)
            attribute.options.append(Option(value, label_text(item.get("Label")) or str(value)))
        default = body.get("DefaultFormValue")
        attribute.default = None if default in (None, -1) else default
    elif type_ in (INTEGER, BIGINT):
        attribute.min_value = body.get("MinValue", -2147483648 if type_ == INTEGER else -(2**63))
        attribute.max_value = body.get("MaxValue", 2147483647 if type_ == INTEGER else 2**63 - 1)
    elif type_ == DATETIME:
        attribute.format = body.get("Format", "DateAndTime")
    return attribute


def plural(logical_name: str) -> str:
    """The entity set name the service derives from a logical name (English plural of the last word)."""
    if re.search(r"(s|x|z|ch|sh)$", logical_name):
        return logical_name + "es"
    if re.search(r"[^aeiou]y$", logical_name):
        return logical_name[:-1] + "ies"
    return logical_name + "s"


def table_from_metadata(body: Any, prefixes: Iterable[str], object_type_code: int) -> Table:
    """An EntityMetadata body (as POSTed to ``EntityDefinitions``) as a Table with its system columns."""
    if not isinstance(body, dict):
        raise metadata_error("The request body must be an EntityMetadata object.")
    schema_name = check_schema_name(body.get("SchemaName"), prefixes, "entity")
    logical = schema_name.lower()
    display = _required_label(body, "DisplayName", "entity")
    collection = _required_label(body, "DisplayCollectionName", "entity")
    ownership = body.get("OwnershipType", "UserOwned")
    if ownership not in ("UserOwned", "OrganizationOwned"):
        raise metadata_error("OwnershipType must be UserOwned or OrganizationOwned.")
    for flag in ("HasActivities", "HasNotes", "IsActivity"):
        if flag in body and not isinstance(body[flag], bool):
            raise metadata_error(f"{flag} must be true or false.")
    items = body.get("Attributes")
    if not isinstance(items, list):
        raise metadata_error("The entity needs an Attributes array with its primary name attribute.")
    attributes = [attribute_from_metadata(item, prefixes) for item in items]
    primaries = [a for a, item in zip(attributes, items, strict=True) if item.get("IsPrimaryName") is True]
    if len(primaries) != 1 or primaries[0].type != STRING:
        raise metadata_error("The entity needs exactly one String attribute with IsPrimaryName set to true.")
    primary = primaries[0]
    primary.is_primary_name = True
    change_tracking = body.get("ChangeTrackingEnabled", False)
    if not isinstance(change_tracking, bool):
        raise metadata_error("ChangeTrackingEnabled must be true or false.")
    entity_set = body.get("EntitySetName") or plural(logical)
    if not isinstance(entity_set, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", entity_set):
        raise metadata_error(f"Invalid EntitySetName '{entity_set}'.")
    primary_id = f"{logical}id"
    columns = [
        Attribute(
            primary_id,
            GUID,
            display,
            schema_name=f"{schema_name}Id",
            valid_for_update=False,
            is_primary_id=True,
            required_level="SystemRequired",
            is_custom=False,
        ),
        *attributes,
        _state([(0, "Active"), (1, "Inactive")]),
        _status([(1, "Active", 0), (2, "Inactive", 1)], 1),
        *_common(logical),
    ]
    return Table(
        logical,
        schema_name,
        entity_set,
        primary_id,
        primary.logical_name,
        display,
        collection,
        {a.logical_name: a for a in columns},
        object_type_code,
        change_tracking=change_tracking,
        is_custom=True,
        ownership=ownership,
    )


# ---- one-to-many relationships and their lookup columns ------------------------------------------

CASCADE_TYPES = frozenset({"NoCascade", "Cascade", "Active", "UserOwned", "RemoveLink", "Restrict"})
DEFAULT_CASCADE = {
    "Assign": "NoCascade",
    "Delete": "RemoveLink",
    "Merge": "NoCascade",
    "Reparent": "NoCascade",
    "Share": "NoCascade",
    "Unshare": "NoCascade",
    "RollupView": "NoCascade",
}
ONE_TO_MANY = "OneToManyRelationshipMetadata"
MANY_TO_MANY = "ManyToManyRelationshipMetadata"


@dataclass
class Relationship:
    """A one-to-many relationship: ``referencing_entity.referencing_attribute`` (a lookup) points at
    ``referenced_entity.referenced_attribute`` (its primary key)."""

    schema_name: str
    referenced_entity: str
    referenced_attribute: str
    referencing_entity: str
    referencing_attribute: str
    referencing_navigation: str  # single-valued, on the referencing table: the name ``@odata.bind`` uses
    referenced_navigation: str  # collection-valued, on the referenced table
    cascade: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_CASCADE))
    menu: dict[str, Any] = field(default_factory=dict)
    is_custom: bool = True
    metadata_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def metadata_type(body: dict[str, Any]) -> str:
    """The EntityType name of a metadata body's ``@odata.type`` (``#`` and namespace dropped)."""
    return str(body.get("@odata.type") or "").lstrip("#").rsplit(".", 1)[-1]


def lookup_from_metadata(body: Any, prefixes: Iterable[str], target: str) -> Attribute:
    """The ``Lookup`` of a OneToManyRelationshipMetadata body as an Attribute of the referencing table."""
    if not isinstance(body, dict):
        raise metadata_error(
            "The Lookup of a one-to-many relationship must be a LookupAttributeMetadata object."
        )  # text unverified
    kind = metadata_type(body)
    declared = body.get("AttributeType")
    if (kind and kind != _METADATA_TYPES[LOOKUP]) or (declared is not None and declared != LOOKUP):
        raise metadata_error(
            f"The Lookup of a one-to-many relationship must be of type "
            f"Microsoft.Dynamics.CRM.LookupAttributeMetadata, not '{kind or declared}'."
        )  # unverified
    schema_name = check_schema_name(body.get("SchemaName"), prefixes, "attribute")
    display = _required_label(body, "DisplayName", "attribute")
    required = body.get("RequiredLevel")
    level = required.get("Value", "None") if isinstance(required, dict) else "None"
    return Attribute(
        schema_name.lower(),
        LOOKUP,
        display,
        schema_name=schema_name,
        targets=(target,),
        is_custom=True,
        required_level=level,
    )


def relationship_from_metadata(
    body: Any, prefixes: Iterable[str], tables: Callable[[str], Table | None]
) -> tuple[Relationship, Attribute]:
    """A OneToManyRelationshipMetadata body (as POSTed to ``RelationshipDefinitions``) as the relationship
    and the lookup column it adds to the referencing table."""
    if not isinstance(body, dict):
        raise metadata_error("The request body must be a RelationshipMetadataBase object.")  # text unverified
    if metadata_type(body) != ONE_TO_MANY:
        raise metadata_error(
            "The @odata.type of a relationship must be Microsoft.Dynamics.CRM."
            "OneToManyRelationshipMetadata or ManyToManyRelationshipMetadata."
        )  # unverified
    schema_name = check_schema_name(body.get("SchemaName"), prefixes, "relationship")
    found: dict[str, Table] = {}
    for key in ("ReferencedEntity", "ReferencingEntity"):
        name = body.get(key)
        table = tables(name) if isinstance(name, str) else None
        if table is None:
            raise ApiError(
                404, "0x80040217", f"Could not find entity with logical name '{name}' ({key})."
            )  # text unverified
        if table.is_intersect or table.logical_name == "savedquery":
            raise metadata_error(
                f"The entity '{name}' cannot take part in a one-to-many relationship as the "
                f"{'referenced' if key == 'ReferencedEntity' else 'referencing'} entity."
            )  # unver.
        found[key] = table
    referenced, referencing = found["ReferencedEntity"], found["ReferencingEntity"]
    referenced_attribute = body.get("ReferencedAttribute") or referenced.primary_id
    if referenced_attribute != referenced.primary_id:
        raise metadata_error(
            f"ReferencedAttribute must be the primary key '{referenced.primary_id}' of '{referenced.logical_name}'."
        )  # text unverified
    lookup = lookup_from_metadata(body.get("Lookup"), prefixes, referenced.logical_name)
    referencing_attribute = body.get("ReferencingAttribute")
    if referencing_attribute not in (None, "", lookup.logical_name):
        raise metadata_error(
            f"ReferencingAttribute '{referencing_attribute}' does not match the Lookup '{lookup.logical_name}'."
        )  # text unverified
    cascade = dict(DEFAULT_CASCADE)
    given = body.get("CascadeConfiguration") or {}
    if not isinstance(given, dict):
        raise metadata_error("CascadeConfiguration must be an object.")  # text unverified
    for action, value in given.items():
        if action.startswith("@"):
            continue
        if action not in DEFAULT_CASCADE or value not in CASCADE_TYPES:
            raise metadata_error(f"Invalid cascade configuration {action}={value!r}.")  # text unverified
        cascade[action] = value
    menu = (
        body.get("AssociatedMenuConfiguration")
        if isinstance(body.get("AssociatedMenuConfiguration"), dict)
        else {"Behavior": "UseCollectionName", "Group": "Details", "Order": 10000}
    )
    relationship = Relationship(
        schema_name,
        referenced.logical_name,
        referenced_attribute,
        referencing.logical_name,
        lookup.logical_name,
        body.get("ReferencingEntityNavigationPropertyName") or lookup.schema_name,
        body.get("ReferencedEntityNavigationPropertyName") or schema_name,
        cascade,
        menu,
    )
    return relationship, lookup


def builtin_relationships() -> list[Relationship]:
    """The out-of-box relationships behind the lookups the built-in tables have."""
    return [
        Relationship(
            "contact_customer_accounts",
            "account",
            "accountid",
            "contact",
            "parentcustomerid",
            "parentcustomerid_account",
            "contact_customer_accounts",
            is_custom=False,
        ),
        Relationship(
            "contact_customer_contacts",
            "contact",
            "contactid",
            "contact",
            "parentcustomerid",
            "parentcustomerid_contact",
            "contact_customer_contacts",
            is_custom=False,
        ),
        Relationship(
            "publisher_solution",
            "publisher",
            "publisherid",
            "solution",
            "publisherid",
            "publisherid",
            "publisher_solution",
            cascade={**DEFAULT_CASCADE, "Delete": "Restrict"},
            is_custom=False,
        ),
    ]


def relationship_metadata(relationship: Relationship) -> dict[str, Any]:
    return {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{ONE_TO_MANY}",
        "MetadataId": relationship.metadata_id,
        "SchemaName": relationship.schema_name,
        "RelationshipType": "OneToManyRelationship",
        "IsCustomRelationship": relationship.is_custom,
        "IsManaged": not relationship.is_custom,
        "IsValidForAdvancedFind": True,
        "SecurityTypes": "Append",
        "IsHierarchical": False,
        "ReferencedEntity": relationship.referenced_entity,
        "ReferencedAttribute": relationship.referenced_attribute,
        "ReferencingEntity": relationship.referencing_entity,
        "ReferencingAttribute": relationship.referencing_attribute,
        "ReferencedEntityNavigationPropertyName": relationship.referenced_navigation,
        "ReferencingEntityNavigationPropertyName": relationship.referencing_navigation,
        "CascadeConfiguration": dict(relationship.cascade),
        "AssociatedMenuConfiguration": relationship.menu,
    }


RELATIONSHIP_METADATA_PROPERTIES = frozenset(relationship_metadata(builtin_relationships()[0])) - {"@odata.type"}


# ---- metadata JSON ---------------------------------------------------------------------------------


def entity_metadata(table: Table) -> dict[str, Any]:
    return {
        "@odata.type": "#Microsoft.Dynamics.CRM.EntityMetadata",
        "MetadataId": table.metadata_id,
        "LogicalName": table.logical_name,
        "SchemaName": table.schema_name,
        "EntitySetName": table.entity_set_name,
        "LogicalCollectionName": plural(table.logical_name),
        "CollectionSchemaName": plural(table.schema_name),
        "PrimaryIdAttribute": table.primary_id,
        "PrimaryNameAttribute": table.primary_name,
        "ObjectTypeCode": table.object_type_code,
        "IsCustomEntity": table.is_custom,
        "IsManaged": not table.is_custom,
        "IsIntersect": table.is_intersect,
        "IsActivity": False,
        "ChangeTrackingEnabled": table.change_tracking,
        "CanChangeTrackingBeEnabled": {
            "Value": True,
            "CanBeChanged": True,
            "ManagedPropertyLogicalName": "canchangetrackingbeenabled",
        },
        "IsOptimisticConcurrencyEnabled": True,
        "OwnershipType": table.ownership,
        "DisplayName": label(table.display_name),
        "DisplayCollectionName": label(table.display_collection_name),
        "Description": label(""),
    }


def attribute_metadata(table: Table, attribute: Attribute, with_options: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{_METADATA_TYPES[attribute.type]}",
        "MetadataId": attribute.metadata_id,
        "LogicalName": attribute.logical_name,
        "SchemaName": attribute.schema_name,
        "EntityLogicalName": table.logical_name,
        "AttributeType": attribute.type,
        "AttributeTypeName": {"Value": f"{attribute.type}Type"},
        "DisplayName": label(attribute.display_name),
        "IsCustomAttribute": attribute.is_custom,
        "IsPrimaryId": attribute.is_primary_id,
        "IsPrimaryName": attribute.is_primary_name,
        "IsValidForCreate": attribute.valid_for_create,
        "IsValidForUpdate": attribute.valid_for_update,
        "IsValidForRead": True,
        "RequiredLevel": {
            "Value": attribute.required_level,
            "CanBeChanged": True,
            "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
        },
    }
    if attribute.max_length is not None:
        body["MaxLength"] = attribute.max_length
    if attribute.type == LOOKUP:
        body["Targets"] = list(attribute.targets)
    if attribute.type in (INTEGER, BIGINT) and attribute.min_value is not None:
        body["MinValue"], body["MaxValue"] = attribute.min_value, attribute.max_value
    if attribute.type == BOOLEAN:
        body["DefaultValue"] = bool(attribute.default)
    if attribute.type == STRING:
        body["FormatName"] = {"Value": attribute.format or "Text"}
    if attribute.type == MEMO:
        body["Format"] = "TextArea"
    if attribute.type == DATETIME:
        body["Format"] = attribute.format or "DateAndTime"
        body["DateTimeBehavior"] = {"Value": "UserLocal"}
    if attribute.type == PICKLIST:
        body["DefaultFormValue"] = attribute.default if attribute.default is not None else -1
    if with_options and attribute.options:
        body["OptionSet"] = option_set_metadata(attribute)
    return body


def option_set_metadata(attribute: Attribute) -> dict[str, Any]:
    if attribute.type == BOOLEAN:
        false, true = (next(o for o in attribute.options if o.value == v) for v in (0, 1))
        return {
            "OptionSetType": "Boolean",
            "TrueOption": {"Value": 1, "Label": label(true.label)},
            "FalseOption": {"Value": 0, "Label": label(false.label)},
        }
    options = []
    for option in attribute.options:
        item: dict[str, Any] = {"Value": option.value, "Label": label(option.label)}
        if option.state is not None:
            item["State"] = option.state
        options.append(item)
    return {"OptionSetType": attribute.type, "IsGlobal": False, "Options": options}


ENTITY_METADATA_PROPERTIES = frozenset(entity_metadata(builtin_tables()[0])) - {"@odata.type"}
ATTRIBUTE_METADATA_PROPERTIES = frozenset(
    {
        "MetadataId",
        "LogicalName",
        "SchemaName",
        "EntityLogicalName",
        "AttributeType",
        "AttributeTypeName",
        "DisplayName",
        "IsCustomAttribute",
        "IsPrimaryId",
        "IsPrimaryName",
        "IsValidForCreate",
        "IsValidForUpdate",
        "IsValidForRead",
        "RequiredLevel",
        "Description",
    }
)
# The properties a derived type adds: ``$select`` reaches them only through a cast to that type
# (``.../Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=MaxLength``), as in the real service.
TYPED_ATTRIBUTE_PROPERTIES = {
    "StringAttributeMetadata": frozenset({"MaxLength", "FormatName"}),
    "MemoAttributeMetadata": frozenset({"MaxLength", "Format"}),
    "BooleanAttributeMetadata": frozenset({"DefaultValue", "OptionSet"}),
    "IntegerAttributeMetadata": frozenset({"MinValue", "MaxValue"}),
    "BigIntAttributeMetadata": frozenset({"MinValue", "MaxValue"}),
    "DateTimeAttributeMetadata": frozenset({"Format", "DateTimeBehavior"}),
    "PicklistAttributeMetadata": frozenset({"DefaultFormValue", "OptionSet"}),
    "StateAttributeMetadata": frozenset({"OptionSet"}),
    "StatusAttributeMetadata": frozenset({"OptionSet"}),
    "LookupAttributeMetadata": frozenset({"Targets"}),
    "EntityNameAttributeMetadata": frozenset(),
}
# Alternate keys are not reproduced: every table's Keys collection is empty, but asking for it is answered.
KEY_METADATA_PROPERTIES = frozenset(
    {
        "MetadataId",
        "LogicalName",
        "SchemaName",
        "EntityLogicalName",
        "KeyAttributes",
        "DisplayName",
        "EntityKeyIndexStatus",
        "IsManaged",
        "IsCustomizable",
    }
)


def attribute_cast_type(attribute: Attribute) -> str:
    """The attribute's derived metadata type, as a cast names it (``StringAttributeMetadata``)."""
    return _METADATA_TYPES[attribute.type]
