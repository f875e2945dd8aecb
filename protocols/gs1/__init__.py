"""GS1 keys and their forms: the one home for parsing and writing them (see keys.py)."""

from protocols.gs1.keys import (
    GS,
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
    "Key",
    "Kind",
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
    "urn",
    "valid",
    "with_check_digit",
]
