"""The browser page in real headless Chromium (Debian's package, no download).

Two users chat from two browser contexts; one goes offline, misses messages
and comes back: the page catches up from the mailbox and shows every message
once, in seq order, with the server's unread counts. Skips with the reason
when Chromium or Playwright is missing (``apt-get install -y chromium``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fleets_mailbox import MailboxService, Stores, direct_conversation
from fleets_mailbox.adapters.local_bus import LocalBus
from fleets_mailbox.adapters.memory import MemoryPresence
from fleets_mailbox.server import BackgroundServer, create_app

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("FLEETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AB = direct_conversation("alice", "bob")
TIMEOUT_MS = 10_000

if not Path(CHROMIUM).exists():
    pytest.skip(
        f"Chromium is not installed at {CHROMIUM}: run `apt-get install -y chromium` "
        "(scripts/test.sh does so as root) or set FLEETS_CHROMIUM",
        allow_module_level=True,
    )
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="the playwright package is not installed"
)
expect = playwright_api.expect
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture
async def service() -> MailboxService:
    return MailboxService(Stores.memory(), LocalBus(), MemoryPresence())


@pytest.fixture
async def server(service: MailboxService) -> AsyncIterator[BackgroundServer]:
    async with BackgroundServer(create_app(service, secret="browser")) as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


def screenshot_path(tmp_path: Path, name: str) -> Path:
    """Where a screenshot goes: the test's directory, copied to
    $FLEETS_SCREENSHOT_DIR when that is set."""
    return tmp_path / f"{name}.png"


def keep(path: Path) -> None:
    target = os.environ.get("FLEETS_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


async def open_page(context: Any, url: str, errors: list[str]) -> Any:
    page = await context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url)
    return page


async def log_in(context: Any, url: str, user: str, errors: list[str]) -> Any:
    page = await open_page(context, url, errors)
    await page.fill("#login-user", user)
    await page.click("#login-button")
    await expect(page.locator("#me")).to_have_text(user)
    await expect(page.locator("#connection-status")).to_have_attribute(
        "data-state", "online"
    )
    return page


def conversation_item(page: Any, conversation_id: str) -> Any:
    return page.locator(
        f'[data-testid="conversation-item"][data-conversation-id="{conversation_id}"]'
    )


async def expect_unread(page: Any, conversation_id: str, unread: int) -> None:
    item = conversation_item(page, conversation_id)
    await expect(item).to_have_attribute("data-unread", str(unread))
    badge = item.locator('[data-testid="unread-badge"]')
    if unread:
        await expect(badge).to_have_text(str(unread))
    else:
        await expect(badge).to_be_hidden()


async def send(page: Any, text: str) -> None:
    await page.fill("#message-input", text)
    await page.press("#message-input", "Enter")
    await expect(
        page.locator(f'[data-testid="message"] >> text="{text}"').last
    ).to_be_visible()


async def shown_messages(page: Any) -> list[tuple[int, str]]:
    rows: list[tuple[int, str]] = await page.eval_on_selector_all(
        '#message-list [data-testid="message"]',
        """items => items.map(li => [Number(li.dataset.seq),
            li.querySelector('[data-testid="message-body"]').textContent])""",
    )
    return [(seq, body) for seq, body in rows]


async def expect_messages(page: Any, bodies: list[str]) -> None:
    await expect(
        page.locator('#message-list [data-testid="message-body"]')
    ).to_have_text(bodies)
    assert await shown_messages(page) == [
        (seq, body) for seq, body in enumerate(bodies, start=1)
    ]


async def test_offline_user_catches_up_in_order_with_unread_counts(
    server: BackgroundServer, service: MailboxService, browser: Any, tmp_path: Path
) -> None:
    errors: list[str] = []
    alice_context = await browser.new_context(viewport={"width": 1200, "height": 760})
    bob_context = await browser.new_context(viewport={"width": 1200, "height": 760})
    alice = await log_in(alice_context, server.url, "alice", errors)
    bob = await log_in(bob_context, server.url, "bob", errors)

    # alice opens a direct chat by user id; bob sees it arrive, unread.
    await alice.fill("#direct-user", "bob")
    await alice.click("#direct-open")
    await expect(alice.locator("#chat-title")).to_have_text("bob")
    await send(alice, "one")
    await expect_unread(bob, AB, 1)

    # bob reads it: the server's unread count drops to 0 on both sides.
    await conversation_item(bob, AB).click()
    await expect_messages(bob, ["one"])
    await expect_unread(bob, AB, 0)
    await expect_unread(alice, AB, 0)

    # bob looks at another chat, then loses the network.
    await bob.fill("#direct-user", "carol")
    await bob.click("#direct-open")
    await expect(bob.locator("#chat-title")).to_have_text("carol")
    await bob_context.set_offline(True)
    await expect(bob.locator("#connection-status")).not_to_have_attribute(
        "data-state", "online"
    )
    pushes_before = await bob.evaluate("window.fleetsChat.state.stats.pushes")

    for text in ("two", "three", "four"):
        await send(alice, text)
    await expect_messages(alice, ["one", "two", "three", "four"])
    await bob.wait_for_timeout(300)
    assert await bob.evaluate("window.fleetsChat.state.stats.pushes") == pushes_before
    await expect_unread(bob, AB, 0)  # nothing reached bob while offline

    # Back online: reconnect, catch up from the mailbox, the server's unread.
    await bob_context.set_offline(False)
    await expect(bob.locator("#connection-status")).to_have_attribute(
        "data-state", "online"
    )
    await expect_unread(bob, AB, 3)
    await conversation_item(bob, AB).click()
    await expect_messages(bob, ["one", "two", "three", "four"])
    await expect_unread(bob, AB, 0)
    summary = await service.stores.conversations.get("bob", AB)
    assert summary is not None
    assert (summary.read_seq, summary.unread) == (4, 0)

    # bob closes the page; a message comes; a new page shows it, unread.
    await bob.close()
    await send(alice, "five")
    bob = await open_page(bob_context, server.url, errors)
    await expect(bob.locator("#connection-status")).to_have_attribute(
        "data-state", "online"
    )
    await expect_unread(bob, AB, 1)
    await conversation_item(bob, AB).click()
    await expect_messages(bob, ["one", "two", "three", "four", "five"])
    await expect_unread(bob, AB, 0)
    await expect_messages(alice, ["one", "two", "three", "four", "five"])

    for name, page in (("browser-alice", alice), ("browser-bob", bob)):
        path = screenshot_path(tmp_path, name)
        await page.screenshot(path=str(path))
        keep(path)
    assert errors == []


async def test_groups_invites_and_members(
    server: BackgroundServer, service: MailboxService, browser: Any, tmp_path: Path
) -> None:
    errors: list[str] = []
    alice = await log_in(await browser.new_context(), server.url, "alice", errors)
    bob = await log_in(await browser.new_context(), server.url, "bob", errors)

    await alice.click("#group-create summary")
    await alice.fill("#group-id", "crew")
    await alice.fill("#group-name", "Launch crew")
    await alice.fill("#group-members", "bob")
    await alice.click("#group-create-button")
    await expect(alice.locator("#chat-title")).to_have_text("Launch crew")

    # bob is invited: a notification, and the group in his list.
    invite = bob.locator('[data-testid="notification-item"][data-kind="group_invite"]')
    await expect(invite).to_contain_text("alice added you to Launch crew")
    await expect(bob.locator("#notification-count")).to_have_text("1")
    await invite.click()
    await expect(bob.locator("#notification-count")).to_be_hidden()
    await expect(bob.locator("#chat-title")).to_have_text("Launch crew")

    await send(bob, "ready when you are")
    await expect_messages(alice, ["ready when you are"])
    await send(alice, "lift off")
    await expect_messages(bob, ["ready when you are", "lift off"])

    # The owner adds carol; bob leaves.
    await alice.click("#members-toggle")
    await alice.fill("#member-add", "carol")
    await alice.click("#member-add-button")
    members = alice.locator('#member-list [data-testid="member"]')
    await expect(members).to_have_count(3)
    await bob.click("#members-toggle")
    await expect(bob.locator("#member-form")).to_be_hidden()
    await bob.click("#leave-group")
    await expect(bob.locator("#composer")).to_be_hidden()
    group = await service.directory.get_group("crew")
    assert group.members == {"alice", "carol"}

    path = screenshot_path(tmp_path, "browser-group")
    await alice.screenshot(path=str(path))
    keep(path)
    assert errors == []
