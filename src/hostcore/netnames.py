"""Names of the kernel's network objects, validated as the kernel does, for every plugin.

An interface name that passes :data:`InterfaceName` is one the kernel itself
would accept (``dev_valid_name``: 1 to 15 bytes, not ``.`` or ``..``, no ``/``,
``:`` or white space) and printable. The network and Wi-Fi plugins take it in
paths and only compare it with the names the kernel lists.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

IFNAMSIZ = 16  # the kernel's buffer, its NUL included
MAX_IFNAME_BYTES = IFNAMSIZ - 1


def check_ifname(name: str) -> str:
    # Like every validator here, the message never repeats the input: it goes back in the 422.
    if not 1 <= len(name.encode()) <= MAX_IFNAME_BYTES:
        raise ValueError(f"an interface name has 1 to {MAX_IFNAME_BYTES} bytes")
    if name in {".", ".."} or any(c in "/:" or c.isspace() or not c.isprintable() for c in name):
        raise ValueError(
            "not an interface name: printable characters other than '/', ':' and white "
            "space, and not '.' or '..'"
        )
    return name


InterfaceName = Annotated[
    str, Field(min_length=1, max_length=MAX_IFNAME_BYTES), AfterValidator(check_ifname)
]
