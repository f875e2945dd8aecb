"""EPCIS XML documents (the 2.0 and 1.2 XML bindings) into the JSON-LD shape of the 2.0 JSON
binding, which is then checked like any JSON capture (document.check: context, limits, GS1's
JSON Schema). So an event stores, hashes and queries the same whichever binding carried it.

Parsing is `defusedxml`'s: a DTD, an entity declaration or an external reference refuses the
document (no billion laughs, no XXE), and the nesting depth is checked while parsing, before
any tree is built deeper than the limit.

What changes on the way (the 2.0 JSON binding's rules): list wrappers become arrays
(`<epcList><epc>` -> `epcList: [...]`); the 1.2 `extension` / `baseExtension` wrappers
disappear (their fields are plain fields in 2.0); CBV URNs become bare words
(`urn:epcglobal:cbv:bizstep:shipping` -> `shipping`); sensor metadata and report attributes
become fields, numbers as numbers; an element in a user namespace becomes `prefix:name`
with the document's own prefix (an element with children an object, repeated names an
array); attributes of user extension elements are not carried (JSON-LD has no place for
them). The header's master data (`EPCISMasterData`, in 1.2 inside the header's `extension`)
becomes `epcisHeader.epcisMasterData.vocabularyList`, an attribute's value its text or, with
child elements, an object as an extension's.
"""

from __future__ import annotations

import io
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from cloud_collector.epcis.document import (
    EPCIS_CONTEXTS,
    EVENT_TYPES,
    CaptureLimits,
    Document,
    InvalidDocument,
    check,
)
from cloud_collector.epcis.identifiers import cbv_word

EPCIS_NAMESPACES = (
    "urn:epcglobal:epcis:xsd:1",
    "urn:epcglobal:epcis:xsd:2",
    "urn:epcglobal:epcis-query:xsd:1",
    "urn:epcglobal:epcis-query:xsd:2",
)
GS1_VOCABULARY = "https://gs1.org/voc/"

# list field -> the element each entry is written in
LISTS: dict[str, str] = {
    "epcList": "epc",
    "childEPCs": "epc",
    "inputEPCList": "epc",
    "outputEPCList": "epc",
    "quantityList": "quantityElement",
    "childQuantityList": "quantityElement",
    "inputQuantityList": "quantityElement",
    "outputQuantityList": "quantityElement",
    "bizTransactionList": "bizTransaction",
    "sourceList": "source",
    "destinationList": "destination",
    "sensorElementList": "sensorElement",
    "correctiveEventIDs": "correctiveEventID",
}
# field -> CBV vocabulary whose URNs become bare words
VOCABULARY_FIELDS: dict[str, str] = {
    "bizStep": "bizStep",
    "disposition": "disposition",
    "reason": "errorReason",
}
# a typed entry of a list: element -> (vocabulary of its type attribute, name of its value)
TYPED_ENTRIES: dict[str, tuple[str, str]] = {
    "bizTransaction": ("bizTransactionType", "bizTransaction"),
    "source": ("sourceDestType", "source"),
    "destination": ("sourceDestType", "destination"),
}
NUMBERS = frozenset(
    {"quantity", "value", "minValue", "maxValue", "meanValue", "sDev", "percRank", "percValue"}
)
WRAPPERS = frozenset({"extension", "baseExtension"})


