"""FetchXML for the Dataverse emulator: the subset dynamic marketing lists and list-member reads use.

``compile_fetch`` turns a ``<fetch>`` document into a ``FetchPlan`` whose predicate is compiled
once; the store scans its rows with it, then sorts, pages and projects by the plan's other fields.

Supported: one ``<entity>`` with ``<attribute>``, ``<all-attributes>`` (or no attribute at all,
which also means every column), ``<order attribute descending>``, nested ``<filter type="and|or">``
with ``<condition>``, and ``<link-entity>`` (``link-type`` inner, the default, or outer; nested
links; ``intersect``/``visible`` accepted and ignored) whose own filters decide which related rows
count. A condition in the entity's filter may name a link's alias in ``entityname``: it holds when
some row reached through that link satisfies it, or, for an outer link that reaches no row, when a
null value satisfies it (the usual "not in this list" query: outer link plus ``null``).

Condition operators: eq, ne (neq), gt, ge, lt, le, null, not-null, like, not-like, begins-with,
not-begin-with, ends-with, not-end-with, in, not-in, between, not-between (with ``<value>``
children), on, on-or-after, on-or-before, today, yesterday, tomorrow, last-seven-days,
last-x-hours, last-x-days, olderthan-x-minutes, olderthan-x-hours, olderthan-x-days. Relative
dates read ``RowContext.now()``; days are UTC days. Comparisons follow the same rules as the
OData filters (see ``odata``): case- and accent-insensitive text, SQL ``LIKE`` wildcards, nulls
never match ``ne``/``not-like``/``not-in``.

Results differ from the real service in one way: the predicate says whether a row qualifies, so
a 1:N link never duplicates rows (as if ``distinct="true"``). Aggregates, link types other than
inner/outer, ``<attribute>``/``<order>`` inside a link, aliased attributes, ``valueof`` column
comparisons and user/business/fiscal/hierarchy operators are refused with FetchXmlError naming the
element or operator. Attribute names in ``attributes`` and ``orders`` are row keys: a lookup
``parentcustomerid`` becomes ``_parentcustomerid_value``, as the Web API returns it. The primary
key is not added; the caller adds it as the real service always returns it.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from emulators.dataverse.odata import (
    RELATIVE_DATE_RANGES,
    RELATIVE_NEEDS_VALUE,
    Column,
    EntityType,
    ODataError,
    Predicate,
    RowContext,
    ValueTest,
    between_test,
    coerce_text,
    compare_test,
    day_range_test,
    in_test,
    like_test,
    logical_column,
    relative_test,
)

# Dataverse ErrorCodes (QueryBuilder* and platform codes); the texts marked unverified are the emulator's own
INVALID_XML = "0x80040201"
INVALID_ARGUMENT = "0x80040203"
NOT_SUPPORTED = "0x80040315"
NO_ENTITY = "0x80041102"
NO_ATTRIBUTE = "0x80041103"
BAD_CONDITION = "0x80041106"
INVALID_LINK_TYPE = "0x80041117"
INVALID_NODE = "0x8004111c"
INVALID_OPERATOR = "0x80041120"
INVALID_FILTER_TYPE = "0x80041122"
EMPTY_XML = "0x80041124"


class FetchXmlError(ODataError):
    """A FetchXML query the real service (or this emulator) refuses with 400."""


@dataclass(frozen=True)
class Link:
    """What ``RowContext.related(row, link)`` is asked for when a ``<link-entity>`` is evaluated.

    Answer with the rows of table ``entity`` whose value under ``from_key`` equals ``row[to_key]``
    (``matches`` does that comparison: GUID strings compare case-insensitively, a null on either
    side relates nothing). The keys are row keys, so a lookup such as the listmember's ``entityid``
    arrives as ``_entityid_value``. Links compare equal (and hash) by ``entity``, ``from_key`` and
    ``to_key`` only, so a store can keep one index per distinct join. Examples:

    - ``<link-entity name="listmember" from="entityid" to="contactid" intersect="true">``:
      ``Link("listmember", from_key="_entityid_value", to_key="contactid")``, the listmember rows
      (with ``_listid_value``) of the contact;
    - ``<link-entity name="account" from="accountid" to="parentcustomerid">`` on contact:
      ``Link("account", from_key="accountid", to_key="_parentcustomerid_value")``, the contact's account.
    """

    entity: str
    from_key: str
    to_key: str
    from_attribute: str = field(default="", compare=False)
    to_attribute: str = field(default="", compare=False)
    link_type: str = field(default="inner", compare=False)
    alias: str | None = field(default=None, compare=False)

    def matches(self, row: dict, candidate: dict) -> bool:
        """Whether ``candidate`` (a row of ``entity``) is related to ``row`` through this link."""
        value = join_value(row.get(self.to_key))
        return value is not None and join_value(candidate.get(self.from_key)) == value


def join_value(value: Any) -> Any:
    """The form join columns are compared in (GUIDs in any letter case are one value)."""
    return value.lower() if isinstance(value, str) else value


@dataclass
class FetchPlan:
    """A compiled ``<fetch>``: which rows (predicate), in which order, which page, which columns."""

    entity: str
    attributes: list[str] | None
    predicate: Predicate
    orders: list[tuple[str, bool]]
    count: int | None
    page: int | None
    paging_cookie: str | None
    distinct: bool
    top: int | None = None


RowTest = Callable[[dict, RowContext], bool]
EntityLookup = Callable[[str], EntityType | None]


def compile_fetch(xml: str, entity_lookup: EntityLookup) -> FetchPlan:
    """Compile FetchXML; ``entity_lookup`` gives the table for a logical name (or None). Raises FetchXmlError."""
    root = _parse(xml)
    if root.tag != "fetch":
        raise FetchXmlError(f"The FetchXML root element must be <fetch>, not <{root.tag}>.", INVALID_NODE)
    _check_attributes(root, _FETCH_ATTRIBUTES)
    if _flag(root, "aggregate"):
        raise _unsupported('Aggregate FetchXML (<fetch aggregate="true">)')
    count = _positive(root, "count")
    page = _positive(root, "page")
    top = _positive(root, "top")
    if top is not None and (count is not None or page is not None):
        raise FetchXmlError(
            "The 'top' attribute can't be combined with 'count' or 'page'.",  # text unverified
            INVALID_ARGUMENT,
        )
    entity_elements = []
    for child in root:
        if child.tag != "entity":
            raise _unexpected(child, "fetch")
        entity_elements.append(child)
    if len(entity_elements) != 1:
        raise FetchXmlError("A <fetch> needs exactly one <entity> element.", INVALID_NODE)  # text unverified
    compiler = _Compiler(entity_lookup)
    return compiler.entity(
        entity_elements[0],
        distinct=_flag(root, "distinct"),
        count=count,
        page=page,
        paging_cookie=root.get("paging-cookie"),
        top=top,
    )


# ---------------------------------------------------------------------------------------------
# XML checks
# ---------------------------------------------------------------------------------------------

_FETCH_ATTRIBUTES = {
    "version",
    "output-format",
    "mapping",
    "distinct",
    "count",
    "page",
    "paging-cookie",
    "top",
    "aggregate",
    "returntotalrecordcount",
    "no-lock",
    "utc-offset",
    "min-active-row-version",
    "latematerialize",
    "useraworderby",
    "options",
    "datasource",
    "aggregatelimit",
}
_ENTITY_ATTRIBUTES = {"name", "enableprefiltering", "prefilterparametername"}
_ATTRIBUTE_ATTRIBUTES = {"name", "build", "addedby", "usertimezone"}
_ATTRIBUTE_UNSUPPORTED = {"alias", "aggregate", "groupby", "dategrouping", "distinct", "rowaggregate"}
_ORDER_ATTRIBUTES = {"attribute", "descending"}
_ORDER_UNSUPPORTED = {"alias", "entityname"}
_FILTER_ATTRIBUTES = {
    "type",
    "isquickfindfields",
    "overridequickfindrecordlimitenabled",
    "overridequickfindrecordlimitdisabled",
    "bypassquickfind",
    "hint",
}
_CONDITION_ATTRIBUTES = {"attribute", "entityname", "operator", "value", "uiname", "uitype", "uihidden"}
_CONDITION_UNSUPPORTED = {"valueof", "aggregate", "alias", "rowaggregate", "column"}
_LINK_ATTRIBUTES = {
    "name",
    "from",
    "to",
    "alias",
    "link-type",
    "visible",
    "intersect",
    "enableprefiltering",
    "prefilterparametername",
}
_LINK_TYPES = {"inner", "outer"}
_OTHER_LINK_TYPES = {"any", "not any", "all", "not all", "exists", "in", "matchfirstrowusingcrossapply"}


def _parse(xml: str) -> ElementTree.Element:
    if not xml or not xml.strip():
        raise FetchXmlError("The FetchXML is empty.", EMPTY_XML)  # text unverified
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise FetchXmlError("FetchXML must not contain a DOCTYPE or ENTITY declaration.", INVALID_XML)
    try:
        # safe: declarations were refused above, so no entity expansion can happen
        return ElementTree.fromstring(xml)  # noqa: S314
    except ElementTree.ParseError as exc:
        raise FetchXmlError(f"The FetchXML is not well-formed XML: {exc}.", INVALID_XML) from None


def _unsupported(what: str) -> FetchXmlError:
    return FetchXmlError(f"{what} is not supported by this emulator.", NOT_SUPPORTED)


def _unexpected(element: ElementTree.Element, parent: str) -> FetchXmlError:
    return FetchXmlError(f"The element <{element.tag}> is not valid inside <{parent}>.", INVALID_NODE)


def _check_attributes(element: ElementTree.Element, allowed: set[str], unsupported: Iterable[str] = ()) -> None:
    for name in element.attrib:
        if name in unsupported:
            raise _unsupported(f"The '{name}' attribute of <{element.tag}>")
        if name not in allowed:
            raise FetchXmlError(f"The attribute '{name}' is not valid on <{element.tag}>.", INVALID_NODE)


def _flag(element: ElementTree.Element, name: str) -> bool:
    raw = element.get(name)
    if raw is None:
        return False
    lowered = raw.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise FetchXmlError(
        f"The value '{raw}' of '{name}' on <{element.tag}> must be true or false.", INVALID_ARGUMENT
    )  # text unverified


def _positive(element: ElementTree.Element, name: str) -> int | None:
    raw = element.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise FetchXmlError(
            f"The '{name}' attribute of <fetch> must be a whole number greater than zero; got '{raw}'.",
            INVALID_ARGUMENT,
        )  # text unverified
    return value


# ---------------------------------------------------------------------------------------------
# Compilation
# ---------------------------------------------------------------------------------------------

_NO_VALUE = {"null", "not-null", "today", "yesterday", "tomorrow", "last-seven-days"}
_ONE_VALUE = {
    "eq",
    "ne",
    "neq",
    "gt",
    "ge",
    "lt",
    "le",
    "like",
    "not-like",
    "begins-with",
    "not-begin-with",
    "ends-with",
    "not-end-with",
    "on",
    "on-or-after",
    "on-or-before",
    "last-x-hours",
    "last-x-days",
    "olderthan-x-minutes",
    "olderthan-x-hours",
    "olderthan-x-days",
}
_MANY_VALUES = {"in", "not-in"}
_TWO_VALUES = {"between", "not-between"}
_LIKE_SHAPES = {
    "like": ("", "", False),
    "not-like": ("", "", True),
    "begins-with": ("", "%", False),
    "not-begin-with": ("", "%", True),
    "ends-with": ("%", "", False),
    "not-end-with": ("%", "", True),
}
_KNOWN_ELSEWHERE = {  # real operators the emulator does not evaluate
    "eq-userid",
    "ne-userid",
    "eq-userteams",
    "eq-useroruserteams",
    "eq-useroruserhierarchy",
    "eq-useroruserhierarchyandteams",
    "eq-businessid",
    "ne-businessid",
    "eq-userlanguage",
    "next-seven-days",
    "last-week",
    "this-week",
    "next-week",
    "last-month",
    "this-month",
    "next-month",
    "last-year",
    "this-year",
    "next-year",
    "next-x-hours",
    "next-x-days",
    "last-x-weeks",
    "next-x-weeks",
    "last-x-months",
    "next-x-months",
    "olderthan-x-weeks",
    "olderthan-x-months",
    "olderthan-x-years",
    "last-x-years",
    "next-x-years",
    "this-fiscal-year",
    "this-fiscal-period",
    "next-fiscal-year",
    "next-fiscal-period",
    "last-fiscal-year",
    "last-fiscal-period",
    "last-x-fiscal-years",
    "last-x-fiscal-periods",
    "next-x-fiscal-years",
    "next-x-fiscal-periods",
    "in-fiscal-year",
    "in-fiscal-period",
    "in-fiscal-period-and-year",
    "in-or-before-fiscal-period-and-year",
    "in-or-after-fiscal-period-and-year",
    "under",
    "eq-or-under",
    "not-under",
    "above",
    "eq-or-above",
    "contain-values",
    "not-contain-values",
}
_DOTNET_TYPES = {
    "Edm.String": "System.String",
    "Edm.Boolean": "System.Boolean",
    "Edm.Int32": "System.Int32",
    "Edm.Int64": "System.Int64",
    "Edm.Decimal": "System.Decimal",
    "Edm.Double": "System.Double",
    "Edm.DateTimeOffset": "System.DateTime",
    "Edm.Guid": "System.Guid",
}


@dataclass
class _LinkNode:
    """One compiled <link-entity>: ``accepts`` tells whether a related row counts (its own filters
    and inner child links); ``chain`` is the path of links from the queried entity down to it."""

    link: Link
    entity: EntityType
    accepts: RowTest
    chain: tuple[_LinkNode, ...] = ()


def _always(row: dict, ctx: RowContext) -> bool:
    return True


def _both(first: RowTest, second: RowTest) -> RowTest:
    def test(row: dict, ctx: RowContext) -> bool:
        return first(row, ctx) and second(row, ctx)

    return test


def _either(first: RowTest, second: RowTest) -> RowTest:
    def test(row: dict, ctx: RowContext) -> bool:
        return first(row, ctx) or second(row, ctx)

    return test


def _all_of(tests: list[RowTest]) -> RowTest:
    # pairwise closures are cheaper per row than all() over a generator
    return functools.reduce(_both, tests) if tests else _always


def _any_of(tests: list[RowTest]) -> RowTest:
    # an empty <filter type="or"> restricts nothing, as in Dataverse
    return functools.reduce(_either, tests) if tests else _always


def _exists(node: _LinkNode) -> RowTest:
    link, accepts = node.link, node.accepts

    def test(row: dict, ctx: RowContext) -> bool:
        return any(accepts(related, ctx) for related in ctx.related(row, link))

    return test


class _Compiler:
    def __init__(self, entity_lookup: EntityLookup) -> None:
        self.entity_lookup = entity_lookup
        self.aliases: dict[str, _LinkNode] = {}

    def table(self, name: str | None, element: ElementTree.Element) -> EntityType:
        if not name:
            raise FetchXmlError(f"<{element.tag}> needs a 'name' attribute.", INVALID_NODE)  # text unverified
        entity = self.entity_lookup(name)
        if entity is None:
            raise FetchXmlError(
                f"The entity with a name = '{name}' with namemapping = 'Logical' was not found in the MetadataCache.",
                NO_ENTITY,
            )
        return entity

    @staticmethod
    def column(entity: EntityType, name: str | None, element: ElementTree.Element) -> Column:
        if not name:
            raise FetchXmlError(f"<{element.tag}> needs an attribute name.", INVALID_NODE)  # text unverified
        column = logical_column(entity, name)
        if column is None:
            raise FetchXmlError(
                f"'{entity.logical_name}' entity doesn't contain attribute with Name = '{name}' and "
                "NameMapping = 'Logical'.",
                NO_ATTRIBUTE,
            )
        return column

    # -- <entity> ---------------------------------------------------------------------------------

    def entity(
        self,
        element: ElementTree.Element,
        *,
        distinct: bool,
        count: int | None,
        page: int | None,
        paging_cookie: str | None,
        top: int | None,
    ) -> FetchPlan:
        _check_attributes(element, _ENTITY_ATTRIBUTES)
        entity = self.table(element.get("name"), element)
        attributes: list[str] = []
        all_attributes = False
        orders: list[tuple[str, bool]] = []
        links: list[_LinkNode] = []
        filters: list[ElementTree.Element] = []
        for child in element:
            if child.tag == "attribute":
                _check_attributes(child, _ATTRIBUTE_ATTRIBUTES, _ATTRIBUTE_UNSUPPORTED)
                key = self.column(entity, child.get("name"), child).key
                if key not in attributes:
                    attributes.append(key)
            elif child.tag == "all-attributes":
                all_attributes = True
            elif child.tag == "order":
                orders.append(self.order(entity, child))
            elif child.tag == "filter":
                filters.append(child)
            elif child.tag == "link-entity":
                links.append(self.link(child, entity, ()))
            else:
                raise _unexpected(child, "entity")
        # conditions may name links declared after the filter, so links are compiled first
        tests = [self.filter(f, entity, allow_entityname=True) for f in filters]
        tests += [_exists(node) for node in links if node.link.link_type == "inner"]
        accepts = _all_of(tests)

        def predicate(row: dict, ctx: RowContext) -> bool:
            return accepts(row, ctx) is True

        selected = None if all_attributes or not attributes else attributes
        return FetchPlan(
            entity=entity.logical_name,
            attributes=selected,
            predicate=predicate,
            orders=orders,
            count=count,
            page=page,
            paging_cookie=paging_cookie,
            distinct=distinct,
            top=top,
        )

    def order(self, entity: EntityType, element: ElementTree.Element) -> tuple[str, bool]:
        _check_attributes(element, _ORDER_ATTRIBUTES, _ORDER_UNSUPPORTED)
        column = self.column(entity, element.get("attribute"), element)
        return column.key, _flag(element, "descending")

    # -- <link-entity> ----------------------------------------------------------------------------

    def link(self, element: ElementTree.Element, parent: EntityType, chain: tuple[_LinkNode, ...]) -> _LinkNode:
        _check_attributes(element, _LINK_ATTRIBUTES)
        name = element.get("name")
        entity = self.table(name, element)
        link_type = (element.get("link-type") or "inner").strip()
        if link_type not in _LINK_TYPES:
            if link_type in _OTHER_LINK_TYPES:
                raise _unsupported(f"The link-type '{link_type}' (on <link-entity name=\"{name}\">)")
            raise FetchXmlError(f"The link-type '{link_type}' is not valid.", INVALID_LINK_TYPE)  # text unverified
        from_name, to_name = element.get("from"), element.get("to")
        if not from_name or not to_name:
            raise _unsupported(f"A <link-entity name=\"{name}\"> without both 'from' and 'to'")
        from_column = self.column(entity, from_name, element)
        to_column = self.column(parent, to_name, element)
        alias = element.get("alias")
        link = Link(
            entity=entity.logical_name,
            from_key=from_column.key,
            to_key=to_column.key,
            from_attribute=from_name,
            to_attribute=to_name,
            link_type=link_type,
            alias=alias,
        )
        node = _LinkNode(link, entity, _always)
        node.chain = (*chain, node)
        children: list[_LinkNode] = []
        filters: list[ElementTree.Element] = []
        for child in element:
            if child.tag == "filter":
                filters.append(child)
            elif child.tag == "link-entity":
                children.append(self.link(child, entity, node.chain))
            elif child.tag in ("attribute", "all-attributes", "order"):
                raise _unsupported(f'An <{child.tag}> inside <link-entity name="{name}">')
            else:
                raise _unexpected(child, "link-entity")
        tests = [self.filter(f, entity, allow_entityname=False) for f in filters]
        tests += [_exists(child) for child in children if child.link.link_type == "inner"]
        node.accepts = _all_of(tests)
        key = alias or name or ""
        if key in self.aliases:
            raise FetchXmlError(f"The link-entity alias '{key}' is used twice.", INVALID_ARGUMENT)  # text unverified
        self.aliases[key] = node
        return node

    # -- <filter> and <condition> -----------------------------------------------------------------

    def filter(self, element: ElementTree.Element, entity: EntityType, *, allow_entityname: bool) -> RowTest:
        _check_attributes(element, _FILTER_ATTRIBUTES)
        kind = (element.get("type") or "and").strip()
        if kind not in ("and", "or"):
            raise FetchXmlError(
                f"The filter type '{kind}' is not valid; use 'and' or 'or'.", INVALID_FILTER_TYPE
            )  # text unverified
        parts: list[RowTest] = []
        for child in element:
            if child.tag == "condition":
                parts.append(self.condition(child, entity, allow_entityname=allow_entityname))
            elif child.tag == "filter":
                parts.append(self.filter(child, entity, allow_entityname=allow_entityname))
            elif child.tag == "link-entity":
                raise _unsupported("A <link-entity> inside <filter>")
            else:
                raise _unexpected(child, "filter")
        return _all_of(parts) if kind == "and" else _any_of(parts)

    def condition(self, element: ElementTree.Element, entity: EntityType, *, allow_entityname: bool) -> RowTest:
        _check_attributes(element, _CONDITION_ATTRIBUTES, _CONDITION_UNSUPPORTED)
        op = (element.get("operator") or "").strip()
        if not op:
            raise FetchXmlError("<condition> needs an 'operator' attribute.", INVALID_NODE)  # text unverified
        if op in _KNOWN_ELSEWHERE:
            raise _unsupported(f"The condition operator '{op}'")
        if op not in _NO_VALUE | _ONE_VALUE | _MANY_VALUES | _TWO_VALUES:
            raise FetchXmlError(f"The condition operator '{op}' is not valid.", INVALID_OPERATOR)  # text unverified
        alias = element.get("entityname")
        node: _LinkNode | None = None
        if alias:
            if not allow_entityname:
                raise _unsupported("A condition with 'entityname' inside <link-entity>")
            node = self.aliases.get(alias)
            if node is None:
                raise FetchXmlError(
                    f"No link-entity has the alias '{alias}' that a condition names in 'entityname'.", INVALID_ARGUMENT
                )  # text unverified
            entity = node.entity
        column = self.column(entity, element.get("attribute"), element)
        values = self.values(element, op, column)
        value_test, relative = self.value_test(op, column, values, element)
        if node is not None:
            return _through_links(node, column.key, value_test, relative)
        return _row_test(column.key, value_test, relative)

    def values(self, element: ElementTree.Element, op: str, column: Column) -> list[Any]:
        texts = [child.text or "" for child in element if child.tag == "value"]
        for child in element:
            if child.tag != "value":
                raise _unexpected(child, "condition")
        attribute_value = element.get("value")
        if attribute_value is not None and (op not in _MANY_VALUES or not texts):
            texts.insert(0, attribute_value)
        where = f"for attribute '{column.name}' with operator '{op}'"
        if op in _NO_VALUE:
            if texts:
                raise FetchXmlError(f"The condition {where} takes no value.", BAD_CONDITION)  # text unverified
            return []
        if op in _ONE_VALUE and len(texts) != 1:
            raise FetchXmlError(f"The condition {where} needs exactly one value.", BAD_CONDITION)  # text unverified
        if op in _TWO_VALUES and len(texts) != 2:
            raise FetchXmlError(f"The condition {where} needs two <value> elements.", BAD_CONDITION)  # unverified
        if op in _MANY_VALUES and not texts:
            raise FetchXmlError(f"The condition {where} needs at least one <value>.", BAD_CONDITION)  # unverified
        return texts

    def value_test(
        self,
        op: str,
        column: Column,
        texts: list[str],
        element: ElementTree.Element,
    ) -> tuple[Any, bool]:
        """The value test for one condition and whether it needs the clock."""
        family = column.family
        if op in ("null", "not-null"):
            return compare_test(family, "eq" if op == "null" else "ne", None), False
        if op in _LIKE_SHAPES:
            if family != "string":
                raise FetchXmlError(
                    f"The condition operator '{op}' applies to text columns; '{column.name}' is {column.edm}.",
                    BAD_CONDITION,
                )  # text unverified
            prefix, suffix, negate = _LIKE_SHAPES[op]
            return like_test(prefix + texts[0] + suffix, negate), False
        if op in RELATIVE_DATE_RANGES or op in ("on", "on-or-after", "on-or-before"):
            if family != "datetime":
                raise FetchXmlError(
                    f"The condition operator '{op}' applies to date and time columns; '{column.name}' is {column.edm}.",
                    BAD_CONDITION,
                )  # text unverified
            if op in RELATIVE_DATE_RANGES:
                amount = 0
                if op in RELATIVE_NEEDS_VALUE:
                    try:
                        amount = int(texts[0])
                    except ValueError:
                        raise self.bad_value(texts[0], column, element) from None
                return relative_test(op, amount), True
            return day_range_test(op, self.coerce(texts[0], column, element)), False
        constants = [self.coerce(text, column, element) for text in texts]
        if op in _MANY_VALUES:
            return in_test(family, constants, negate=op == "not-in"), False
        if op in _TWO_VALUES:
            return between_test(family, constants[0], constants[1], negate=op == "not-between"), False
        return compare_test(family, "ne" if op == "neq" else op, constants[0]), False

    def coerce(self, text: str, column: Column, element: ElementTree.Element) -> Any:
        try:
            return coerce_text(column, text)
        except ValueError:
            raise self.bad_value(text, column, element) from None

    @staticmethod
    def bad_value(text: str, column: Column, element: ElementTree.Element) -> FetchXmlError:
        expected = _DOTNET_TYPES.get(column.edm, "System.String")
        return FetchXmlError(
            f"An exception System.FormatException was thrown while trying to convert input value "
            f"'{text}' to attribute '{column.name}'. Expected type of attribute value: {expected}.",
            INVALID_ARGUMENT,
        )  # text unverified


def _row_test(key: str, value_test: Any, relative: bool) -> RowTest:
    if relative:

        def relative_row_test(row: dict, ctx: RowContext) -> bool:
            value = row.get(key)
            return value is not None and value_test(value, ctx.now()) is True

        return relative_row_test

    static: ValueTest = value_test

    def test(row: dict, ctx: RowContext) -> bool:
        return static(row.get(key)) is True

    return test


def _through_links(node: _LinkNode, key: str, value_test: Any, relative: bool) -> RowTest:
    """A condition on a linked table's column, named by the link's alias in 'entityname'."""
    chain = node.chain
    outer = any(step.link.link_type == "outer" for step in chain)
    column_test = _row_test(key, value_test, relative)

    def test(row: dict, ctx: RowContext) -> bool:
        reached = [row]
        for step in chain:
            reached = [
                related
                for parent in reached
                for related in ctx.related(parent, step.link)
                if step.accepts(related, ctx)
            ]
            if not reached:
                # an outer link that finds nothing joins a row of nulls
                return outer and column_test({}, ctx)
        return any(column_test(related, ctx) for related in reached)

    return test
