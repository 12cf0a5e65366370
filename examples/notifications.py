"""Print a user's events as they happen, from /ws on the DIFF listener (docs/notifications.md).

    python examples/notifications.py USER PASSWORD [ws://127.0.0.1:8001/ws]
"""

import json
import sys

import trio
from trio_websocket import open_websocket_url


async def main(user: str, password: str, url: str = "ws://127.0.0.1:8001/ws") -> None:
    async with open_websocket_url(url) as ws:
        await ws.send_message(json.dumps({"aid": "req_login", "user_name": user, "password": password}))
        while True:
            event = json.loads(await ws.get_message())
            print(event["type"], json.dumps(event, ensure_ascii=False))


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:4])
