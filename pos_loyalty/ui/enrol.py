"""Enrol a customer in seconds, then show the new card as a QR to photograph or print."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label

from pos_loyalty.domain.errors import DomainError
from pos_loyalty.service import Profile
from pos_loyalty.ui.base import Plain, TillInput, TillScreen
from pos_loyalty.ui.text import EntryError

FIELDS = ("name", "phone", "email", "referral", "card")

# The same rules as the plugin API's enrolment body.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9 ()-]{3,31}$")


def profile_from(name: str, phone: str, email: str, marketing: bool, referral: str) -> Profile:
    name, phone, email, referral = (v.strip() for v in (name, phone, email, referral))
    if email and (len(email) > 254 or not _EMAIL.match(email)):
        raise EntryError("That email address does not look right, e.g. ada@example.com")
    if phone and not _PHONE.match(phone):
        raise EntryError("That phone number does not look right, e.g. +49 30 1234567")
    if len(name) > 200:
        raise EntryError("The name is too long (200 characters at most)")
    return Profile(
        name=name or None,
        email=email or None,
        phone=phone or None,
        consents={"marketing": marketing},
        referral_code=referral or None,
    )


class EnrolScreen(TillScreen):
    TITLE_TEXT = "new customer"
    AUTO_FOCUS = "#name"
    BINDINGS = [
        Binding("f1", "app.help", "Help"),
        Binding("f9", "save", "Enrol"),
        Binding("escape", "cancel", "Cancel"),
        # Priority: run when the app takes the key off the keyboard, before the keys typed
        # after it are handed to the focused field -- so a paste or a wedge's "Ada<CR>+49..."
        # puts the phone in the phone field, not in the name.
        Binding("enter", "next_field", "Next field", show=False, priority=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.saving = False

    def body(self) -> Iterable[Widget]:
        yield Plain("All optional. Tab moves on; F9 enrols.", id="enrol-hint")
        for label, key, hint in (
            ("Name     ", "name", "first name is enough"),
            ("Phone    ", "phone", "+49 30 1234567"),
            ("Email    ", "email", "ada@example.com"),
            ("Referral ", "referral", "a friend's referral code"),
            ("Card     ", "card", "scan a pre-printed card, or leave empty for a new code"),
        ):
            with Horizontal(classes="field"):
                yield Label(label)
                yield TillInput(placeholder=hint, id=key)
        yield Checkbox("Agrees to marketing messages (space to tick)", id="marketing")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    def _value(self, key: str) -> str:
        return self.query_one(f"#{key}", Input).value

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()  # Enter is the priority binding's; nothing else submits

    def action_next_field(self) -> None:
        field = self.focused
        if isinstance(field, Checkbox):
            field.toggle()
            return
        self.focus_next()
        if isinstance(field, Input):
            # After the keys typed before this Enter, still queued for that field.
            field.call_later(self.drop_card_data, field)

    def _inputs(self) -> list[Input]:
        return [self.query_one(f"#{key}", Input) for key in FIELDS]

    def action_save(self) -> None:
        if self.saving:
            return
        if self.drop_card_data(*self._inputs()):
            return
        try:
            profile = profile_from(
                self._value("name"),
                self._value("phone"),
                self._value("email"),
                self.query_one("#marketing", Checkbox).value,
                self._value("referral"),
            )
        except EntryError as exc:
            self.say(str(exc), error=True)
            return
        card = self._value("card").strip() or None
        self.saving = True
        self.say("Enrolling...")
        self.run_worker(self._enrol(profile, card), group="enrol", exit_on_error=False)

    async def _enrol(self, profile: Profile, card: str | None) -> None:
        try:
            result = await self.till.call(self.till.service.enrol, profile, None, card)
        except Exception as exc:
            self.saving = False
            if isinstance(exc, DomainError) and exc.code == "payment_card_rejected":
                # The till refused payment-card data in a field the check here let through:
                # which field is not said, so none of what was typed is kept on the screen.
                for field in self._inputs():
                    field.value = ""
                self.query_one("#name", Input).focus()
                self.till.refuse_payment_card()
                return
            self.query_one("#card", Input).value = ""
            self.till.tell_error(exc)
            return
        self.replace_with(EnrolledScreen(result, profile))

    def action_cancel(self) -> None:
        if self.saving:  # the customer is being enrolled: leaving would hide the new card
            self.say("Enrolling... please wait.")
            return
        self.app.pop_screen()


class EnrolledScreen(TillScreen):
    TITLE_TEXT = "welcome"
    BINDINGS = [
        Binding("f1", "app.help", "Help"),
        Binding("enter", "open", "Open customer"),
        Binding("escape", "done", "Done"),
    ]

    def __init__(self, result: Mapping[str, Any], profile: Profile) -> None:
        super().__init__()
        self.result = result
        self.profile = profile

    @property
    def code(self) -> str:
        return str(self.result["card"]["code"])

    def body(self) -> Iterable[Widget]:
        from pos_loyalty.qr import qr_terminal

        who = self.profile.name or "The new customer"
        gifts = ", ".join(f"{v} {k}" for k, v in self.result.get("welcome", {}).items())
        text = Text()
        text.append(f"{who} is enrolled. Card ")
        text.append(self.code, style="bold")
        if gifts:
            text.append(f"  Welcome gift: {gifts}")
        yield Plain(text, id="enrolled")
        yield Plain(Text(qr_terminal(self.code).rstrip("\n"), no_wrap=True), id="qr")
        yield Plain("Photograph the QR code with the phone, or print it.", id="qr-hint")

    def on_mount(self) -> None:
        self.say("Enter opens the customer for a sale; Esc is done.")

    async def action_open(self) -> None:
        await self.till.go_home()
        self.till.scan(self.code, source="enrol")

    async def action_done(self) -> None:
        await self.till.go_home()