class _Reader:
    """One document's conversion: its namespace prefixes and the user ones it used."""

    def __init__(self, prefixes: dict[str, str]) -> None:
        self.prefixes = prefixes  # namespace URI -> prefix as the document declared it
        self.used: dict[str, str] = {}  # prefix -> namespace URI, for the JSON-LD context

    def name(self, tag: str) -> str:
        """`{uri}local` -> `prefix:local` (user namespace) or `local` (EPCIS's own)."""
        if not tag.startswith("{"):
            return tag
        uri, local = tag[1:].split("}", 1)
        if uri in EPCIS_NAMESPACES:
            return local
        prefix = self.prefixes.get(uri)
        if not prefix:
            prefix = f"ns{len(self.prefixes) + 1}"
            self.prefixes[uri] = prefix
        self.used[prefix] = uri
        return f"{prefix}:{local}"

    def fields(self, element: Element) -> list[Element]:
        """The element's children, with 1.2's extension wrappers opened."""
        out: list[Element] = []
        for child in element:
            if child.tag in WRAPPERS:
                out.extend(self.fields(child))
            else:
                out.append(child)
        return out

    def event(self, element: Element, where: str) -> dict[str, Any]:
        event: dict[str, Any] = {"type": self.name(element.tag)}
        for child in self.fields(element):
            name = self.name(child.tag)
            if name in event:
                raise InvalidDocument(f"{where}.{name}", f"<{name}> appears twice")
            event[name] = self.field(name, child)
        return event

    def field(self, name: str, element: Element) -> Any:
        if name in LISTS:
            return [self.entry(LISTS[name], e) for e in self.fields(element)]
        if name in VOCABULARY_FIELDS:
            return cbv_word(VOCABULARY_FIELDS[name], _text(element))
        if name in ("readPoint", "bizLocation"):
            return {self.name(c.tag): _text(c) for c in self.fields(element)}
        if name == "persistentDisposition":
            found: dict[str, list[str | None]] = {}
            for c in self.fields(element):
                found.setdefault(c.tag, []).append(cbv_word("disposition", _text(c)))
            return found
        if name in ("errorDeclaration", "ilmd"):
            return {self.name(c.tag): self.field(self.name(c.tag), c) for c in self.fields(element)}
        if name.partition(":")[1]:
            return self.extension(element)
        return _number(_text(element)) if name in NUMBERS else _text(element)

    def entry(self, kind: str, element: Element) -> Any:
        if kind in TYPED_ENTRIES:
            vocabulary, value = TYPED_ENTRIES[kind]
            typed: dict[str, Any] = {}
            if "type" in element.attrib:
                typed["type"] = cbv_word(vocabulary, element.attrib["type"])
            typed[value] = _text(element)
            return typed
        if kind == "quantityElement":
            return {self.name(c.tag): self.field(self.name(c.tag), c) for c in self.fields(element)}
        if kind == "sensorElement":
            sensor: dict[str, Any] = {}
            for c in self.fields(element):
                name = self.name(c.tag)
                if name == "sensorMetadata":
                    sensor[name] = self.attributes(c)
                elif name == "sensorReport":
                    sensor.setdefault(name, []).append(self.attributes(c))
                else:
                    sensor[name] = self.extension(c)
            return sensor
        return _text(element)

    def attributes(self, element: Element) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in element.attrib.items():
            name = self.name(key)
            if name in NUMBERS:
                out[name] = _number(value)
            elif name == "booleanValue":
                out[name] = value.strip().lower() == "true"
            elif name == "type" and value.startswith("gs1:"):
                out[name] = value[len("gs1:") :]
            else:
                out[name] = value
        return out

    def vocabularies(self, root: Element) -> list[dict[str, Any]]:
        """The header's master data (EPCISHeader, in 1.2 inside its extension:
        EPCISMasterData/VocabularyList/Vocabulary/VocabularyElementList/VocabularyElement
        with attribute and children/id) in the JSON binding's shape."""
        found: list[dict[str, Any]] = []
        for header in (e for e in root if e.tag == "EPCISHeader"):
            for master in (e for e in self.fields(header) if e.tag == "EPCISMasterData"):
                for vocabulary in (v for c in master if c.tag == "VocabularyList" for v in c):
                    found.append(
                        {
                            "type": vocabulary.attrib.get("type", ""),
                            "vocabularyElementList": [
                                self.vocabulary_element(e)
                                for c in vocabulary
                                if c.tag == "VocabularyElementList"
                                for e in c
                            ],
                        }
                    )
        return found

    def vocabulary_element(self, element: Element) -> dict[str, Any]:
        out: dict[str, Any] = {"id": element.attrib.get("id", "")}
        attributes = [
            {"id": a.attrib.get("id", ""), "attribute": self.extension(a)}
            for a in self.fields(element)
            if a.tag == "attribute"
        ]
        children = [_text(i) for c in element if c.tag == "children" for i in c]
        if attributes:
            out["attributes"] = attributes
        if children:
            out["children"] = children
        return out

    def extension(self, element: Element) -> Any:
        children = list(element)
        if not children:
            return _text(element) or ""
        out: dict[str, Any] = {}
        for child in children:
            name = self.name(child.tag)
            value = self.extension(child)
            if name in out:
                out[name] = (
                    [*out[name], value] if isinstance(out[name], list) else [out[name], value]
                )
            else:
                out[name] = value
        return out


