"""GS1 keys and their forms: the one home for parsing and writing them (see keys.py), and
GS1 data read element by element (elements.py)."""

from protocols.gs1.elements import (
    GS,
    Element,
    NotGs1Data,
    read_bracketed,
    read_digital_link,
    read_element,
    read_element_string,
)
from protocols.gs1.keys import (
    Key,
    Kind,
    check_digit,
    company_prefix,
    digital_link,
    digits,
    element_string,
    from_digital_link,
    from_element_string,
    from_urn,
    gtin_of_epc,
    parse,
    urn,
    valid,
    with_check_digit,
)

__all__ = [
    "GS",
    "Element",
    "Key",
    "Kind",
    "NotGs1Data",
    "check_digit",
    "company_prefix",
    "digital_link",
    "digits",
    "element_string",
    "from_digital_link",
    "from_element_string",
    "from_urn",
    "gtin_of_epc",
    "parse",
    "read_bracketed",
    "read_digital_link",
    "read_element",
    "read_element_string",
    "urn",
    "valid",
    "with_check_digit",
]
