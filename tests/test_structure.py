"""Rules of the code's shape: no detached tasks, no per-fill tasks, sans-IO core and protocol free of trio."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest
import trio
import trio.testing

from qaex.core.engine import Engine
from qaex.core.orders import InsertOrder
from qaex.exchange.exchange import Exchange

PACKAGE = Path(__file__).resolve().parent.parent / "qaex"

# Ways to start work that no nursery owns.
DETACHED = {
    "spawn_system_task",  # trio.lowlevel: a task outside every nursery
    "create_task",  # asyncio
    "ensure_future",
    "run_coroutine_threadsafe",
    "Thread",  # threading.Thread: the only threads are trio.to_thread's, which are awaited
    "start_new_thread",
}


def python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def test_no_code_starts_a_task_outside_a_nursery() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{call.lineno} {call_name(call)}"
        for path in python_files()
        for call in calls(ast.parse(path.read_text()))
        if call_name(call) in DETACHED
    ]
    assert offenders == []


def test_start_soon_is_only_called_on_a_nursery_the_caller_owns() -> None:
    """`x.start_soon` must be on a nursery opened in the same function or one the object keeps itself."""
    offenders = []
    for path in python_files():
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            opened = {
                item.optional_vars.id
                for node in ast.walk(function)
                if isinstance(node, ast.AsyncWith)
                for item in node.items
                if isinstance(item.optional_vars, ast.Name)
                and isinstance(item.context_expr, ast.Call)
                and call_name(item.context_expr) == "open_nursery"
            }
            for call in calls(function):
                if call_name(call) not in ("start_soon", "start") or not isinstance(call.func, ast.Attribute):
                    continue
                owner = call.func.value
                owned = (isinstance(owner, ast.Name) and owner.id in opened) or (
                    # a nursery an object keeps (`self._nursery` from its own run(), quart-trio's
                    # `app.nursery` for the lifespan)
                    isinstance(owner, ast.Attribute) and owner.attr.endswith("nursery")
                )
                # `nursery.start(...)` on a parameter named like a nursery is how services are started
                # by their owner (the app's nursery); task_status is then the owner's.
                parameter = isinstance(owner, ast.Name) and owner.id.endswith("nursery")
                if not (owned or parameter):
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{call.lineno}")
    assert offenders == []


IO_MODULES = {"trio", "asyncio", "socket", "trio_websocket", "quart", "quart_trio", "hypercorn"}
SANS_IO_PACKAGES = {
    # package: the qaex packages above it (the layers point down only: docs/architecture.md)
    "core": {"qaex.protocol", "qaex.exchange", "qaex.api", "qaex.app", "qaex.client"},
    "protocol": {"qaex.exchange", "qaex.api", "qaex.app", "qaex.client"},
}


def imported_modules(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("package", sorted(SANS_IO_PACKAGES))
def test_the_sans_io_packages_do_not_import_trio_or_do_io(package: str) -> None:
    """qaex/core/ and qaex/protocol/ import no event loop or network library, nor a layer above them."""
    above = SANS_IO_PACKAGES[package]
    offenders = [
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for name in imported_modules(path)
        if name.split(".")[0] in IO_MODULES
        or any(name == layer or name.startswith(layer + ".") for layer in above)
    ]
    assert offenders == []


def count_tasks() -> int:
    root = trio.lowlevel.current_root_task()
    assert root is not None
    stack, count = [root], 0
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def test_fills_and_users_create_no_tasks() -> None:
    async with trio.open_nursery() as nursery:
        exchange = Exchange(Engine())
        await nursery.start(exchange.run)
        for user in ("a", "b"):
            await exchange.open_account(user, "pw-123456", 1e9)
        ids = itertools.count()

        async def trade() -> None:
            for user, direction in (("a", "SELL"), ("b", "BUY")):
                await exchange.insert_order(
                    InsertOrder(
                        user_id=user, order_id=f"o{next(ids)}", exchange_id="SHFE", instrument_id="rb2601",
                        direction=direction, offset="OPEN", volume=1, limit_price=3100.0,
                    )
                )  # fmt: skip

        await trade()  # the services' tasks all exist from the first fill on
        await trio.testing.wait_all_tasks_blocked()
        before = count_tasks()
        for _ in range(500):
            await trade()
        await trio.testing.wait_all_tasks_blocked()
        assert exchange.engine.trades_made == 501
        assert count_tasks() == before
        # Nor do users: one SnapshotManager consumer drains every user's channel (no task per user).
        for user in ("c", "d"):
            await exchange.open_account(user, "pw-123456", 1e9)
            await exchange.insert_order(
                InsertOrder(
                    user_id=user, order_id=f"o{next(ids)}", exchange_id="SHFE", instrument_id="rb2601",
                    direction="BUY", offset="OPEN", volume=1, limit_price=3000.0,
                )
            )  # fmt: skip
        await trio.testing.wait_all_tasks_blocked()
        assert count_tasks() == before
        nursery.cancel_scope.cancel()
