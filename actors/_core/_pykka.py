"""Every private name of pykka that troupe uses, imported here and nowhere else.

pykka documents these as internal (``Envelope``: "an internal type and is not
part of the public API"); troupe needs them to be a pykka actor runtime, not
just to look like one. Keeping them in one module makes the dependency one
list to check when pykka changes (setup.cfg pins the tested major, ``<5``):

- `Envelope`: a mailbox item that carries a reply future (pykka's asks).
- `ActorStop`: the message ``ActorRef.stop()`` sends (``pykka.messages._ActorStop``).
- `handle_receive`: pykka's own dispatch of proxy calls (``Actor._handle_receive``),
  reused so proxies behave exactly as pykka's.
- `Unset`: the "no value yet" marker of a future's get-hook result
  (``pykka._future._Unset``).
- `OptExcInfo`: the exc_info tuple type pykka's futures take (typing only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pykka
from pykka._envelope import Envelope
from pykka._future import _Unset as Unset
from pykka.messages import _ActorStop as ActorStop

if TYPE_CHECKING:
    from pykka._types import OptExcInfo

__all__ = ["ActorStop", "Envelope", "OptExcInfo", "Unset", "handle_receive"]

handle_receive = pykka.Actor._handle_receive  # noqa: SLF001 - reuse pykka's proxy dispatch
