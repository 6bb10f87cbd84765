"""The card readers' settings checked against what each reader reads (``drivers``).

Not in ``config``: the sync service and the central server read their settings through
``config`` too and never load the card-reader stack (DESIGN: the server never imports
drivers). The commands that use readers (``terminal``, ``devices``, ``init``) check them
before they start, so a misspelt or wrong setting is refused by name at start-up, not when
the till starts reading cards.
"""

from __future__ import annotations

from drivers.stream import reader_from_config
from pos_loyalty.config import ConfigError, Settings


def check_readers(settings: Settings) -> None:
    """Build every configured reader as the terminal will (not opened); ConfigError naming
    the file, the reader and the setting for the first one that cannot be built. Device
    libraries load only for the kinds configured."""
    for index, reader in enumerate(settings.readers):
        try:
            reader_from_config(reader.name, reader.kind, reader.url, dict(reader.options))
        except ValueError as exc:
            option = getattr(exc, "key", None)
            key = f"readers[{index}].options.{option}" if option else f"readers[{index}]"
            problem = str(exc).removeprefix(f"reader {reader.name}: ")
            raise ConfigError(settings.source, key, f"reader {reader.name!r}: {problem}") from None