def _text(element: Element) -> str | None:
    return element.text.strip() if element.text is not None else None


def _number(text: str | None) -> Any:
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return text  # the schema check names it
    return (
        int(number)
        if number.is_integer() and "." not in text and "e" not in text.lower()
        else number
    )


def _parse_tree(body: bytes, limits: CaptureLimits) -> tuple[Element, dict[str, str]]:
    prefixes: dict[str, str] = {}
    depth = 0
    root: Element | None = None
    try:
        for kind, item in iterparse(
            io.BytesIO(body), events=("start-ns", "start", "end"), forbid_dtd=True
        ):
            if kind == "start-ns":
                prefix, uri = item
                prefixes.setdefault(uri, prefix)
            elif kind == "start":
                depth += 1
                root = item if root is None else root
                if depth > limits.max_depth:
                    raise InvalidDocument("$", f"XML nested deeper than {limits.max_depth} levels")
            else:
                depth -= 1
    except DefusedXmlException as err:
        raise InvalidDocument(
            "$", f"refused XML: {err} (DTDs and entities are not accepted in a capture)"
        ) from err
    except ParseError as err:
        raise InvalidDocument("$", f"not well-formed XML: {err}") from err
    except (LookupError, ValueError) as err:  # expat: an encoding it does not know or handle
        raise InvalidDocument("$", f"unreadable XML encoding ({err}): send UTF-8") from err
    if root is None:
        raise InvalidDocument("$", "empty XML document")
    return root, prefixes


def to_json(body: bytes, limits: CaptureLimits) -> dict[str, Any]:
    """The XML document as a 2.0 JSON-LD EPCISDocument (not yet checked)."""
    root, prefixes = _parse_tree(body, limits)
    reader = _Reader(prefixes)
    kind = reader.name(root.tag)
    if kind not in ("EPCISDocument", "EPCISQueryDocument"):
        raise InvalidDocument("$", f"root element {kind!r}: send an EPCISDocument")
    event_list = next((e for e in root.iter() if e.tag == "EventList"), None)
    events: list[dict[str, Any]] = []
    for element in reader.fields(event_list) if event_list is not None else []:
        if reader.name(element.tag) not in EVENT_TYPES:
            raise InvalidDocument(
                f"$.epcisBody.eventList[{len(events)}]",
                f"{reader.name(element.tag)!r} is not an EPCIS event type",
            )
        events.append(reader.event(element, f"$.epcisBody.eventList[{len(events)}]"))
    vocabularies = reader.vocabularies(root)
    context: list[Any] = [EPCIS_CONTEXTS[0]]
    if reader.used:
        context.append(dict(reader.used))
    converted: dict[str, Any] = {
        "@context": context,
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": root.attrib.get("creationDate", ""),
        "epcisBody": {"eventList": events},
    }
    if vocabularies:
        converted["epcisHeader"] = {"epcisMasterData": {"vocabularyList": vocabularies}}
    return converted


def parse(body: bytes, limits: CaptureLimits) -> Document:
    return check(to_json(body, limits), limits)
