"""The cashier terminal (Textual). Headless modules never import this package."""

from __future__ import annotations

from pos_loyalty.ui.app import TerminalApp, create_terminal_app

__all__ = ["TerminalApp", "create_terminal_app"]
